"""A thread per member, so members decode side by side (docs/design.md §10).

llama-cpp-python's ctypes calls release the GIL, so two llama_decode calls on two contexts
run at once when two threads make them. Each member gets one worker: a one-thread executor,
so its jobs run in order, one at a time. A strategy submits jobs (futures) and gathers them.

The rule that keeps every KV cache consistent: at any moment at most one thread touches a
member. A member's jobs run on its worker; the controller (the thread iterating the
generation) touches a member only between jobs, because `gather` returns only once every job
it was given has finished, also when it is interrupted (Ctrl-C) or a job failed. Jobs are
short (one batch of at most member.MAX_OUTPUTS rows, or a few drafts), so Ctrl-C waits at most
one round, about as long as it waited for one llama_decode before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any


class MemberWorkers:
    """One lazily started worker thread per member; `close` joins them all."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self._pools: list[ThreadPoolExecutor | None] = [None] * len(self.names)
        self._lock = threading.Lock()
        self._closed = False
        self.wait_seconds = 0.0  # time the controller spent waiting in gather (its decode time)

    def submit(self, k: int, fn: Callable[..., Any], *args: Any) -> Future:
        """Run fn(*args) on member k's worker; the future holds its result or its exception."""
        with self._lock:
            if self._closed:
                from .errors import EnsembleClosedError

                raise EnsembleClosedError("the ensemble is closed")
            pool = self._pools[k]
            if pool is None:
                pool = self._pools[k] = ThreadPoolExecutor(1, thread_name_prefix=f"edge-specens-{self.names[k]}")
        return pool.submit(fn, *args)

    def gather(self, futures: Sequence[Future], on_interrupt: Callable[[], None] | None = None) -> list:
        """Every job's result, in order, once all have finished. A job's exception is raised (the
        first in order) only after the others finished too; an interrupt of the wait (Ctrl-C) calls
        on_interrupt (say, to stop a long prefill early), waits for the jobs, then propagates."""
        t0 = time.perf_counter()
        try:
            wait(futures)
        except BaseException:
            if on_interrupt is not None:
                on_interrupt()
            _wait_through_interrupts(futures)
            raise
        finally:
            self.wait_seconds += time.perf_counter() - t0
        return [f.result() for f in futures]

    @property
    def threads(self) -> int:
        """Worker threads alive now."""
        return sum(1 for p in self._pools if p is not None)

    def close(self) -> None:
        """Join every worker (a running job finishes first); later submits raise EnsembleClosedError."""
        with self._lock:
            self._closed = True
            pools, self._pools = self._pools, [None] * len(self.names)
        for p in pools:
            if p is not None:
                p.shutdown(wait=True, cancel_futures=True)


def _wait_through_interrupts(futures: Sequence[Future]) -> None:
    """Wait for the jobs even through further Ctrl-Cs: returning while a job still decodes would
    let the controller touch that member concurrently (a second Ctrl-C is raised afterwards)."""
    again = False
    while True:
        try:
            wait(futures)
            break
        except KeyboardInterrupt:
            again = True
    if again:
        raise KeyboardInterrupt


class Inline:
    """MemberWorkers' interface, run on the calling thread in submission order: the same jobs,
    one after the other (a run that must not start threads gives the same tokens)."""

    wait_seconds = 0.0
    threads = 0

    def submit(self, k: int, fn: Callable[..., Any], *args: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except Exception as e:  # Ctrl-C and the like propagate at once, as in sequential decoding
            f.set_exception(e)
        return f

    def gather(self, futures: Sequence[Future], on_interrupt: Callable[[], None] | None = None) -> list:
        return [f.result() for f in futures]

    def close(self) -> None:
        pass
