"""A member whose weights run on another machine's RPC server (llama.cpp's ggml-rpc).

The controller keeps only the vocabulary (a vocab-only llama.cpp model: tokenize, pieces,
end-of-generation) and the token bookkeeping; a helper process (remote/helper.py) owns the
llama.cpp context whose layers live on the server. Each llama_decode is one request to the
helper, which answers with the wanted logits rows in a shared buffer. If the helper dies (llama.cpp
aborts it when the server goes away) or stops answering, this member raises MemberLostError and
forgets its cache; the next request starts a new helper, which reconnects.

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
from collections.abc import Iterator, Sequence
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
    _ctrl_c_after_loading,
    _llama,
    reusable_prefix,
)
from .backend import require_rpc
from .endpoint import parse_endpoint, probe

LOAD_TIMEOUT_S = 1800.0  # the weights cross the network at load: 1 GB over 100 Mbit/s is ~90 s
CALL_TIMEOUT_S = 300.0  # one llama_decode (at most n_batch tokens); a server silent this long is lost


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
        self._pending = False  # a request whose answer was not read (Ctrl-C while waiting)
        self.lost: str | None = None  # why the server was lost, until a reconnect succeeds (/health)
        size = MAX_OUTPUTS * self.n_vocab * 4
        self._buffer_file = _shared_file(size)
        self._buffer = mmap.mmap(self._buffer_file.fileno(), size)
        self._rows = np.frombuffer(self._buffer, dtype=np.float32).reshape(MAX_OUTPUTS, self.n_vocab)
        self._closed = False
        try:
            with _ctrl_c_after_loading():
                self._connect(first=True)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ the helper
    def _connect(self, first: bool = False) -> None:
        """Probe the endpoint (typed errors, never llama.cpp's abort), then start a helper that loads
        the model onto the server; wait until it is ready."""
        try:
            probe(parse_endpoint(self.endpoint))
        except errors.EndpointError as e:
            if first:
                raise
            self.lost = str(e)
            raise MemberLostError(f"{self.name}: cannot reconnect: {e}", self.endpoint, self.name) from None
        ours, theirs = socket.socketpair()
        self._log = tempfile.NamedTemporaryFile(prefix="edge-specens-rpc-", suffix=".log")
        with theirs:
            self._helper = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_specens.remote.helper",
                    str(theirs.fileno()),
                    str(self._buffer_file.fileno()),
                ],
                pass_fds=(theirs.fileno(), self._buffer_file.fileno()),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=None if self.verbose else self._log,
                # GGML_NO_BACKTRACE: llama.cpp's abort would otherwise attach gdb for seconds
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "GGML_NO_BACKTRACE": "1"},
            )
        self._conn = Connection(ours.detach())
        self._conn.send({"path": str(self.path), "options": self.options, "verbose": self.verbose})
        reply = self._reply(LOAD_TIMEOUT_S, loading=True)
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

    def _ready(self) -> None:
        self._check_open()
        if self._conn is None:
            try:
                self._connect()
            except BaseException:  # e.g. Ctrl-C while the weights upload: start over next time
                self._drop()
                raise
        elif self._pending:  # the answer to a request we stopped waiting for (Ctrl-C): read it, then
            self._pending = False  # roll the helper back to what we recorded
            self._reply(CALL_TIMEOUT_S)
            self._request(("truncate", len(self.tokens)))

    def _request(self, message: tuple) -> tuple:
        assert self._conn is not None
        try:
            self._conn.send(message)
        except OSError:
            self._lost("the helper process is gone")
        self._pending = True
        reply = self._reply(CALL_TIMEOUT_S)
        self._pending = False
        return reply

    def _reply(self, timeout: float, loading: bool = False) -> tuple:
        """The helper's answer; MemberLostError if it died or stayed silent for `timeout` seconds."""
        assert self._conn is not None and self._helper is not None
        deadline = time.monotonic() + timeout
        while not self._conn.poll(0.5):
            if self._helper.poll() is not None:
                self._lost("the connection to the RPC server broke" if not loading else "loading failed")
            if time.monotonic() > deadline:
                self._lost(f"no answer within {timeout:g} s")
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
        self._helper = self._conn = self._log = None
        self._pending = False
        self.tokens = []

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
            self._request(("eval", chunk, [j - c0 for j in outputs]))
            self.stats.seconds += time.perf_counter() - t0
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
            n = reusable_prefix(self.tokens, sequence, self.can_rollback)
            self._truncate(n)
        return n

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._closed:
            return
        with self._busy:
            self._closed = True
            if self._conn is not None and self._helper is not None and self._helper.poll() is None:
                try:
                    self._conn.send(("close",))
                    self._helper.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self._drop()
            del self._rows
            self._buffer.close()
            self._buffer_file.close()
            self.model.close()


def _shared_file(size: int):
    """A file both processes map for the logits rows: in memory (memfd) where Linux offers it."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("edge-specens-rows")
        f = open(fd, "r+b")
    else:
        f = tempfile.TemporaryFile()
    f.truncate(size)
    return f
