"""Queueing a Job and following its messages, for the routers beside the OpenAI one (Ollama, /infill).

Each API words its errors its own way; what a request goes through is the same as on /v1 (app.py's
`run`): a full queue or a stopping server is refused at once, a client that leaves while its job
waits or runs cancels it, and a stream's job is cancelled however the response ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from .app import RETRY_AFTER_S, _ClientGone, _JobStream, _next_message
from .worker import Job, QueueFullError, ServerClosedError

JobStream = _JobStream  # a StreamingResponse that cancels its job however the response ends


class Refused(Exception):
    """The job was not queued: status, message and headers for the API's own error shape."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def submit(worker, job: Job) -> None:
    """Queue the job or raise Refused (503: the queue is full, with Retry-After; or the server stops)."""
    try:
        worker.submit(job)
    except QueueFullError as e:
        raise Refused(503, f"the server is busy ({e}); retry shortly", {"Retry-After": str(RETRY_AFTER_S)}) from None
    except ServerClosedError as e:
        raise Refused(503, str(e)) from None


async def until(worker, job: Job, request: Request, kinds: tuple[str, ...]) -> tuple[str, Any] | None:
    """The job's next message of one of `kinds` (or an error); None when the client left meanwhile
    (the job is then withdrawn: a waiting one leaves the queue at once)."""
    try:
        while True:
            kind, value = await _next_message(job, request)
            if kind in kinds or kind == "error":
                return kind, value
    except _ClientGone:
        worker.withdraw(job)
        return None
    except BaseException:
        worker.withdraw(job)
        raise


async def stream_messages(job: Job) -> AsyncIterator[tuple[str, Any]]:
    """Every message after "start" up to and including "done" or "error"; the job is cancelled when
    the consumer stops early (the client went away)."""
    try:
        while True:
            kind, value = await job.messages.get()
            yield kind, value
            if kind in ("done", "error"):
                return
    finally:
        job.cancel.set()
