"""One ensemble member: a GGUF model in its own llama.cpp context (docs/design.md §5).

Why the low-level API: `Llama` with all logits kept holds n_ctx x n_vocab floats per
member and computes logits for every prompt token. A member here asks llama.cpp
for logits only at the positions a strategy names, so logits memory grows with
the positions requested, never with n_ctx.

A member owns its state: `tokens` is exactly what its KV cache holds, so strategies
can ask "what have you seen?" and roll back to any earlier length.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from .errors import (
    ContextOverflowError,
    EdgeSpecensError,
    EnsembleClosedError,
    GenerationCancelledError,
    ModelLoadError,
    UnsupportedModelError,
)
from .gguf_header import validate_gguf
from .prompt_cache import (
    MIB,
    MIN_SAVE_TOKENS,
    PromptCache,
    PromptCacheStats,
    SavedPrompt,
    check_cache_ram,
    common_prefix,
)
from .threads import governor


@functools.cache
def _return_big_arrays_to_the_os() -> None:
    """Logits rows (0.6 MB at a 152k vocabulary) are allocated on every member's worker thread and
    freed on the controller's. glibc gives each thread its own heap (arena), and rows freed into the
    workers' heaps stayed resident: +25 MiB of peak RSS with the duo side by side. Two arenas keep
    that memory reusable (measured: peak 1895 -> 1885 MiB in a 3-generation script, controller
    overhead unchanged at 2-2.5 %); mapping every row instead (a fixed mmap threshold) saved as much
    but page-faulted each fresh row, +1.5-2.7 points of overhead. MALLOC_ARENA_MAX, if set, wins."""
    if os.environ.get("MALLOC_ARENA_MAX") is not None:
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: its allocator decides


def _llama():
    """Import llama_cpp lazily and silence its logging unless asked (import costs ~0.3 s)."""
    _return_big_arrays_to_the_os()
    import llama_cpp
    from llama_cpp import _logger

    if not os.environ.get("EDGE_SPECENS_VERBOSE"):
        _logger.set_verbose(False)
    return llama_cpp


def default_threads() -> int:
    """Physical cores are what matters for llama.cpp; os.cpu_count() is the best portable guess."""
    return max(1, os.cpu_count() or 1)


# Logits rows per llama_decode at most. llama.cpp sizes its output buffer (and touches compute
# memory) for the most rows a decode ever asked for: 33 rows cost the duo 87 MB that stayed
# resident. Strategies ask for at most 16 (the 16-token batch is also the cheapest per token
# on a CPU); longer verifications are split, at the 16-token rate (calibrate.CostCurve).
MAX_OUTPUTS = 16


@dataclass(frozen=True)
class MemberOptions:
    """Per-member llama.cpp settings, passed straight through."""

    n_ctx: int = 4096
    # Tokens per llama_decode chunk. On a CPU 128 reads a prompt as fast as 512 and its compute
    # buffers are ~45 MB smaller; a GPU wants bigger batches. None picks by n_gpu_layers.
    n_batch: int | None = None
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0
    main_gpu: int = 0
    tensor_split: tuple[float, ...] | None = None
    flash_attn: bool | None = None  # None = llama.cpp decides (auto)
    kv_f32: bool = False  # f32 KV cache: removes most batch-vs-single float noise (docs/design.md §4)
    # Read weights into memory instead of mmapping them. llama.cpp repacks quantized CPU weights
    # into its own buffers; with mmap the file pages stay resident too (measured: 1.67x the file
    # sizes for the duo, 1.23x without), at no speed cost.
    mmap: bool = False
    # "host:port" of an RPC server that runs this member (remote/): all its layers go there
    rpc: str | None = None
    # MiB of saved prompt states this member keeps in RAM (prompt_cache.py; 0: off). The ensemble
    # gives each member its share of --cache-ram.
    cache_ram: float = 0.0

    def validate(self) -> None:
        from .errors import InvalidParameterError

        for name in ("n_ctx", "n_batch"):
            v = getattr(self, name)
            if v is None and name == "n_batch":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidParameterError(f"{name} must be a positive integer, got {v!r}")
        if self.n_ctx < 8:
            raise InvalidParameterError(f"n_ctx must be at least 8, got {self.n_ctx}")
        for name in ("n_threads", "n_threads_batch"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise InvalidParameterError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.n_gpu_layers, int) or self.n_gpu_layers < -1:
            raise InvalidParameterError(f"n_gpu_layers must be an integer >= -1, got {self.n_gpu_layers!r}")
        check_cache_ram(self.cache_ram)


@dataclass
class MemberStats:
    """Work done by one member: llama_decode calls, tokens evaluated, seconds inside llama_decode."""

    calls: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def snapshot(self) -> MemberStats:
        return MemberStats(self.calls, self.tokens, self.seconds)


@contextmanager
def _ctrl_c_after_loading() -> Iterator[None]:
    """Ctrl-C while llama.cpp loads a model used to be lost: llama.cpp logs through a Python callback
    as it loads, and a KeyboardInterrupt raised inside a ctypes callback is swallowed. So a Ctrl-C
    (only where Python's own handler is installed, in the main thread) is remembered and raised once
    the load has returned."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    hit: list[int] = []
    signal.signal(signal.SIGINT, lambda sig, frame: hit.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hit:
        raise KeyboardInterrupt


class DecodeMember(Protocol):
    """What the facade and the decode strategies need of a member. `Member` is the llama.cpp one;
    tests implement it with fake members that serve fixed logits (no llama.cpp, no float noise)."""

    name: str
    tokens: list[int]  # what the KV cache holds, in order
    stats: MemberStats
    can_rollback: bool
    n_ctx: int
    n_vocab: int
    n_batch: int  # tokens per llama_decode at most

    @property
    def n_params(self) -> int: ...

    def evaluate_rows(self, tokens: Sequence[int], want: Sequence[int]) -> Sequence[np.ndarray | None]:
        """Append `tokens` to the cache; the logits rows at the indices `want` (into `tokens`). None: no
        vote there (only a member following another vocabulary abstains: vocabulary/follower_member.py)."""
        ...

    def truncate(self, n: int) -> None: ...

    def reuse_prefix(self, sequence: Sequence[int]) -> int: ...

    def prefill(self, prompt: Sequence[int], should_stop: Callable[[], bool] | None = None) -> int: ...

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]: ...

    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...

    def pin_threads(self, n: int | None) -> None:
        """Use n llama.cpp threads until pin_threads(None) gives back the member's own setting."""
        ...

    @property
    def threads(self) -> int:
        """llama.cpp threads the next decode uses."""
        ...

    @property
    def device(self) -> str:
        """Where the weights are: "cpu", "gpu" or "cpu+gpu"."""
        ...

    def close(self) -> None: ...


@contextmanager
def pinned(members: Sequence[DecodeMember], threads: Sequence[int | None] | None) -> Iterator[None]:
    """Each member on its share of a side-by-side thread split (None: its own setting) for the
    block, then every member's own setting back: two members on all cores each would fight."""
    for m, n in zip(members, threads or [None] * len(members)):
        m.pin_threads(n)
    try:
        yield
    finally:
        for m in members:
            m.pin_threads(None)


def prefill_in_chunks(member: DecodeMember, prompt: Sequence[int], should_stop: Callable[[], bool] | None) -> int:
    """DecodeMember.prefill for any member: keep the reusable cached prefix, then read the rest of
    the prompt but its last token in n_batch chunks, asking should_stop before each one."""
    reused = member.reuse_prefix(prompt)
    while len(member.tokens) < len(prompt) - 1:
        if should_stop is not None and should_stop():
            raise GenerationCancelledError(f"{member.name}: cancelled while reading the prompt")
        start = len(member.tokens)
        member.evaluate_rows(list(prompt[start : min(start + member.n_batch, len(prompt) - 1)]), [])
    return reused


def reusable_prefix(
    cached: Sequence[int] | np.ndarray, sequence: Sequence[int] | np.ndarray, can_rollback: bool
) -> int:
    """How much of the cache to keep for `sequence`: the longest shared prefix that leaves at least
    one token to evaluate (a later evaluation must produce logits for the last token of `sequence`,
    and a row we did not keep can only come from evaluating that token again). A member that cannot
    roll back keeps nothing unless the whole cache is a prefix."""
    n = max(0, min(common_prefix(cached, sequence), len(sequence) - 1))
    if not can_rollback and n < len(cached):
        n = 0
    return n


class Vocabulary:
    """Tokens and metadata from a loaded llama.cpp model (`model`, `vocab`, `_lib`): shared by the
    local Member and a remote member, which reads its vocabulary here and runs the weights there."""

    _lib: Any
    model: Any
    vocab: Any

    _closed: bool
    name: str

    def _check_open(self) -> None:
        """Every call into llama.cpp after close() would read freed memory (a segfault): refuse it."""
        if self._closed:
            raise EnsembleClosedError(f"{self.name} is closed")

    def metadata(self) -> dict[str, str]:
        self._check_open()
        return self.model.metadata()

    def token_text(self, token: int) -> bytes:
        """The raw vocabulary entry of `token` (what the vocabulary check compares)."""
        self._check_open()
        return self._lib.llama_vocab_get_text(self.vocab, token) or b""

    def piece(self, token: int) -> bytes:
        """Bytes this token adds to the output (may be part of a UTF-8 character)."""
        self._check_open()
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        return buf.raw[: max(n, 0)]

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        self._check_open()
        if add_bos is None:
            add_bos = bool(self._lib.llama_vocab_get_add_bos(self.vocab))
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as e:
            from .errors import InvalidParameterError

            raise InvalidParameterError(f"the text is not valid UTF-8 (at character {e.start})") from None
        return self.model.tokenize(data, add_bos=add_bos, special=special)

    @property
    def bos_token(self) -> int:
        """The beginning-of-sequence token id (-1: none)."""
        self._check_open()
        return int(self._lib.llama_vocab_bos(self.vocab))

    @property
    def eos_token(self) -> int:
        """The end-of-sequence token id (-1: none)."""
        self._check_open()
        return int(self._lib.llama_vocab_eos(self.vocab))

    def is_eog(self, token: int) -> bool:
        self._check_open()
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))


