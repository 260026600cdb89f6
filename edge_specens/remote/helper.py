"""The helper process of a remote member: it owns the member's llama.cpp context, whose weights
live on an RPC server, and decodes for the controller (remote/member.py).

Why a process: llama.cpp aborts the process that holds an RPC connection when the server dies
(RPC_STATUS_ASSERT -> GGML_ABORT). Here that kills this helper only; the controller sees the pipe
close and raises MemberLostError. Logits rows come back through a shared buffer (mmap of a file
descriptor both processes hold), not through the pipe: a row is 0.6 MB at a 152k vocabulary.

The helper dies with the controller, however it died (lifeline.py: PR_SET_PDEATHSIG and a lifeline
pipe): an orphan would keep the RPC server busy, and llama.cpp's server serves one client at a time.

The last PULSE_BYTES of the shared buffer are the helper's pulse, which NetworkWatch updates every
PULSE_S: pulse[0] counts the bytes llama.cpp's RPC connection has moved (sent and acknowledged by
the server, plus received from it; TCP_INFO, Linux), pulse[1] says whether it can count (0 not yet,
1 yes, -1 not on this system). The controller reads it to tell a slow load or decode (bytes move)
from a server that went silent (none do). NetworkWatch also turns TCP keep-alive on for that
connection, so a server whose host vanished without closing it (powered off, cable pulled) breaks
the connection within ~25 s instead of never.

Run as `python -m edge_specens.remote.helper FD BUFFER_FD LIFELINE_FD PARENT_PID [NAME]` (inherited
descriptors; NAME is the member's name, for `ps`): FD is a socket to the controller, carrying pickled
messages (multiprocessing.connection framing):
  setup     {"path", "options": MemberOptions, "verbose"} -> ("ready", info) | ("error", type, text)
  ("eval", tokens, want)   -> ("ok", seconds)  rows in want's order at the start of the buffer
  ("truncate", n)          -> ("ok", 0.0)
  ("reuse", tokens)        -> ("ok", seconds, n, PromptCacheStats | None)  Member.reuse_prefix: the
                              helper's member keeps tokens[:n], maybe from a saved prompt (prompt_cache.py)
  ("close",)               -> the helper exits
"""

from __future__ import annotations

import mmap
import os
import resource
import signal
import socket
import stat
import struct
import sys
import threading
import time
from multiprocessing.connection import Connection

import numpy as np

from .lifeline import die_with_parent

PULSE_BYTES = 64  # at the end of the shared buffer: int64 [bytes moved, can count]
PULSE_S = 0.25
# TCP keep-alive on the RPC connection: first probe after 10 s of silence, then every 5 s, 3 misses
KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPALIVE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
_FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
_TCP_INFO_BYTES = 136  # struct tcp_info up to tcpi_bytes_received (Linux >= 4.2)


def pulse_of(buffer: mmap.mmap) -> np.ndarray:
    """The pulse slot of the shared buffer (both processes)."""
    return np.frombuffer(buffer, dtype=np.int64, count=2, offset=len(buffer) - PULSE_BYTES)


class NetworkWatch(threading.Thread):
    """Counts what llama.cpp's connections to `endpoint` move, into the pulse (see the module doc).
    llama.cpp opens them itself, so they are found among this process's descriptors by their peer."""

    def __init__(self, endpoint: str, pulse: np.ndarray):
        super().__init__(name="edge-specens-network-watch", daemon=True)
        host, _, port = endpoint.rpartition(":")
        try:
            infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
        except (OSError, ValueError):
            infos = []
        self.peers = {(str(i[4][0]), int(port)) for i in infos}
        self.pulse = pulse
        self._last: dict[tuple, int] = {}  # (fd, local address) -> its count at the last look

    def run(self) -> None:
        if not hasattr(socket, "TCP_INFO"):
            self.pulse[1] = -1  # the controller falls back to bounds without progress
            return
        while True:
            try:
                self.look()
            except OSError:
                pass  # a connection closed while we looked: the next look counts the rest
            time.sleep(PULSE_S)

    def look(self) -> None:
        moved = 0
        for key, sock in self._connections():
            with sock:
                if key not in self._last:
                    keep_alive(sock)
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
                if len(info) < _TCP_INFO_BYTES:
                    self.pulse[1] = -1
                    return
                acked, received = struct.unpack_from("<QQ", info, 120)  # tcpi_bytes_acked, tcpi_bytes_received
                count = acked + received
                moved += max(0, count - self._last.get(key, 0))
                self._last[key] = count
                self.pulse[1] = 1
        self.pulse[0] += moved

    def _connections(self):
        """(key, a duplicate socket) for each TCP connection to the endpoint."""
        for name in os.listdir(_FD_DIR):
            try:
                fd = int(name)
                if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                    continue
                sock = socket.socket(fileno=os.dup(fd))
            except (ValueError, OSError):
                continue
            try:
                if sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM:
                    if sock.getpeername() in self.peers:
                        yield (fd, sock.getsockname()), sock
                        continue
            except OSError:
                pass
            sock.close()


def keep_alive(sock: socket.socket) -> None:
    """TCP keep-alive with short timers (KEEPALIVE), where the system has the options."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in KEEPALIVE:
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    except OSError:
        pass


def serve(conn: Connection, buffer: mmap.mmap) -> None:
    from ..errors import EdgeSpecensError
    from ..member import Member

    setup = conn.recv()
    NetworkWatch(setup["options"].rpc, pulse_of(buffer)).start()
    try:
        member = Member(setup["path"], setup["options"], verbose=setup["verbose"])
    except EdgeSpecensError as e:
        conn.send(("error", type(e).__name__, str(e)))
        return
    rows = np.frombuffer(buffer, dtype=np.float32, count=(len(buffer) - PULSE_BYTES) // 4)
    capacity = len(rows) // member.n_vocab
    rows = rows[: capacity * member.n_vocab].reshape(capacity, member.n_vocab)
    conn.send(
        (
            "ready",
            {
                "n_vocab": member.n_vocab,
                "n_ctx": member.n_ctx,
                "n_batch": member.n_batch,
                "n_params": member.n_params,
                "can_rollback": member.can_rollback,
            },
        )
    )
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the controller is gone
        kind = message[0]
        if kind == "close":
            member.close()
            return
        try:
            t0 = time.perf_counter()
            extra: tuple = ()
            if kind == "eval":
                _, tokens, want = message
                if len(want) > capacity:
                    raise ValueError(f"{len(want)} rows asked, the buffer holds {capacity}")
                for i, row in member._decode(tokens, want):
                    rows[i] = row
            elif kind == "truncate":
                member.truncate(message[1])
            elif kind == "reuse":
                extra = (member.reuse_prefix(message[1]), member.prompt_cache_stats)
            else:
                raise ValueError(f"unknown request {kind!r}")
            conn.send(("ok", time.perf_counter() - t0, *extra))
        except EdgeSpecensError as e:
            conn.send(("error", type(e).__name__, str(e)))


def main(argv: list[str]) -> None:
    die_with_parent(int(argv[2]), int(argv[3]))  # first: the controller may be gone already
    # Ctrl-C in a terminal reaches the whole process group: the controller decides, not us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # llama.cpp's abort on a lost server must not leave a core file behind
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    conn = Connection(int(argv[0]))
    with open(int(argv[1]), "r+b") as f:
        buffer = mmap.mmap(f.fileno(), 0)
    serve(conn, buffer)


if __name__ == "__main__":
    main(sys.argv[1:])
