"""The public facade: load members, check them, generate, stream, chat (docs/design.md §9)."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

import numpy as np

from .constrain import Constraint, grammar_of, tokenizer_for
from .decode.plan import Plan, make_plan, parse_gamma, parse_lookup
from .errors import ContextOverflowError, InvalidParameterError, TooManyMembersError
from .generation import Generation
from .member import DecodeMember, default_threads
from .params import GENERATION_OPTIONS, EnsembleSpec, GenerationOptions, SamplingParams
from .result import GenerationResult
from .sources.load import check_endpoints as check_endpoints  # re-exported: loading lives in sources/
from .sources.load import load_member as load_member
from .sources.load import load_members
from .sources.placement import per_member_options as per_member_options
from .threads import even_split, placement_sizes
from .turns import Turns
from .vocabulary import MappingReport
from .vocabulary.bridge import Bridge
from .vocabulary.follower_member import FollowerMember
from .workers import MemberWorkers

log = logging.getLogger("edge_specens")

# Members one ensemble takes (presets and from_paths). Each costs its own memory, load time and a
# decode per token; past a few dozen nothing gets better, and a preset listing 1000 copies of one
# file must fail at once, not after minutes of loading (reliability probe N16).
MAX_MEMBERS = 64

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Unpack

    from .aio import Streams
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
    cache_ram: float | None
    primary: int
    vocab: str
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
        primary: int = 0,
    ):
        self.members = list(members)
        # r lives on this member's vocabulary; members with another one are FollowerMembers (vocabulary/)
        self.primary = primary
        self.vocab_reports: list[MappingReport] = []  # one per follower: how its vocabulary maps
        self.vocab_bridges: list[Bridge] = []  # ... its bridge: the map, and whether its tables were cached
        self.cache_ram = 0.0  # MiB for saved prompts, all members together (from_paths' cache_ram)
        self.spec = spec
        self.n_vocab = n_vocab
        self.default_gamma = tuple(default_gamma) if default_gamma else None
        self.name = name or "+".join(m.name for m in self.members)
        self.max_token_chars = max_token_chars  # the longest vocabulary entry (check_text_length)
        self._piece_cache: dict[int, bytes] = {}
        self._scheduler: Scheduler | None = None
        self._chat_template: ChatTemplate | None = None
        self._member_templates: dict[int, ChatTemplate] = {}  # followers' own templates (chat.member_chat_tokens)
        self._llg_tokenizer = None  # structured output (constrain.py), built on first use
        self._turns = Turns(self.name)  # one generation at a time (turns.py)
        self.workers = MemberWorkers([m.name for m in self.members])  # side by side (workers.py)
        self.last_result: GenerationResult | None = None
        self._streams: Streams | None = None  # the async streams running or waiting for readers (aio.py)

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
        cache_ram: float | None = None,
        verbose: bool = False,
        name: str | None = None,
        primary: int = 0,
        vocab: str = "auto",
        progress: Callable[[str, int, int], None] | None = None,
    ) -> Ensemble:
        """Load GGUF files as one ensemble.

        Args:
            paths: model references (sources/reference.py): GGUF files, Hugging Face files
                ("owner/repo:file.gguf" or "hf://owner/repo/file.gguf", fetched into the Hugging Face
                cache), models Ollama pulled ("ollama:NAME[:TAG]") or LM Studio downloaded
                ("lmstudio:PUBLISHER/MODEL[/FILE.gguf]"), used where they are; for method "cd" the
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
            cache_ram: MiB of RAM for saved prompts, all members together (prompt_cache.py): a request
                that shares more with an earlier conversation than with the last request restores that
                conversation's KV state instead of reading it again. None: 8192, or half the RAM left
                once the weights are in if that is less; 0: off.
            primary: the member whose vocabulary r lives on (default 0; for "cd" it must be the expert,
                0). Members with another vocabulary follow it through a fixed map (docs/design.md §2),
                with one line each on stderr at load saying how well their vocabularies map.
            vocab: "auto" (members that share the primary's vocabulary as they are, the others
                follow it), "shared" (every member must share it: VocabularyMismatchError otherwise) or
                "bridge" (every other member follows, even with the same vocabulary: for tests).
        Raises:
            ModelLoadError: a file is missing, unreadable, not GGUF or truncated (ModelNotFoundError:
                an Ollama or LM Studio store, or a model in it, is not there).
            VocabularyMismatchError: a member cannot follow the primary's vocabulary (vocab "shared":
                the members do not share one vocabulary), naming both files.
            InvalidParameterError: bad weights, mu, gamma, primary, vocab or options (or a malformed endpoint).
            EndpointError: an RPC server cannot be reached or speaks another protocol version.
            RpcUnavailableError: a member is remote, and llama-cpp-python was built without RPC.

        progress: a callable(what, done, total) for a GUI, told each loading stage (loading takes
            10-20 s for the default duo): ("read headers", 0 then n, n), then ("load models", k, n)
            before the first member and after each (k members loaded of n).
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        stage = progress if callable(progress) else (lambda what, done, total: None)
        check_member_count(len(paths))  # before any file is looked at, let alone fetched
        if not paths:
            raise InvalidParameterError("give at least one model path")
        spec = EnsembleSpec.build(len(paths), method, weights, mu, alpha)
        g = parse_gamma(gamma, len(paths))
        # reference → file → header → vocabulary map → placement → loaded member: one step (sources/load.py)
        loaded = load_members(
            paths,
            weights=spec.weights,
            primary=primary,
            vocab=vocab,
            method=spec.method,
            rpc=rpc,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            n_gpu_layers=n_gpu_layers,
            main_gpu=main_gpu,
            tensor_split=tensor_split,
            flash_attn=flash_attn,
            n_batch=n_batch,
            kv_f32=kv_f32,
            mmap=mmap,
            cache_ram=cache_ram,
            verbose=verbose,
            stage=stage,
        )
        ens = cls(
            loaded.members,
            spec,
            loaded.n_vocab,
            name=name,
            max_token_chars=loaded.max_token_chars,
            primary=loaded.primary,
        )
        ens.cache_ram = loaded.cache_ram
        ens.vocab_bridges = loaded.bridges
        ens.vocab_reports = [b.report for b in loaded.bridges]
        if g is not None:
            from .decode.plan import resolve_gammas

            ens.default_gamma = resolve_gammas(ens, g)
        return ens

    @classmethod
    def from_preset(cls, name: str, **options: Unpack[LoadOptions]) -> Ensemble:
        """Load a preset (fetching its files if needed). Options as in from_paths, plus progress: True
        (tqdm bars on a terminal), False, or a callable(what, done, total) for a GUI: byte counts while
        files are verified or downloaded, ("check files", k, n) as each member's file is found (cached
        or not), then from_paths' stages (reading headers, loading member k of n)."""
        from .fetch import resolve_member
        from .presets import load_preset

        preset = load_preset(name)
        progress = options.pop("progress", True)
        stage = progress if callable(progress) else (lambda what, done, total: None)
        n = len(preset.members)
        stage("check files", 0, n)
        paths = []
        for m in preset.members:  # fetch.pull_preset, told after each file
            paths.append(resolve_member(m, progress=progress))
            stage("check files", len(paths), n)
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
        if preset.primary is not None:  # whose vocabulary r lives on (--primary overrides)
            kw["primary"] = preset.primary
        if preset.vocab is not None:
            kw["vocab"] = preset.vocab
        kw.update(options)
        if callable(progress):
            kw["progress"] = progress
        return cls.from_paths(paths, **kw)

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        self._turns.check_open()
        return self.members[self.primary].tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def piece(self, token: int) -> bytes:
        self._turns.check_open()
        p = self._piece_cache.get(token)
        if p is None:
            p = self._piece_cache[token] = self.members[self.primary].piece(token)
        return p

    def is_eog(self, token: int) -> bool:
        self._turns.check_open()
        return self.members[self.primary].is_eog(token)

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
        """The member `single` runs: the heaviest weight (CD: the expert), ties to the larger model, among
        the members that share the primary's vocabulary (a follower alone could sit a position out)."""
        w = self.spec.weights
        own = [k for k, m in enumerate(self.members) if not isinstance(m, FollowerMember)]  # r's vocabulary
        return max(own, key=lambda k: (w[k], self.members[k].n_params, -k))

    def plan(
        self,
        strategy: str = "auto",
        gamma=None,
        sampling: SamplingParams | None = None,
        lookup: int | None = None,
        parallel: bool | None = None,
        position: int | None = None,
    ) -> Plan:
        """Which strategy runs with which members and proposal lengths, one after the other or side
        by side (`auto` decides from what it measured, unless parallel is True or False; position:
        the prompt's length, where the costs it weighs are measured). Raises InvalidParameterError
        before any work for a bad strategy, gamma, lookup or parallel."""
        self._turns.check_open()
        parse_gamma(gamma, len(self.members))
        parse_lookup(lookup)
        if parallel is not None and not isinstance(parallel, bool):
            raise InvalidParameterError(f"parallel must be true, false or null, got {parallel!r}")
        if strategy == "auto":
            from .auto import auto_plan

            return auto_plan(self, gamma, sampling or SamplingParams(), lookup, parallel, position)
        return make_plan(self, strategy, gamma, lookup, parallel)

    # ------------------------------------------------------------------ generation
    def _prepare(
        self,
        prompt,
        options: dict,
        wait: bool | float = True,
        cancel: threading.Event | None = None,
        messages: Sequence[dict] | None = None,
    ) -> Generation:
        """A Generation holding the ensemble's turn. cancel (the async faces): stops a wait for the
        turn too (GenerationCancelledError), and then the generation within a token. messages: the
        conversation `prompt` renders (chat), so each follower reads it in its own chat template."""
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
        if self._streams is not None:  # async streams waiting for their readers: supersede or release them
            from .aio import caller_task

            self._streams.claim(caller_task())
        turn = self._turns.begin(wait, cancel)  # from here on this generation holds the ensemble
        try:
            with turn.step():  # auto may calibrate (decode) while planning
                tokens = self.prompt_tokens(prompt)
                self._bind_follower_prompts(tokens, prompt if isinstance(prompt, str) else None, messages)
                plan = self.plan(opts.strategy, opts.gamma, sampling, opts.lookup, opts.parallel, len(tokens))
                constraint = Constraint(self._grammar_tokenizer(), grammar, self.n_vocab) if grammar else None
        except BaseException:
            turn.end()
            raise
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        gen = Generation(self, tokens, sampling, plan, seed, on_finish=self._finished, turn=turn, cancel=cancel)
        gen.constraint = constraint
        gen.logprobs = opts.logprobs
        return gen

    def _bind_follower_prompts(self, tokens: list[int], text: str | None, messages: Sequence[dict] | None) -> None:
        """Each follower's own rendering of this prompt (docs/design.md §2): the conversation in its own
        chat template, else the text through its own tokenizer, else (token ids) their text re-encoded.
        Raises ContextOverflowError when a follower's rendering does not fit its context."""
        followers = [(k, m) for k, m in enumerate(self.members) if isinstance(m, FollowerMember)]
        if followers and messages is None and text is None and self._chat_template is not None:
            messages = self._chat_template.conversation(tokens)  # a chat prompt handed over as its tokens
        for k, m in followers:
            if messages is not None:
                from .chat import member_chat_tokens

                own = member_chat_tokens(self, k, messages)
            elif text is not None:
                own = m.own_text(text)
            else:
                own = m.reencode(tokens)
            m.bind_prompt(tokens, own)

    def _grammar_tokenizer(self):
        """llguidance's view of the members' vocabulary (built on the first constrained request, ~2 s)."""
        if self._llg_tokenizer is None:
            self._llg_tokenizer = tokenizer_for(self.members[self.primary])
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
        logprobs: int | None = None,
        *,
        wait: bool | float = True,
    ) -> GenerationResult:
        """Generate a continuation of `prompt` (text or token ids).

        Args: see params.GenerationOptions (temperature 0 = greedy; defaults as llama.cpp's: T 0.8,
            top-k 40, top-p 0.95, min-p 0.05; repeat_penalty, frequency_penalty, presence_penalty and
            logit_bias ({token id: bias}) act on r, so every strategy stays exact; json_schema, grammar
            (GBNF or Lark) or regex constrain the output (llguidance, on r); strategy auto | se | sd |
            standard | single; gamma: proposal length(s); lookup: free prompt-lookup drafts per
            round for `se`, 0 = off, `auto` decides when None; logprobs: N fills result.logprobs with
            each token's log-probability under r and r's N likeliest tokens, 0 the token only).
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
        logprobs: int | None = None,
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
        stream_options ({"include_usage": True}), model, n (1), user, cancel (a threading.Event, as in
        events(); it also ends a wait for the ensemble), tools, tool_choice and parallel_tool_calls
        (OpenAI's: the reply's message.tool_calls, or tool_calls deltas when streamed; tools/)."""
        from .chat import create_chat_completion

        return create_chat_completion(self, messages, stream=stream, **kw)

    # ------------------------------------------------------------------ fill-in-the-middle
    def infill(
        self,
        prefix: str,
        suffix: str = "",
        *,
        extra: Sequence[dict] | None = None,
        prompt: str = "",
        wait: bool | float = True,
        **options,
    ) -> GenerationResult:
        """The text between `prefix` and `suffix` (code completion at a cursor), written by the model
        through its own fill-in-the-middle tokens (fim.py has the prompt's layout).

        extra: other files for context, [{"text": ..., "filename": ...}] (llama.cpp's input_extra);
        prompt: text the middle must start with. options: GENERATION_OPTIONS (max_tokens 128 unless
        given), as in generate. What does not fit the context is cut from the far ends, as llama.cpp does.
        Raises InvalidParameterError when the model has no FIM tokens (it was not trained to fill in).
        """
        from .fim import infill_tokens

        max_tokens = options.get("max_tokens", 128)
        tokens = infill_tokens(self, prefix, suffix, extra, prompt, max_tokens if isinstance(max_tokens, int) else 0)
        gen = self._prepare(tokens, options, wait)
        for _ in gen:
            pass
        assert gen.result is not None
        return gen.result

    # ------------------------------------------------------------------ asyncio
    # aio.py says what an abandoned call does. These are plain methods that return the coroutine (or
    # async iterator): the task that evaluates `ens.agenerate(...)` is the caller, also when
    # asyncio.wait_for or gather runs the coroutine in a task of its own.
    def agenerate(self, prompt: str | Sequence[int], **options) -> Coroutine[Any, Any, GenerationResult]:
        """generate() for asyncio (`await ens.agenerate(...)`): the work runs on a worker thread, the
        event loop stays free. options: GENERATION_OPTIONS and wait, as in generate. Cancelling the
        await (wait_for's timeout, task.cancel(), asyncio.run ending) stops the generation within a token."""
        from .aio import caller_task

        return self._agenerate(prompt, options, caller_task())

    async def _agenerate(self, prompt, options: dict, owner) -> GenerationResult:
        from .aio import run_in_thread

        self._async_streams().claim(owner)
        wait = options.pop("wait", True)

        def run(cancel: threading.Event) -> GenerationResult:
            gen = self._prepare(prompt, options, wait, cancel)
            for _ in gen:
                pass
            assert gen.result is not None
            return gen.result

        return await run_in_thread(run)

    def astream(self, prompt: str | Sequence[int], **options) -> AsyncIterator[str]:
        """stream() for asyncio: `async for piece in ens.astream(...)`. The worker produces at most one
        piece ahead of the reader; aclose(), leaving a temporary `async for` early, or the next call
        from the same task (a held stream after `break`) stops the generation within a token.
        `last_result` holds the result afterwards."""
        from .aio import caller_task, iterate_in_thread

        wait = options.pop("wait", True)
        return iterate_in_thread(
            lambda stop: self._prepare(prompt, options, wait, stop).text_pieces(),
            self._async_streams(),
            caller_task(),
        )

    def acreate_chat_completion(self, messages, stream: bool = False, **kw) -> Coroutine[Any, Any, Any]:
        """create_chat_completion for asyncio: `await` it for a dict, or (stream=True) for an async
        iterator of chunks (abandoned ones stop as astream's do)."""
        from .aio import caller_task

        return self._achat(messages, stream, kw, caller_task())

    async def _achat(self, messages, stream: bool, kw: dict, owner):
        from .aio import iterate_in_thread, run_in_thread

        streams = self._async_streams()
        if not stream:
            streams.claim(owner)
            return await run_in_thread(lambda cancel: self.create_chat_completion(messages, cancel=cancel, **kw))
        return iterate_in_thread(
            lambda stop: self.create_chat_completion(messages, stream=True, cancel=stop, **kw), streams, owner
        )

    def _async_streams(self) -> Streams:
        if self._streams is None:
            from .aio import Streams

            self._streams = Streams()
        return self._streams

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


def check_member_count(n: int) -> None:
    """Refuse more than MAX_MEMBERS members (TooManyMembersError)."""
    if n > MAX_MEMBERS:
        raise TooManyMembersError(f"{n} members is too many: an ensemble takes at most {MAX_MEMBERS}")


def _options(arguments: dict) -> dict:
    """The GENERATION_OPTIONS among a call's arguments (generate's and stream's keywords)."""
    return {k: arguments[k] for k in GENERATION_OPTIONS}