class MemberBase(Vocabulary):
    """What every llama.cpp member does the same way, here or on another machine (remote/): rows and
    the prompt on top of the subclass's `_decode` (one llama_decode per chunk) under `_exclusive`."""

    n_vocab: int
    _busy: threading.Lock

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Refuse a second thread while one is inside: llama.cpp contexts are not thread-safe, and a
        race would corrupt the cache silently (workers.py keeps members to one thread at a time)."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"{self.name}: two threads used this member at once (a bug in edge_specens)")
        try:
            self._ready()
            yield
        finally:
            self._busy.release()

    def _ready(self) -> None:
        """Called first inside _exclusive: what the member needs before any work (a remote one reconnects)."""

    def _decode(self, tokens: Sequence[int], want: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def prefill(self, prompt: Sequence[int], should_stop: Callable[[], bool] | None = None) -> int:
        """Hold all of `prompt` but its last token in the cache (strategies start from that token).

        Reuses the cached prefix; returns how many tokens were reused. should_stop is asked before
        each n_batch chunk: True raises GenerationCancelledError, with what was read kept (a long
        prompt can take minutes on a CPU, and a cancelled request must not hold the machine).
        """
        return prefill_in_chunks(cast(DecodeMember, self), prompt, should_stop)

    def evaluate(self, tokens: Sequence[int], want: Sequence[int]) -> np.ndarray:
        """Append `tokens` to the cache; return logits rows at the indices `want` (into `tokens`).

        Returns float32 array of shape (len(want), n_vocab). Raises ContextOverflowError instead
        of overrunning n_ctx.
        """
        out = np.empty((len(want), self.n_vocab), dtype=np.float32)
        with self._exclusive():
            for i, row in self._decode(tokens, want):
                out[i] = row
        return out

    def evaluate_rows(self, tokens: Sequence[int], want: Sequence[int]) -> list[np.ndarray]:
        """As evaluate, but each row its own array, so every row is freed as soon as it is used:
        rows left in one (len(want), n_vocab) block keep the whole block alive (0.6 MB a row at
        a 152k vocabulary; measured 65 MB held by four blocks in a lookup-heavy generation)."""
        out: list = [None] * len(want)
        with self._exclusive():
            for i, row in self._decode(tokens, want):
                out[i] = row.copy()
        return out

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Member(MemberBase):
    """A GGUF model with its own context, batch buffer and token bookkeeping."""

    def __init__(self, path: str | os.PathLike, options: MemberOptions = MemberOptions(), *, verbose: bool = False):
        self._closed = True  # until loaded: close() and __del__ have nothing to free
        with _ctrl_c_after_loading():
            self._load(path, options, verbose)

    def _load(self, path: str | os.PathLike, options: MemberOptions, verbose: bool) -> None:
        options.validate()
        self.path = Path(path)
        self.options = options
        self.info = validate_gguf(self.path)  # refuse files llama.cpp would choke on
        llama_cpp = _llama()
        from llama_cpp import _internals
        from llama_cpp._utils import suppress_stdout_stderr

        self._lib = llama_cpp
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = options.n_gpu_layers
        if hasattr(mparams, "load_mode"):  # llama-cpp-python 0.3.36
            mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if options.mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        elif hasattr(mparams, "use_mmap"):
            mparams.use_mmap = options.mmap
        mparams.main_gpu = options.main_gpu
        if options.tensor_split:
            arr = (ctypes.c_float * len(options.tensor_split))(*options.tensor_split)
            self._tensor_split = arr  # keep alive while llama.cpp reads it
            mparams.tensor_split = ctypes.cast(arr, ctypes.POINTER(ctypes.c_float))
        if options.rpc:  # every layer on the RPC server (only ever in a helper process: remote/)
            from .remote.backend import server_devices

            self._devices = server_devices(options.rpc)  # keep alive while llama.cpp reads it
            mparams.devices = ctypes.cast(self._devices, ctypes.c_void_p)
            mparams.n_gpu_layers = -1
        try:
            self.model = _internals.LlamaModel(path_model=str(self.path), params=mparams, verbose=verbose)
        except (ValueError, OSError) as e:
            raise ModelLoadError(f"{self.path}: llama.cpp could not load the model ({e})") from None

        threads = options.n_threads or default_threads()
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = options.n_ctx
        n_batch = options.n_batch or (128 if options.n_gpu_layers == 0 else 512)
        cparams.n_batch = min(n_batch, options.n_ctx)
        cparams.n_ubatch = cparams.n_batch
        cparams.n_seq_max = 1
        cparams.n_threads = threads
        cparams.n_threads_batch = options.n_threads_batch or threads
        # threads the user did not choose follow the machine's load (threads.py)
        self._adaptive_threads = options.n_threads is None and options.n_threads_batch is None
        self._threads_now = threads
        self._pinned: int | None = None  # pin_threads: a side-by-side split's share, overriding the above
        # never two threads in this member at once (workers.py's rule, checked: a violation raises)
        self._busy = threading.Lock()
        cparams.no_perf = True
        if options.flash_attn is not None:
            cparams.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if options.flash_attn
                else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        if options.kv_f32:
            cparams.type_k = cparams.type_v = 0  # GGML_TYPE_F32
        try:
            with suppress_stdout_stderr(disable=verbose):
                self.context = _internals.LlamaContext(model=self.model, params=cparams, verbose=verbose)
        except ValueError as e:
            self.model.close()
            raise ModelLoadError(
                f"{self.path}: llama.cpp could not create a context (n_ctx={options.n_ctx}): {e}"
            ) from None

        self.ctx = self.context.ctx
        self.vocab = self.model.vocab
        self.n_vocab = self.model.n_vocab()
        # llama.cpp may round n_ctx up; we trust the smaller of the two numbers (docs/design.md §5).
        self.n_ctx = min(options.n_ctx, llama_cpp.llama_n_ctx(self.ctx))
        self.n_batch = int(cparams.n_batch)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.tokens: list[int] = []  # exactly what the KV cache holds
        self._inflight: int | None = None  # cache length before a decode whose bookkeeping is unfinished
        self.stats = MemberStats()
        # states saved for other prompts (prompt_cache.py), under this member's share of the budget
        self.prompt_cache = PromptCache(int(options.cache_ram * MIB)) if options.cache_ram > 0 else None
        self.can_rollback = not (
            llama_cpp.llama_model_is_recurrent(self.model.model) or llama_cpp.llama_model_is_hybrid(self.model.model)
        )
        self.name = self.path.name
        self._closed = False

    # ------------------------------------------------------------------ metadata
    @property
    def n_params(self) -> int:
        return int(self.model.n_params())

    @property
    def threads(self) -> int:
        return self._threads_now

    @property
    def device(self) -> str:
        layers = self.options.n_gpu_layers
        if layers == 0 or not self._lib.llama_supports_gpu_offload():
            return "cpu"
        n_layer = int(self._lib.llama_model_n_layer(self.model.model))
        return "gpu" if layers < 0 or layers > n_layer else "cpu+gpu"

    def pin_threads(self, n: int | None) -> None:
        """Decode with n threads (both single-token and batch) until pin_threads(None), which restores
        the member's own setting: the governor's count (threads.py) or the -t/-tb the user chose."""
        self._check_open()
        self._pinned = n
        if n is not None:
            single = batch = n
        elif self._adaptive_threads:
            single = batch = governor().threads()
        else:
            single = self.options.n_threads or default_threads()
            batch = self.options.n_threads_batch or single
        self._lib.llama_set_n_threads(self.ctx, single, batch)
        self._threads_now = single

    # ------------------------------------------------------------------ cache
    def _heal(self) -> None:
        """After an interrupt (Ctrl-C) between llama_decode and our bookkeeping, the cache may
        hold tokens we did not record: drop everything from the interrupted decode on.
        Called first by everything that touches the cache, so it also refuses a closed member."""
        self._check_open()
        if self._inflight is None:
            return
        keep, self._inflight = self._inflight, None
        mem = self._lib.llama_get_memory(self.ctx)
        if not self._lib.llama_memory_seq_rm(mem, 0, keep, -1):
            self._lib.llama_memory_clear(mem, True)
            keep = 0
        del self.tokens[keep:]

    def truncate(self, n: int) -> None:
        """Roll the KV cache back to its first n tokens (no-op if it holds n or fewer)."""
        with self._exclusive():
            self._truncate(n)

    def _truncate(self, n: int) -> None:
        self._heal()
        if n >= len(self.tokens):
            return
        mem = self._lib.llama_get_memory(self.ctx)
        if not self._lib.llama_memory_seq_rm(mem, 0, n, -1):
            if n == 0:
                self._lib.llama_memory_clear(mem, True)
            else:
                raise UnsupportedModelError(
                    f"{self.name}: this model cannot roll back its cache "
                    "(recurrent architecture); use strategy 'standard'"
                )
        del self.tokens[n:]

    def reuse_prefix(self, sequence: Sequence[int]) -> int:
        """Keep the longest cached prefix of `sequence` that leaves at least one token to evaluate
        (reusable_prefix); returns its length. With saved prompts (options.cache_ram) that prefix may
        come from a saved state, and the live one is saved first when the switch would lose it."""
        with self._exclusive():
            self._heal()
            n = reusable_prefix(self.tokens, sequence, self.can_rollback)
            if self.prompt_cache is not None:
                n = self._switch_prompt(self.prompt_cache, sequence, n)
            self._truncate(n)
        return n

    @property
    def prompt_cache_stats(self) -> PromptCacheStats | None:
        """What the saved prompts hold (None: off)."""
        return self.prompt_cache.stats() if self.prompt_cache is not None else None

    def _switch_prompt(self, cache: PromptCache, sequence: Sequence[int], n: int) -> int:
        """How much of `sequence` the cache will hold: a saved state that shares more of it than the live
        cache (n tokens) is restored. The live state is saved first when the next request would lose
        MIN_SAVE_TOKENS of it or more and no saved state holds it already (a conversation interrupted
        by a side request, a regenerated reply)."""
        saved, k = cache.best(sequence, self.can_rollback)
        restore = saved is not None and k > n
        kept = common_prefix(self.tokens, sequence[:k]) if restore else n
        if len(self.tokens) - kept >= MIN_SAVE_TOKENS and not cache.covers(self.tokens):
            self._save_state(cache)
        if not restore:
            return n
        assert saved is not None
        if not self._restore_state(saved):
            cache.discard(saved)
            return 0
        cache.touch(saved)
        return k

    def _save_state(self, cache: PromptCache) -> None:
        """Copy the live sequence's KV state into the cache (skipped when it would not fit at all)."""
        lib = self._lib
        size = int(lib.llama_state_seq_get_size(self.ctx, 0))
        if not cache.fits(size):
            return
        data = (ctypes.c_uint8 * size)()
        written = int(lib.llama_state_seq_get_data(self.ctx, data, size, 0))
        if written > 0:
            cache.add(self.tokens, data, written)

    def _restore_state(self, saved: SavedPrompt) -> bool:
        """Replace the live sequence with a saved state; False (and an empty cache) if llama.cpp refused it."""
        lib = self._lib
        mem = lib.llama_get_memory(self.ctx)
        if not lib.llama_memory_seq_rm(mem, 0, -1, -1):
            lib.llama_memory_clear(mem, True)
        self.tokens = []
        if int(lib.llama_state_seq_set_data(self.ctx, saved.data, saved.nbytes, 0)) == 0:
            lib.llama_memory_clear(mem, True)
            return False
        self.tokens = list(saved.tokens)
        return True

    # ------------------------------------------------------------------ decode
    def _decode(self, tokens: Sequence[int], want: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """llama_decode `tokens` in chunks; yield (index into want, a view of llama.cpp's row),
        valid until the next decode, for each wanted position.

        Chunks by n_batch, since a larger batch aborts llama.cpp, and after MAX_OUTPUTS logits
        rows, since llama.cpp keeps the output and compute memory of the most rows ever asked
        for (0.6 MB a row at a 152k vocabulary, per member).
        """
        lib = self._lib
        self._heal()
        start = len(self.tokens)
        if start + len(tokens) > self.n_ctx:
            raise ContextOverflowError(f"{self.name}: {start + len(tokens)} tokens exceed the context of {self.n_ctx}")
        want_set = set(want)
        row_of = {idx: i for i, idx in enumerate(want)}
        batch = self._batch
        for c0, c1 in _chunks(len(tokens), want_set, self.n_batch):
            chunk = tokens[c0:c1]
            outputs = []
            for j, tok in enumerate(chunk):
                batch.token[j] = tok
                batch.pos[j] = start + c0 + j
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = 0
                flag = (c0 + j) in want_set
                batch.logits[j] = flag
                if flag:
                    outputs.append(c0 + j)
            batch.n_tokens = len(chunk)
            if self._adaptive_threads and self._pinned is None:
                self._follow_load()
            t0 = time.perf_counter()
            self._inflight = start + c0
            rc = lib.llama_decode(self.ctx, batch)
            self.stats.seconds += time.perf_counter() - t0
            self.stats.calls += 1
            self.stats.tokens += len(chunk)
            if rc != 0:
                self._heal()  # the cache may hold part of the chunk now: forget it
                raise EdgeSpecensError(f"{self.name}: llama_decode failed with status {rc}")
            self.tokens.extend(chunk)
            self._inflight = None
            if outputs:
                ptr = lib.llama_get_logits(self.ctx)
                rows = np.ctypeslib.as_array(ptr, shape=(len(outputs), self.n_vocab))
                for i, idx in enumerate(outputs):
                    yield row_of[idx], rows[i]

    def _follow_load(self) -> None:
        n = governor().threads()
        if n != self._threads_now:
            self._lib.llama_set_n_threads(self.ctx, n, n)
            self._threads_now = n

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._closed:
            return
        with self._busy:  # a decode still running on another thread finishes first
            self._closed = True
            if self.prompt_cache is not None:
                self.prompt_cache.clear()
            self._lib.llama_batch_free(self._batch)
            self.context.close()
            self.model.close()


def _chunks(n: int, want: set[int], n_batch: int):
    """(start, end) of each llama_decode: at most n_batch tokens and MAX_OUTPUTS logits rows."""
    c0 = rows = 0
    for i in range(n):
        if i - c0 == n_batch or (rows == MAX_OUTPUTS and i in want):
            yield c0, i
            c0, rows = i, 0
        rows += i in want
    if n > c0:
        yield c0, n
