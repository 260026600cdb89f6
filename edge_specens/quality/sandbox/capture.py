"""Talking to the child without trusting it: bounded output, a deadline, and a secret-free detail line.

A program may write gigabytes to stdout or stderr; the parent keeps only the first and the last few
KiB of each stream (the middle is counted, not stored), so its memory stays flat whatever the child
writes. stdin (the request) is written, and every pipe read, from one loop with one deadline, so a
child that stops reading or never closes its pipes cannot hang the eval.
"""

from __future__ import annotations

import os
import re
import selectors
import time
from collections.abc import Mapping

HEAD_BYTES = 4096
TAIL_BYTES = 4096
DETAIL_CHARS = 200
CHUNK = 1 << 16


class Bounded:
    """The first `head` and the last `tail` bytes of a stream, and its total length."""

    def __init__(self, head: int = HEAD_BYTES, tail: int = TAIL_BYTES):
        self.head_limit, self.tail_limit = head, tail
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> str:
        """Head and tail, with how much was left out between them."""
        left_out = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {left_out} bytes left out ...]\n".encode() if left_out > 0 else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", "replace")

    def last(self) -> bytes:
        """The stream's end (what is kept of it)."""
        return bytes(self.tail) if self.tail else bytes(self.head)


def exchange(proc, request: bytes, streams: dict[int, Bounded], deadline: float, grace: float = 0.5) -> bool:
    """Write `request` to proc's stdin, read every fd in `streams` (keys are file descriptors the
    parent owns) until all of them close, or the process has ended and `grace` seconds passed (a
    grandchild may hold them open), or the deadline. Returns False when the deadline struck first."""
    sel = selectors.DefaultSelector()
    stdin = proc.stdin.fileno() if proc.stdin else None
    pending = memoryview(request)
    if stdin is not None:
        os.set_blocking(stdin, False)
        sel.register(stdin, selectors.EVENT_WRITE)
    for fd in streams:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    ended_at = None
    try:
        while any(fd in sel.get_map() for fd in streams):
            now = time.monotonic()
            if now >= deadline:
                return False
            if ended_at is None and proc.poll() is not None:
                ended_at = now
            if ended_at is not None and now - ended_at > grace:
                return True
            for key, _ in sel.select(timeout=min(0.1, deadline - now)):
                fd = key.fd
                if fd == stdin:
                    try:
                        n = os.write(fd, pending[:CHUNK])
                        pending = pending[n:]
                    except BlockingIOError:
                        continue
                    except OSError:  # the child closed its stdin (or died): nothing more to say
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                try:
                    data = os.read(fd, CHUNK)
                except BlockingIOError:
                    continue
                if data:
                    streams[fd].add(data)
                else:
                    sel.unregister(fd)
        return True
    finally:
        sel.close()
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASS|AUTH|CREDENTIAL|COOKIE|SESSION|PRIVATE", re.IGNORECASE)


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The values of this process's environment variables whose names say they hold secrets."""
    found = os.environ if env is None else env
    return sorted({v for k, v in found.items() if _SECRET_NAME.search(k) and len(v) >= 6}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret value replaced, and control characters (but newlines) dropped."""
    for s in secrets:
        text = text.replace(s, "[redacted]")
    return "".join(c for c in text if c == "\n" or c == "\t" or c.isprintable())


def detail_line(stderr: Bounded, secrets: list[str]) -> str:
    """The last non-empty line of stderr, trimmed and scrubbed: what eval.json keeps of a failure."""
    lines = [ln for ln in stderr.last().decode("utf-8", "replace").splitlines() if ln.strip()]
    line = scrub(lines[-1], secrets).strip() if lines else ""
    return line if len(line) <= DETAIL_CHARS else line[: DETAIL_CHARS - 1] + "…"
