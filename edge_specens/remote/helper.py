"""The helper process of a remote member: it owns the member's llama.cpp context, whose weights
live on an RPC server, and decodes for the controller (remote/member.py).

Why a process: llama.cpp aborts the process that holds an RPC connection when the server dies
(RPC_STATUS_ASSERT -> GGML_ABORT). Here that kills this helper only; the controller sees the pipe
close and raises MemberLostError. Logits rows come back through a shared buffer (mmap of a file
descriptor both processes hold), not through the pipe: a row is 0.6 MB at a 152k vocabulary.

Run as `python -m edge_specens.remote.helper FD BUFFER_FD` (both inherited descriptors): FD is a
socket to the controller, carrying pickled messages (multiprocessing.connection framing):
  setup     {"path", "options": MemberOptions, "verbose"} -> ("ready", info) | ("error", type, text)
  ("eval", tokens, want)   -> ("ok", seconds)  rows in want's order at the start of the buffer
  ("truncate", n)          -> ("ok", 0.0)
  ("close",)               -> the helper exits
"""

from __future__ import annotations

import mmap
import resource
import signal
import sys
import time
from multiprocessing.connection import Connection

import numpy as np


def serve(conn: Connection, buffer: mmap.mmap) -> None:
    from ..errors import EdgeSpecensError
    from ..member import Member

    setup = conn.recv()
    try:
        member = Member(setup["path"], setup["options"], verbose=setup["verbose"])
    except EdgeSpecensError as e:
        conn.send(("error", type(e).__name__, str(e)))
        return
    rows = np.frombuffer(buffer, dtype=np.float32)
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
            if kind == "eval":
                _, tokens, want = message
                if len(want) > capacity:
                    raise ValueError(f"{len(want)} rows asked, the buffer holds {capacity}")
                for i, row in member._decode(tokens, want):
                    rows[i] = row
            elif kind == "truncate":
                member.truncate(message[1])
            else:
                raise ValueError(f"unknown request {kind!r}")
            conn.send(("ok", time.perf_counter() - t0))
        except EdgeSpecensError as e:
            conn.send(("error", type(e).__name__, str(e)))


def main(argv: list[str]) -> None:
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
