"""A member whose weights run on another machine's RPC server (llama.cpp's ggml-rpc).

The controller keeps only the vocabulary (a vocab-only llama.cpp model: tokenize, pieces,
end-of-generation) and the token bookkeeping; a helper process (remote/helper.py) owns the
llama.cpp context whose layers live on the server. Each llama_decode is one request to the
helper, which answers with the wanted logits rows in a shared buffer. If the helper dies (llama.cpp
aborts it when the server goes away) or the server goes silent (remote/deadlines.py: bounds that
follow the bytes moving and the member's measured cost), this member raises MemberLostError and
forgets its cache; the next request starts a new helper, which reconnects. Ctrl-C while waiting is
honoured at once: waiting is a Python loop here, llama.cpp runs in the helper. The helper dies with
this process however it ends (remote/lifeline.py).

What crosses the network per decode is llama.cpp's: the graph (a few kB), the new tokens'
embeddings in, and the logits rows out (4 bytes x n_vocab each: 0.6 MB at a 152k vocabulary).
The weights cross once, at load (cached on the server with `rpc-server --cache`).
"""

from __future__ import annotations

import mmap
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from .. import errors
from ..errors import ContextOverflowError, MemberLostError, ModelLoadError
from ..member import (
    MAX_OUTPUTS,
    MemberBase,
    MemberOptions,
    MemberStats,
    _chunks,
    _llama,
    reusable_prefix,
)
from ..prompt_cache import PromptCacheStats
from .backend import require_rpc
from .deadlines import call_silence_s, load_silence_s, stall_s
from .endpoint import parse_endpoint, probe
from .helper import PULSE_BYTES, pulse_of
from .lifeline import Lifeline, spawn

POLL_S = 0.25  # how often the wait looks at the helper's pulse
CLOSE_WAIT_S = 3.0  # an idle helper frees its context on the server and exits; then it is killed


