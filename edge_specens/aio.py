"""asyncio faces of the facade: Ensemble.agenerate / astream / acreate_chat_completion.

llama.cpp work blocks, so it runs on a worker thread of the event loop's default executor and the
loop stays free (a desktop app's UI keeps drawing, a server keeps accepting). Streams pass each item
to the loop as it is produced; closing the async iterator (or leaving an `async for` early) stops the
generation within one token and waits until the ensemble is free again, so nothing is left half done.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


async def run_in_thread(fn: Callable[[], T]) -> T:
    """fn() on the loop's default executor; the caller awaits without blocking the loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


async def iterate_in_thread(make: Callable[[threading.Event], Iterator[T]]) -> AsyncIterator[T]:
    """The items of make(stop)'s iterator, produced on a worker thread. `stop` is set when the
    consumer leaves early: the producer stops at its next item (and make may pass it on as a
    cancellation event, so a long prompt stops too)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
    stop = threading.Event()

    def put(item: Any, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))
        except RuntimeError:  # the loop is gone: nobody is listening any more
            stop.set()

    def pump() -> None:
        it = None
        try:
            it = make(stop)
            for item in it:
                if stop.is_set():
                    break
                put(item)
        except BaseException as e:  # handed to the consumer, raised there
            put(_END, e)
            return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        put(_END)

    done = loop.run_in_executor(None, pump)
    try:
        while True:
            item, error = await queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        await done  # the generation has ended and the ensemble is free again
