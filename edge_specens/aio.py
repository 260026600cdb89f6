"""asyncio faces of the facade: Ensemble.agenerate / astream / acreate_chat_completion.

llama.cpp work blocks, so it runs on a worker thread of the event loop's default executor and the
loop stays free (a desktop app's UI keeps drawing, a server keeps accepting). What the caller
abandons stops generating:

- A cancelled call (`asyncio.wait_for` timing out, `task.cancel()`, `asyncio.run()` ending with the
  call in flight) sets the generation's cancel event: it stops within one token (or one prompt
  chunk), also while it still waits for the ensemble, and the cancellation itself does not wait.
- A stream's worker produces at most one piece ahead of its reader and then waits for the reader
  to ask for more, so a stream nobody reads does not run on to max_tokens. Closing it (`aclose()`,
  leaving a temporary `async for` early, garbage collection, the loop shutting down) stops it.
- Python does not tell a held stream that its reader stopped (`agen = ens.astream(...)`, then
  `async for p in agen: break` keeps `agen` open). So the next call on the ensemble decides: a call
  from the asyncio task that last read the stream supersedes it at once (its next read raises
  GenerationSupersededError), as a new generation on one thread supersedes that thread's unfinished
  stream in the sync API; a call from anywhere else (another task, another thread) waits for it, and
  the stream then runs ahead of its reader to its end, so an unread stream cannot block others.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from .errors import GenerationSupersededError

T = TypeVar("T")
_END = object()
AHEAD = 1  # pieces a stream's worker may produce beyond the one its reader asked for
_POLL_S = 0.5  # how often a waiting worker checks that its event loop still exists


def caller_task() -> asyncio.Task | None:
    """The asyncio task this code runs in, or None outside a running event loop."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class Producer:
    """A stream's worker-thread side: what its reader allows it to produce, and who reads it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: asyncio.Task | None):
        self.loop = loop
        self.owner = owner  # the task that last read the stream (a new call from it supersedes it)
        self.stop = threading.Event()  # also the generation's cancel event
        self.superseded = False
        self._cond = threading.Condition()
        self._credits = 0  # pieces the reader allows, beyond those already produced
        self._free = False  # someone else waits for the ensemble: run to the end without waiting

    def allow(self, n: int = 1) -> None:
        with self._cond:
            self._credits += n
            self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._free = True
            self._cond.notify_all()

    def supersede(self) -> None:
        with self._cond:
            self.superseded = True
            self.stop.set()
            self._cond.notify_all()

    def halt(self) -> None:
        with self._cond:
            self.stop.set()
            self._cond.notify_all()

    def may_produce(self) -> bool:
        """Wait until the reader allows another piece (or the stream is released); False once it
        must stop: closed, superseded, or its event loop is gone."""
        with self._cond:
            while not (self._free or self._credits > 0 or self.stop.is_set()):
                if self.loop.is_closed():
                    self.stop.set()
                    break
                self._cond.wait(_POLL_S)
            if self.stop.is_set():
                return False
            if not self._free:
                self._credits -= 1
            return True


class Streams:
    """The async streams of one ensemble that are running or waiting for their readers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: weakref.WeakSet[Producer] = weakref.WeakSet()

    def add(self, p: Producer) -> None:
        with self._lock:
            self._live.add(p)

    def discard(self, p: Producer) -> None:
        with self._lock:
            self._live.discard(p)

    def claim(self, owner: asyncio.Task | None) -> None:
        """A new call is about to take the ensemble: streams last read by `owner` (the caller's task)
        (or by a task that has finished) are superseded; any other stream is released to run to its end
        without its reader."""
        with self._lock:
            live = list(self._live)
        for p in live:
            if (owner is not None and p.owner is owner) or (p.owner is not None and p.owner.done()):
                p.supersede()
            else:
                p.release()


def _superseded() -> GenerationSupersededError:
    return GenerationSupersededError(
        "a newer call on this ensemble, from the task that was reading this stream, superseded it "
        "(close a stream with aclose() before starting another, or read it to its end)"
    )


async def run_in_thread(fn: Callable[[threading.Event], T]) -> T:
    """fn(cancel) on the loop's default executor; the caller awaits without blocking the loop. If
    the awaiting task is cancelled, `cancel` is set (fn passes it on as the generation's cancel
    event) and the CancelledError goes on at once: the worker stops by itself within a token."""
    cancel = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(None, fn, cancel)
    try:
        return await future
    except asyncio.CancelledError:
        cancel.set()
        raise


async def iterate_in_thread(
    make: Callable[[threading.Event], Iterator[T]],
    streams: Streams | None = None,
    owner: asyncio.Task | None = None,
) -> AsyncIterator[T]:
    """The items of make(stop)'s iterator, produced on a worker thread at most AHEAD items ahead of
    the reader. `stop` is set when the stream is closed or superseded (make passes it on as the
    generation's cancel event, so a long prompt or a wait for the ensemble stops too). `streams`:
    the ensemble's registry, through which the next call supersedes or releases this stream; `owner`:
    the task that asked for the stream (default: the one that first reads it)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
    producer = Producer(loop, owner or caller_task())
    if streams is not None:
        streams.claim(producer.owner)  # this task's own unread streams give way to this one

    def put(item: Any, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))
        except RuntimeError:  # the loop is gone: nobody is listening any more
            producer.halt()

    def pump() -> None:
        it = None
        try:
            it = make(producer.stop)
            if streams is not None:
                streams.add(producer)
            while producer.may_produce():
                try:
                    item = next(it)
                except StopIteration:
                    break
                put(item)
        except BaseException as e:  # handed to the reader, raised there
            put(_END, _superseded() if producer.superseded else e)
            return
        finally:
            if streams is not None:
                streams.discard(producer)
            close = getattr(it, "close", None)
            if close is not None:
                close()  # the generation ends here (a superseded one before the newer call starts)
        put(_END, _superseded() if producer.superseded else None)

    producer.allow(1 + AHEAD)
    done = loop.run_in_executor(None, pump)
    try:
        while True:
            item, error = await queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
            producer.owner = caller_task()  # the reader asks for more: from this task
            producer.allow()
    finally:
        producer.halt()
        await done  # the generation has ended and the ensemble is free again