class RemoteMember(MemberBase):
    """A DecodeMember whose llama_decode runs on the RPC server at options.rpc."""

    def __init__(self, path: str | os.PathLike, options: MemberOptions, *, verbose: bool = False):
        self._closed = True
        if not options.rpc:
            raise ValueError("RemoteMember needs options.rpc")
        options.validate()
        require_rpc()
        self.path = Path(path)
        self.options = options
        self.endpoint = str(parse_endpoint(options.rpc))
        self.name = f"{self.path.name}@{self.endpoint}"
        self.verbose = verbose
        self._lib = _llama()
        from llama_cpp import _internals

        params = self._lib.llama_model_default_params()
        params.vocab_only = True
        try:
            self.model = _internals.LlamaModel(path_model=str(self.path), params=params, verbose=verbose)
        except (ValueError, OSError) as e:
            raise ModelLoadError(f"{self.path}: llama.cpp could not read the vocabulary ({e})") from None
        self.vocab = self.model.vocab
        self.n_vocab = self.model.n_vocab()
        self.tokens: list[int] = []
        self.stats = MemberStats()
        self._busy = threading.Lock()
        self._helper: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._log: tempfile._TemporaryFileWrapper | None = None
        self._lifeline: Lifeline | None = None
        self._pending = 0  # tokens of a request whose answer was not read (Ctrl-C while waiting); -1: the load
        # the calibrated cost curve (auto/calibrate.py's cache), read at connect
        self._curve: Callable[[int], float] | None = None
        self._slowest_token_s = 0.0  # the slowest seconds per token measured so far (network included)
        self.lost: str | None = None  # why the server was lost, until a reconnect succeeds (/health)
        # the helper's saved prompts (prompt_cache.py: they live where the context is), as last reported
        self.prompt_cache_stats: PromptCacheStats | None = None
        size = MAX_OUTPUTS * self.n_vocab * 4 + PULSE_BYTES
        self._buffer_file = _shared_file(size)
        self._buffer = mmap.mmap(self._buffer_file.fileno(), size)
        self._rows = np.frombuffer(self._buffer, dtype=np.float32, count=MAX_OUTPUTS * self.n_vocab).reshape(
            MAX_OUTPUTS, self.n_vocab
        )  # no other view of the buffer may live on (close() could not close it)
        self._pulse = pulse_of(self._buffer)
        self._closed = False
        try:
            self._connect(first=True)  # Ctrl-C here ends the load at once: close() kills the helper
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ the helper
    def _connect(self, first: bool = False) -> None:
        """Probe the endpoint (typed errors, never llama.cpp's abort), then start a helper that loads
        the model onto the server; wait until it is ready."""
        stall_s()  # a bad $EDGE_SPECENS_RPC_STALL_S is refused before anything starts
        try:
            probe(parse_endpoint(self.endpoint))
        except errors.EndpointError as e:
            if first:
                raise
            self.lost = str(e)
            raise MemberLostError(f"{self.name}: cannot reconnect: {e}", self.endpoint, self.name) from None
        ours, theirs = socket.socketpair()
        self._log = tempfile.NamedTemporaryFile(prefix="edge-specens-rpc-", suffix=".log")
        self._lifeline = Lifeline()
        self._pulse[:] = 0
        with theirs:
            self._helper = spawn(
                [
                    sys.executable,
                    "-m",
                    "edge_specens.remote.helper",
                    str(theirs.fileno()),
                    str(self._buffer_file.fileno()),
                    *self._lifeline.argv(),
                    self.name,  # for ps: which member and server this helper is
                ],
                self._lifeline,
                pass_fds=(theirs.fileno(), self._buffer_file.fileno()),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=None if self.verbose else self._log,
                # GGML_NO_BACKTRACE: llama.cpp's abort would otherwise attach gdb for seconds
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "GGML_NO_BACKTRACE": "1"},
            )
        self._conn = Connection(ours.detach())
        self._conn.send({"path": str(self.path), "options": self.options, "verbose": self.verbose})
        self._pending = -1
        weights = self.path.stat().st_size
        reply = self._reply(lambda: load_silence_s(weights, can_count=self._pulse[1] >= 0), loading=True)
        self._pending = 0
        info = reply[1]
        if info["n_vocab"] != self.n_vocab:
            self._drop()
            raise ModelLoadError(f"{self.name}: the helper reports {info['n_vocab']} tokens, the file {self.n_vocab}")
        self.n_ctx = int(info["n_ctx"])
        self.n_batch = int(info["n_batch"])
        self._n_params = int(info["n_params"])
        self.can_rollback = bool(info["can_rollback"])
        self.tokens = []
        self.lost = None
        self._curve = _calibrated_curve(self)

    def _expected_s(self, n_tokens: int) -> float | None:
        """What a llama_decode of n_tokens should cost: the larger of the calibrated curve's figure
        and the slowest rate measured so far; None before either exists."""
        estimates = [self._slowest_token_s * n_tokens] if self._slowest_token_s else []
        if self._curve is not None:
            estimates.append(self._curve(max(n_tokens, 1)))
        return max(estimates) if estimates else None

    def _call_silence_s(self, n_tokens: int) -> float:
        return call_silence_s(n_tokens, self._expected_s(n_tokens))

    def _ready(self) -> None:
        self._check_open()
        if self._conn is None:
            try:
                self._connect()
            except BaseException:  # e.g. Ctrl-C while the weights upload: start over next time
                self._drop()
                raise
        elif self._pending:  # the answer to a request we stopped waiting for (Ctrl-C): read it, then
            n, self._pending = self._pending, 0  # roll the helper back to what we recorded
            self._reply(self._call_silence_s(n))
            self._request(("truncate", len(self.tokens)))

    def _request(self, message: tuple, n_tokens: int = 1) -> tuple:
        assert self._conn is not None
        try:
            self._conn.send(message)
        except OSError:
            self._lost("the helper process is gone")
        self._pending = n_tokens
        reply = self._reply(self._call_silence_s(n_tokens))
        self._pending = 0
        return reply

    def _reply(self, silence_s: float | Callable[[], float], loading: bool = False) -> tuple:
        """The helper's answer. MemberLostError if the helper died, or if no byte moved on its RPC
        connection (its pulse) for silence_s seconds (a callable: asked again at each look)."""
        assert self._conn is not None and self._helper is not None
        moved, quiet_since = int(self._pulse[0]), time.monotonic()
        while not self._conn.poll(POLL_S):
            if self._helper.poll() is not None:
                self._lost("the connection to the RPC server broke" if not loading else "loading failed")
            now = time.monotonic()
            if self._pulse[0] != moved:
                moved, quiet_since = int(self._pulse[0]), now
            bound = silence_s() if callable(silence_s) else silence_s
            if now - quiet_since > bound:
                self._lost(
                    f"the server went silent: no progress loading the model for {bound:.3g} s"
                    if loading
                    else f"the server went silent: no answer to a decode for {bound:.3g} s"
                )
        try:
            reply = self._conn.recv()
        except (EOFError, OSError):
            self._lost("the connection to the RPC server broke" if not loading else "loading failed")
        if reply[0] == "error":
            kind = getattr(errors, reply[1], errors.EdgeSpecensError)
            if loading:
                self._drop()
            raise kind(reply[2])
        return reply

    def _lost(self, why: str):
        """Kill what is left of the helper, forget the cache, raise MemberLostError."""
        tail = self._log_tail()
        self._drop()
        detail = f" (llama.cpp: {tail})" if tail else ""
        self.lost = f"{why}{detail}"
        raise MemberLostError(
            f"{self.name}: lost the member on RPC server {self.endpoint}: {why}{detail}; the next request reconnects",
            self.endpoint,
            self.name,
        )

    def _drop(self) -> None:
        if self._helper is not None and self._helper.poll() is None:
            self._helper.kill()
        if self._helper is not None:
            self._helper.wait()
        if self._conn is not None:
            self._conn.close()
        if self._log is not None:
            self._log.close()
        if self._lifeline is not None:
            self._lifeline.close()
        self._helper = self._conn = self._log = self._lifeline = None
        self._pending = 0
        self.tokens = []
        self.prompt_cache_stats = None  # the helper's saved prompts died with it

    def _log_tail(self) -> str:
        """The helper's last meaningful line (llama.cpp says why it aborted)."""
        if self._log is None:
            return ""
        try:
            lines = Path(self._log.name).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        lines = [re.sub(r"^\S+\.(?:c|cpp|h):\d+:\s*", "", ln.strip()) for ln in lines if ln.strip()]  # no source path
        return lines[-1][:200] if lines else ""

    # ------------------------------------------------------------------ DecodeMember
    @property
    def n_params(self) -> int:
        return self._n_params

    @property
    def threads(self) -> int:
        return 1  # one local thread waits for the server; its threads are set with rpc-server -t

    @property
    def device(self) -> str:
        return f"rpc:{self.endpoint}"

    def pin_threads(self, n: int | None) -> None:
        """The server's threads are its own (rpc-server -t); nothing to pin here."""
        self._check_open()

    def _decode(self, tokens: Sequence[int], want: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """One request per llama_decode chunk (member._chunks: at most MAX_OUTPUTS rows, which is
        what the shared buffer holds); yields views of the buffer, valid until the next request."""
        start = len(self.tokens)
        if start + len(tokens) > self.n_ctx:
            raise ContextOverflowError(f"{self.name}: {start + len(tokens)} tokens exceed the context of {self.n_ctx}")
        want_set = set(want)
        row_of = {idx: i for i, idx in enumerate(want)}
        for c0, c1 in _chunks(len(tokens), want_set, self.n_batch):
            chunk = [int(t) for t in tokens[c0:c1]]
            outputs = [j for j in range(c0, c1) if j in want_set]
            t0 = time.perf_counter()
            self._request(("eval", chunk, [j - c0 for j in outputs]), len(chunk))
            seconds = time.perf_counter() - t0
            self._slowest_token_s = max(self._slowest_token_s, seconds / len(chunk))
            self.stats.seconds += seconds
            self.stats.calls += 1
            self.stats.tokens += len(chunk)
            self.tokens.extend(chunk)
            for i, idx in enumerate(outputs):
                yield row_of[idx], self._rows[i]

    def truncate(self, n: int) -> None:
        with self._exclusive():
            self._truncate(n)

    def _truncate(self, n: int) -> None:
        if n < len(self.tokens):
            self._request(("truncate", n))
            del self.tokens[n:]

    def reuse_prefix(self, sequence: Sequence[int]) -> int:
        with self._exclusive():
            if self.options.cache_ram > 0:  # the helper's member picks among its saved prompts
                return self._reuse_in_helper([int(t) for t in sequence])
            n = reusable_prefix(self.tokens, sequence, self.can_rollback)
            self._truncate(n)
        return n

    def _reuse_in_helper(self, sequence: list[int]) -> int:
        """The helper keeps sequence[:n] (its live cache or a restored saved state) and says n. Until it
        answers the cache counts as empty: after a Ctrl-C while waiting, _ready rolls the helper back to
        what we recorded, and a restored state is no prefix of what we held before."""
        self.tokens = []
        reply = self._request(("reuse", sequence), max(len(sequence), 1))
        n = int(reply[2])
        self.prompt_cache_stats = reply[3]
        self.tokens = sequence[:n]
        return n

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._closed:
            return
        with self._busy:
            self._closed = True
            # a helper busy with a request (or the load) would read "close" only when the server
            # answers, maybe never: it is killed at once (_drop); an idle one closes its context
            conn, helper = self._conn, self._helper
            if not self._pending and conn is not None and helper is not None and helper.poll() is None:
                try:
                    conn.send(("close",))
                    helper.wait(timeout=CLOSE_WAIT_S)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self._drop()
            del self._rows, self._pulse  # views of the buffer: it cannot close while they live
            self._buffer.close()
            self._buffer_file.close()
            self.model.close()


def _calibrated_curve(member: RemoteMember):
    """The member's calibrated cost curve if `auto` measured one (auto/calibrate.py), else None."""
    try:
        from ..auto.calibrate import load_cached

        return load_cached(member)
    except Exception:  # a cache we cannot read only means the uncalibrated bound
        return None


def _shared_file(size: int):
    """A file both processes map for the logits rows: in memory (memfd) where Linux offers it."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("edge-specens-rows")
        f = open(fd, "r+b")
    else:
        f = tempfile.TemporaryFile()
    f.truncate(size)
    return f
