"""The public facade: load members, check them, generate, stream, chat (docs/design.md §9)."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

import numpy as np

from .constrain import Constraint, grammar_of, tokenizer_for
from .decode.plan import Plan, make_plan, parse_gamma, parse_lookup
from .errors import ContextOverflowError, InvalidParameterError
from .generation import Generation
from .gguf_header import validate_gguf
from .member import DecodeMember, Member, MemberOptions, default_threads
from .params import GENERATION_OPTIONS, EnsembleSpec, GenerationOptions, SamplingParams
from .result import GenerationResult
from .threads import even_split, placement_sizes
from .turns import Turns
from .vocab import common_vocab_size
from .workers import MemberWorkers

log = logging.getLogger("edge_specens")

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Unpack

    from .auto import Scheduler
    from .chat import ChatTemplate
    from .openai_format import ChatCompletion, ChatCompletionChunk


class LoadOptions(TypedDict, total=False):
    """from_preset's keywords: from_paths' options (they override the preset's), and progress."""

    weights: Sequence[float] | None
    method: str
    mu: float
    alpha: float
    gamma: int | Sequence[int] | str | None
    n_ctx: int
    n_threads: int | Sequence[int] | None
    n_threads_batch: int | Sequence[int] | None
    n_gpu_layers: int | Sequence[int]
    main_gpu: int
    tensor_split: Sequence[float] | None
    flash_attn: bool | None
    n_batch: int | None
    kv_f32: bool
    mmap: bool
    rpc: str | Sequence[str | None] | None
    verbose: bool
    progress: bool | Callable[[str, int, int], None]  # tqdm on a terminal, or a GUI's callable


class Ensemble:
    """Several GGUF models that decode as one distribution r (weighted or contrastive)."""

    def __init__(
        self,
        members: Sequence[DecodeMember],
        spec: EnsembleSpec,
        n_vocab: int,
        default_gamma: Sequence[int] | None = None,
        name: str | None = None,
        max_token_chars: int | None = None,
    ):
        self.members = list(members)
        self.spec = spec
        self.n_vocab = n_vocab
        self.default_gamma = tuple(default_gamma) if default_gamma else None
        self.name = name or "+".join(m.name for m in self.members)
        self.max_token_chars = max_token_chars  # the longest vocabulary entry (check_text_length)
        self._piece_cache: dict[int, bytes] = {}
        self._scheduler: Scheduler | None = None
        self._chat_template: ChatTemplate | None = None
        self._llg_tokenizer = None  # structured output (constrain.py), built on first use
        self._turns = Turns(self.name)  # one generation at a time (turns.py)
        self.workers = MemberWorkers([m.name for m in self.members])  # side by side (workers.py)
        self.last_result: GenerationResult | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str | os.PathLike],
        *,
        weights: Sequence[float] | None = None,
        method: str = "we",
        mu: float = 0.1,
        alpha: float = 0.0,
        gamma=None,
        n_ctx: int = 4096,
        n_threads: int | Sequence[int] | None = None,
        n_threads_batch: int | Sequence[int] | None = None,
        n_gpu_layers: int | Sequence[int] = 0,
        main_gpu: int = 0,
        tensor_split: Sequence[float] | None = None,
        flash_attn: bool | None = None,
        n_batch: int | None = None,
        kv_f32: bool = False,
        mmap: bool = False,
        rpc: str | Sequence[str | None] | None = None,
        verbose: bool = False,
        name: str | None = None,
    ) -> Ensemble:
        """Load GGUF files as one ensemble.

        Args:
            paths: model files (or Hugging Face references, "owner/repo:file.gguf" or
                "hf://owner/repo/file.gguf", fetched into the Hugging Face cache); for method "cd" the
                first is the expert, the second the amateur.
            weights: WE weights (>= 0, normalised to sum 1); default uniform.
            method: "we" (weighted ensemble) or "cd" (contrastive decoding).
            mu, alpha: CD strength and plausibility mask (alpha 0 disables it).
            gamma: default proposal length(s) (int for the default proposer, or one per member).
            n_ctx, n_threads, n_threads_batch, n_gpu_layers, main_gpu, tensor_split, flash_attn,
            n_batch, kv_f32, mmap: llama.cpp options for every member (mmap=False reads the weights
            into memory: lower peak RSS once llama.cpp has repacked them). n_threads, n_threads_batch
            and n_gpu_layers may also be one value per member (placement: n_threads=[1, 1] gives each
            member one thread, also when they run side by side; n_gpu_layers=[0, -1] puts the second
            member on the GPU). Without per-member threads, `auto` picks a split when it runs members
            side by side.
            rpc: where each member runs: None here, or "host:port" of an `edge-specens rpc-server`
                on another machine (one value per member, e.g. [None, "192.168.1.20:50052"]; each
                server serves one member). A path "model.gguf@host:port" says the same.
        Raises:
            ModelLoadError: a file is missing, unreadable, not GGUF or truncated.
            VocabularyMismatchError: the members do not share one vocabulary.
            InvalidParameterError: bad weights, mu, gamma or options (or a malformed endpoint).
            EndpointError: an RPC server cannot be reached or speaks another protocol version.
            RpcUnavailableError: a member is remote, and llama-cpp-python was built without RPC.
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths, endpoints = remote_placement(paths, rpc)
        if any(not Path(p).exists() for p in paths):  # "owner/repo:file.gguf" names a file on Hugging Face
            from .fetch import resolve_model

            paths = [resolve_model(p) for p in paths]
        paths = [Path(p) for p in paths]
        if not paths:
            raise InvalidParameterError("give at least one model path")
        spec = EnsembleSpec.build(len(paths), method, weights, mu, alpha)
        g = parse_gamma(gamma, len(paths))
        placement = per_member_options(
            len(paths), n_threads=n_threads, n_threads_batch=n_threads_batch, n_gpu_layers=n_gpu_layers, rpc=endpoints
        )
        options = [
            MemberOptions(
                n_ctx=n_ctx,
                n_batch=n_batch,
                main_gpu=main_gpu,
                tensor_split=tuple(tensor_split) if tensor_split else None,
                flash_attn=flash_attn,
                kv_f32=kv_f32,
                mmap=mmap,
                **place,
            )
            for place in placement
        ]
        for o in options:
            o.validate()
        # cheap checks on every file first, so a bad second file fails before the first loads
        infos = [validate_gguf(p, read_tokens=True) for p in paths]
        n_vocab = common_vocab_size(infos)
        longest = max((len(t) for i in infos for t in (i.tokens or ()) if isinstance(t, (str, bytes))), default=0)
        trained = min((i.context_length for i in infos if i.context_length), default=None)
        if trained and n_ctx > trained:
            log.warning(
                "warning: n_ctx %d is more than the %d tokens the model%s trained on; past them, output degrades",
                n_ctx,
                trained,
                "s were" if len(infos) > 1 else " was",
            )
        del infos
        check_endpoints(endpoints)  # before any weights load: a typed error, never llama.cpp's abort
        members: list[DecodeMember] = []
        try:
            for p, o in zip(paths, options):
                members.append(load_member(p, o, verbose=verbose))
        except BaseException:
            for m in members:
                m.close()
            raise
        ens = cls(members, spec, n_vocab, name=name, max_token_chars=longest or None)
        if g is not None:
            from .decode.plan import resolve_gammas

            ens.default_gamma = resolve_gammas(ens, g)
        return ens

    @classmethod
    def from_preset(cls, name: str, **options: Unpack[LoadOptions]) -> Ensemble:
        """Load a preset (fetching its files if needed). Options as in from_paths, plus progress: True
        (tqdm bars on a terminal), False, or a callable(what, done, total) that gets byte counts."""
        from .fetch import pull_preset
        from .presets import load_preset

        preset = load_preset(name)
        paths = pull_preset(preset, progress=options.pop("progress", True))
        kw: dict[str, Any] = dict(
            method=preset.method,
            weights=list(preset.weights) if preset.weights else None,
            gamma=list(preset.gamma) if preset.gamma else None,
            name=preset.name,
        )
        if preset.mu is not None:
            kw["mu"] = preset.mu
        if preset.alpha is not None:
            kw["alpha"] = preset.alpha
        if any(m.rpc for m in preset.members):  # where the preset places its members (--rpc overrides)
            kw["rpc"] = [m.rpc for m in preset.members]
        kw.update(options)
        return cls.from_paths(paths, **kw)

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        self._turns.check_open()
        return self.members[0].tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def piece(self, token: int) -> bytes:
        self._turns.check_open()
        p = self._piece_cache.get(token)
        if p is None:
            p = self._piece_cache[token] = self.members[0].piece(token)
        return p

    def is_eog(self, token: int) -> bool:
        self._turns.check_open()
        return self.members[0].is_eog(token)

    @property
    def n_ctx(self) -> int:
        return min(m.n_ctx for m in self.members)

    # ------------------------------------------------------------------ planning
    def default_proposer(self) -> int:
        """The smallest model proposes by default: it is the cheapest to run."""
        return min(range(len(self.members)), key=lambda k: (self.members[k].n_params, k))

    def side_by_side_threads(self, members: Sequence[int] | None = None) -> tuple[int, ...]:
        """llama.cpp threads per member (of `members`, default all) when they run side by side: the
        per-member threads the user gave, else the cores split evenly (the larger members get
        what is left over). `auto` may pick another split from measured costs."""
        idx = list(range(len(self.members))) if members is None else list(members)
        given = [getattr(self.members[k], "options", None) for k in idx]
        if all(o is not None and o.n_threads for o in given):
            return tuple(o.n_threads for o in given)  # type: ignore[union-attr]
        return even_split(default_threads(), placement_sizes([self.members[k] for k in idx]))

    def single_member(self) -> int:
        """The member `single` runs: the heaviest weight (CD: the expert), ties to the larger model."""
        w = self.spec.weights
        return max(range(len(self.members)), key=lambda k: (w[k], self.members[k].n_params, -k))

    def plan(
        self,
        strategy: str = "auto",
        gamma=None,
        sampling: SamplingParams | None = None,
        lookup: int | None = None,
        parallel: bool | None = None,
    ) -> Plan:
        """Which strategy runs with which members and proposal lengths, one after the other or side
        by side (`auto` decides from what it measured, unless parallel is True or False). Raises
        InvalidParameterError before any work for a bad strategy, gamma, lookup or parallel."""
        self._turns.check_open()
        parse_gamma(gamma, len(self.members))
        parse_lookup(lookup)
        if parallel is not None and not isinstance(parallel, bool):
            raise InvalidParameterError(f"parallel must be true, false or null, got {parallel!r}")
        if strategy == "auto":
            from .auto import auto_plan

            return auto_plan(self, gamma, sampling or SamplingParams(), lookup, parallel)
        return make_plan(self, strategy, gamma, lookup, parallel)

    # ------------------------------------------------------------------ generation
    def _prepare(self, prompt, options: dict, wait: bool | float = True) -> Generation:
        try:
            opts = GenerationOptions(**options)
        except TypeError:
            unknown = sorted(set(options) - set(GENERATION_OPTIONS))
            raise InvalidParameterError(
                f"unknown option(s): {', '.join(unknown)}; the options are {', '.join(GENERATION_OPTIONS)}"
            ) from None
        sampling = opts.sampling()
        if sampling.max_tokens > self.n_ctx:  # refused before taking the ensemble from anyone
            raise InvalidParameterError(
                f"max_tokens must be at most the context size ({self.n_ctx} tokens), got {sampling.max_tokens}"
            )
        grammar = grammar_of(opts.json_schema, opts.grammar, opts.regex)  # refused before taking the turn
        turn = self._turns.begin(wait)  # from here on this generation holds the ensemble
        try:
            with turn.step():  # auto may calibrate (decode) while planning
                tokens = self.prompt_tokens(prompt)
                plan = self.plan(opts.strategy, opts.gamma, sampling, opts.lookup, opts.parallel)
                constraint = Constraint(self._grammar_tokenizer(), grammar, self.n_vocab) if grammar else None
        except BaseException:
            turn.end()
            raise
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        gen = Generation(self, tokens, sampling, plan, seed, on_finish=self._finished, turn=turn)
        gen.constraint = constraint
        return gen

    def _grammar_tokenizer(self):
        """llguidance's view of the members' vocabulary (built on the first constrained request, ~2 s)."""
        if self._llg_tokenizer is None:
            self._llg_tokenizer = tokenizer_for(self.members[0])
        return self._llg_tokenizer

    def prompt_tokens(self, prompt: str | Sequence[int]) -> list[int]:
        """The token ids a generation would start from: text tokenized (special tokens parsed),
        ids checked against the vocabulary, and the length against the context.

        Raises InvalidParameterError (empty, bad ids) or ContextOverflowError (too long)."""
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidParameterError("the prompt is empty")
            self.check_text_length(len(prompt))
            tokens = self.tokenize(prompt)
        elif isinstance(prompt, (list, tuple)) or (isinstance(prompt, np.ndarray) and prompt.ndim == 1):
            self._check_token_count(len(prompt))  # before touching millions of ids
            tokens = [int(t) for t in prompt]
            if not tokens:
                raise InvalidParameterError("the prompt is empty")
            bad = [t for t in tokens if not 0 <= t < self.n_vocab]
            if bad:
                raise InvalidParameterError(f"token id {bad[0]} is outside the vocabulary (0..{self.n_vocab - 1})")
        else:
            raise InvalidParameterError(f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
        if not tokens:
            raise InvalidParameterError("the prompt is empty after tokenization")
        self._check_token_count(len(tokens))
        return tokens

    def _check_token_count(self, n_tokens: int) -> None:
        if n_tokens >= self.n_ctx:
            raise ContextOverflowError(
                f"the prompt has {n_tokens} tokens but the context holds {self.n_ctx}; shorten it or raise n_ctx (-c)"
            )

    def check_text_length(self, n_chars: int) -> None:
        """Refuse text that cannot fit the context without tokenizing it (tokenizing megabytes
        takes seconds): no token is longer than the longest vocabulary entry, so text longer than
        n_ctx times that is over the context whatever it says."""
        if self.max_token_chars and n_chars > self.n_ctx * self.max_token_chars:
            raise ContextOverflowError(
                f"the prompt has {n_chars} characters, more than a context of {self.n_ctx} tokens can hold; "
                f"shorten it or raise n_ctx (-c)"
            )

    # The keywords of generate and stream are GENERATION_OPTIONS, spelled out for readers and IDEs in
    # the documented order (tests/test_options.py checks they match the one definition in params.py).
    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        seed: int | None = None,
        strategy: str = "auto",
        gamma=None,
        stop=None,
        lookup: int | None = None,
        parallel: bool | None = None,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        logit_bias=None,
        json_schema=None,
        grammar: str | None = None,
        regex: str | None = None,
        *,
        wait: bool | float = True,
    ) -> GenerationResult:
        """Generate a continuation of `prompt` (text or token ids).

        Args: see params.GenerationOptions (temperature 0 = greedy; defaults as llama.cpp's: T 0.8,
            top-k 40, top-p 0.95, min-p 0.05; repeat_penalty, frequency_penalty, presence_penalty and
            logit_bias ({token id: bias}) act on r, so every strategy stays exact; json_schema, grammar
            (GBNF or Lark) or regex constrain the output (llguidance, on r); strategy auto | se | sd |
            standard | single; gamma: proposal length(s); lookup: free prompt-lookup drafts per
            round for `se`, 0 = off, `auto` decides when None).
            wait: one generation runs at a time per ensemble (thread-safe). While another thread's
            generation runs, True waits for it, False raises EnsembleBusyError, a number waits at
            most that many seconds.
        Returns: a GenerationResult with .text, .tokens, .finish_reason ("stop" | "length"), .stats.
        Raises: InvalidParameterError / ContextOverflowError on bad input (nothing is generated);
            EnsembleBusyError (wait); EnsembleClosedError after close().
        """
        gen = self._prepare(prompt, _options(locals()), wait)
        for _ in gen:
            pass
        assert gen.result is not None
        return gen.result

    def stream(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        seed: int | None = None,
        strategy: str = "auto",
        gamma=None,
        stop=None,
        lookup: int | None = None,
        parallel: bool | None = None,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        logit_bias=None,
        json_schema=None,
        grammar: str | None = None,
        regex: str | None = None,
        *,
        wait: bool | float = True,
    ) -> Iterator[str]:
        """Like generate, but yields text pieces as tokens are accepted; `last_result` holds the
        result once the iterator ends (or is closed: closing it stops the generation)."""
        gen = self._prepare(prompt, _options(locals()), wait)
        return gen.text_pieces()

    def events(
        self,
        prompt: str | Sequence[int],
        *,
        wait: bool | float = True,
        cancel: threading.Event | None = None,
        **options,
    ) -> Generation:
        """The raw Generation (tokens, proposer of each, text pieces) for tools like the bench and
        the server; `options` are GENERATION_OPTIONS (unknown ones raise InvalidParameterError).
        cancel: set from another thread, it stops the generation within one n_batch chunk of the
        prompt or one decode step (the result's note says "cancelled")."""
        gen = self._prepare(prompt, options, wait)
        gen.cancel = cancel
        return gen

    def _finished(self, gen: Generation) -> None:
        """Every generation ends here (Generation calls it once its result exists)."""
        assert gen.result is not None
        self.last_result = gen.result
        if self._scheduler is not None:
            self._scheduler.observe(gen.result.stats, gen.sampling.greedy, gen.plan)

    @property
    def scheduler(self):
        """What `auto` has learned on this ensemble (acceptance, lookup rates, speed); made on first use."""
        if self._scheduler is None:
            from .auto import Scheduler

            self._scheduler = Scheduler(self)
        return self._scheduler

    # ------------------------------------------------------------------ chat
    @property
    def chat_template(self):
        """The members' chat template (chat.ChatTemplate: render, tokens), built on first use."""
        self._turns.check_open()
        if self._chat_template is None:
            from .chat import ChatTemplate

            self._chat_template = ChatTemplate(self)
        return self._chat_template

    @overload
    def create_chat_completion(
        self, messages: Sequence[dict], stream: Literal[False] = False, **kw: Any
    ) -> ChatCompletion: ...

    @overload
    def create_chat_completion(
        self, messages: Sequence[dict], stream: Literal[True], **kw: Any
    ) -> Iterator[ChatCompletionChunk]: ...

    def create_chat_completion(self, messages, stream: bool = False, **kw):
        """OpenAI-shaped chat completion (a ChatCompletion dict, or an iterator of ChatCompletionChunk
        dicts when stream=True; openai_format.py has their shapes). kw: GENERATION_OPTIONS, wait,
        stream_options ({"include_usage": True}), model, n (1), user."""
        from .chat import create_chat_completion

        return create_chat_completion(self, messages, stream=stream, **kw)

    # ------------------------------------------------------------------ asyncio
    async def agenerate(self, prompt: str | Sequence[int], **options) -> GenerationResult:
        """generate() for asyncio: the work runs on a worker thread, the event loop stays free.
        options: GENERATION_OPTIONS and wait, as in generate."""
        from .aio import run_in_thread

        return await run_in_thread(lambda: self.generate(prompt, **options))

    def astream(self, prompt: str | Sequence[int], **options):
        """stream() for asyncio: `async for piece in ens.astream(...)`; leaving the loop early (or
        aclose()) stops the generation within one token. `last_result` holds the result afterwards."""
        from .aio import iterate_in_thread

        return iterate_in_thread(lambda stop: self.events(prompt, cancel=stop, **options).text_pieces())

    async def acreate_chat_completion(self, messages, stream: bool = False, **kw):
        """create_chat_completion for asyncio: a dict, or (stream=True) an async iterator of chunks."""
        from .aio import iterate_in_thread, run_in_thread

        if not stream:
            return await run_in_thread(lambda: self.create_chat_completion(messages, **kw))
        return iterate_in_thread(lambda stop: self.create_chat_completion(messages, stream=True, **kw))

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free every member's llama.cpp memory once a running step has finished. Afterwards every
        method raises EnsembleClosedError (an unfinished stream's next step too); closing twice is harmless."""
        if not self._turns.close():
            return
        with self._turns.lock:
            self.workers.close()  # joins every worker thread: none outlives the ensemble
            for m in self.members:
                m.close()

    @property
    def closed(self) -> bool:
        return self._turns.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Ensemble({self.name!r}, method={self.spec.method!r}, members={len(self.members)})"


def remote_placement(paths: Sequence, rpc) -> tuple[list, list[str | None]]:
    """Model paths without any "@host:port", and each member's endpoint (None: here), from the
    paths and the rpc option together; malformed or shared endpoints are refused before any load."""
    from .remote.endpoint import parse_endpoint, split_model_reference

    given = list(rpc) if isinstance(rpc, (list, tuple)) else [rpc] * len(paths)
    if len(given) != len(paths):
        raise InvalidParameterError(f"rpc has {len(given)} values for {len(paths)} members")
    out_paths, endpoints = [], []
    for p, where in zip(paths, given):
        p, at = split_model_reference(os.fspath(p)) if isinstance(p, (str, os.PathLike)) else (p, None)
        if at is not None and where:
            raise InvalidParameterError(f"{p}: placed twice, with '@{at}' and rpc={where!r}")
        out_paths.append(p)
        endpoints.append(str(at) if at else str(parse_endpoint(where)) if where else None)
    placed = [e for e in endpoints if e]
    for e in set(placed):
        if placed.count(e) > 1:
            raise InvalidParameterError(
                f"RPC server {e} is given to {placed.count(e)} members; one server serves one member "
                "(start another rpc-server on another port)"
            )
    return out_paths, endpoints


def check_endpoints(endpoints: Sequence[str | None]) -> None:
    """RPC is built in and every server answers its hello with our protocol version (EndpointError)."""
    if any(endpoints):
        from .remote.backend import require_rpc
        from .remote.endpoint import parse_endpoint, probe

        require_rpc()
        for e in endpoints:
            if e:
                probe(parse_endpoint(e))


def load_member(path, options: MemberOptions, verbose: bool = False) -> DecodeMember:
    """A member here (Member), or on an RPC server (RemoteMember) when options.rpc names one."""
    if options.rpc:
        from .remote.member import RemoteMember

        return RemoteMember(path, options, verbose=verbose)
    return Member(path, options, verbose=verbose)


def per_member_options(n: int, **values) -> list[dict]:
    """Placement options (n_threads, n_threads_batch, n_gpu_layers) for each of n members: each
    value is one for all or a list of one per member. Wrong lengths and bad values raise
    InvalidParameterError; more threads than cores is allowed, with a warning."""
    out: list[dict] = [{} for _ in range(n)]
    for name, v in values.items():
        vs = list(v) if isinstance(v, (list, tuple)) else [v] * n
        if len(vs) != n:
            raise InvalidParameterError(f"{name} has {len(vs)} values for {n} members")
        for d, x in zip(out, vs):
            d[name] = x
    cores = default_threads()
    threads = [d["n_threads"] for d in out if d.get("n_threads")]
    if any(isinstance(t, int) and t > cores for t in threads):
        log.warning(
            "warning: n_threads %s is more than the %d cores of this machine; it will run slower", threads, cores
        )
    elif isinstance(values.get("n_threads"), (list, tuple)) and sum(t for t in threads if isinstance(t, int)) > cores:
        log.warning(
            "warning: n_threads %s add up to more than the %d cores; side by side, members will slow each other down",
            threads,
            cores,
        )
    return out


def _options(arguments: dict) -> dict:
    """The GENERATION_OPTIONS among a call's arguments (generate's and stream's keywords)."""
    return {k: arguments[k] for k in GENERATION_OPTIONS}
