"""The one thread that owns the ensemble: requests wait in a bounded FIFO queue and run one at a time.

The ensemble (its members' llama.cpp contexts and KV caches) is not thread-safe, so HTTP handlers
never touch it: they wrap a request in a `Job` and hand it to the `Worker`. The worker renders and
tokenizes the prompt, runs the generation and reports back to the handler's event loop through the
job's asyncio queue:

    ("start", prompt_tokens)   the prompt was accepted, tokens follow
    ("logprobs", [TokenLogprob])  the logprobs of the tokens the next piece releases (stream jobs
                               that asked for them; after the last piece: tokens whose text was held back)
    ("provenance", [span])     where the tokens the next piece releases came from (stream jobs that
                               asked for it: provenance.py)
    ("piece", text)            streamed text (stream jobs only)
    ("done", GenerationResult) finished (also after a cancel: the partial result)
    ("error", exception)       nothing more follows

A job's `cancel` flag (set when its client disconnects) is checked between tokens and between the
n_batch chunks of a long prompt; the generation
iterator is then closed, which rolls the members back to a consistent cache at once, so the next
request in the queue starts promptly (and still reuses the shared KV prefix).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import MemberLostError
from .metrics import Totals
from .provenance import Provenance

log = logging.getLogger("edge_specens.server")


class QueueFullError(Exception):
    """More requests are waiting than the queue holds."""


class ServerClosedError(Exception):
    """The server is shutting down."""


class Job:
    """One request on its way through the worker."""

    def __init__(
        self,
        make_prompt: Callable[[Any], Any],
        gen_kw: dict,
        stream: bool,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        self.make_prompt = make_prompt  # ens -> prompt (text or token ids); runs on the worker thread
        self.gen_kw = gen_kw
        self.stream = stream
        self.loop = loop or asyncio.get_running_loop()
        self.messages: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()
        self.shutdown = False  # cancelled because the server is stopping: ends with an error, not "done"
        self.created = time.monotonic()
        self.provenance = False  # stream where each token came from (the request's "provenance")

    def emit(self, kind: str, value: Any = None) -> None:
        """Called on the worker thread: deliver one message to the handler's event loop."""
        try:
            self.loop.call_soon_threadsafe(self.messages.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancel.set()


class Worker:
    """Owns the ensemble; runs queued jobs in arrival order on one daemon thread."""

    def __init__(self, ens, max_queue: int = 64):
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.ens = ens
        self.max_queue = max_queue
        # waiting jobs, oldest first; a job whose client left is taken out at once (withdraw), so
        # it neither holds a slot nor counts as waiting
        self._pending: collections.deque[Job | None] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closing = False
        self.current: Job | None = None
        self.completed = 0
        self.cancelled = 0
        self.failed = 0
        self.totals = Totals()  # tokens, seconds and drafts of every generation (GET /metrics)

    # ------------------------------------------------------------------ control (any thread)
    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._closing = False
                self._thread = threading.Thread(target=self._run, name="edge-specens-worker", daemon=True)
                self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def waiting(self) -> int:
        with self._cond:
            return sum(1 for j in self._pending if j is not None)

    def submit(self, job: Job) -> None:
        """Queue a job, or raise QueueFullError / ServerClosedError at once (never blocks)."""
        if self._closing:
            raise ServerClosedError("the server is shutting down")
        self.start()
        with self._cond:
            if sum(1 for j in self._pending if j is not None) >= self.max_queue:
                raise QueueFullError(f"{self.max_queue} requests are already waiting")
            self._pending.append(job)
            self._cond.notify()

    def withdraw(self, job: Job) -> None:
        """The job's client left: cancel it, and if it is still waiting take it out of the queue now."""
        job.cancel.set()
        with self._cond:
            try:
                self._pending.remove(job)
            except ValueError:
                return  # running or done: the cancel flag stops it
            self.cancelled += 1

    def begin_shutdown(self) -> None:
        """The server is stopping (SIGINT/SIGTERM): refuse new jobs, stop the running one within one
        decode step and fail it and every waiting one with ServerClosedError (503 / an error event),
        so that open streams end at once instead of being cut when the server's grace period runs out."""
        self._closing = True
        cur = self.current
        if cur is not None:
            cur.shutdown = True
            cur.cancel.set()
        with self._cond:
            waiting = [j for j in self._pending if j is not None]
            self._pending = collections.deque(j for j in self._pending if j is None)
        for job in waiting:
            job.cancel.set()
            job.emit("error", ServerClosedError("the server is shutting down"))

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running job, fail the waiting ones, and end the thread."""
        self.begin_shutdown()
        with self._cond:
            self._pending.append(None)  # tells the thread to end
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)

    # ------------------------------------------------------------------ the worker thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                job = self._pending.popleft()
            if job is None:
                return
            if job.cancel.is_set():  # the client left while waiting
                self.cancelled += 1
                continue
            self.current = job
            try:
                self._serve(job)
            except BaseException as e:  # never let one request kill the worker
                log.exception("request failed")
                self.failed += 1
                job.emit("error", e)
            finally:
                self.current = None

    def _serve(self, job: Job) -> None:
        ens = self.ens
        try:
            prompt = job.make_prompt(ens)
            gen = ens.events(prompt, cancel=job.cancel, **job.gen_kw)  # cancel reaches into the prefill
        except Exception as e:  # bad parameters, prompt too long, ...: nothing was generated
            self.failed += 1
            job.emit("error", e)
            return
        job.emit("start", len(gen.prompt))
        it = iter(gen)
        error: BaseException | None = None
        held: list = []  # logprobs of tokens whose text has not gone out yet
        origins = Provenance(ens, gen) if job.stream and job.provenance else None
        try:
            for ev in it:
                if job.cancel.is_set():
                    break
                spans = origins.add(ev) if origins is not None else None
                if job.stream and ev.step.logprob is not None:
                    held.append(ev.step.logprob)
                if job.stream and ev.text:
                    if held:
                        job.emit("logprobs", held)
                        held = []
                    if spans:
                        job.emit("provenance", spans)
                    job.emit("piece", ev.text)
        except MemberLostError as e:  # a remote member's server went away: one line, not a traceback
            log.warning("generation failed: %s", e)
            error = e
        except Exception as e:
            log.exception("generation failed")
            error = e
        finally:
            it.close()  # stops a cancelled generation here and now (its finally records the result)
            self.totals.observe(gen.result)
        if error is not None:
            self.failed += 1
            job.emit("error", error)
            return
        if job.shutdown:
            self.cancelled += 1
            job.emit("error", ServerClosedError("the server is shutting down"))
            return
        if job.cancel.is_set():
            self.cancelled += 1
            log.info(
                "request cancelled by its client after %d tokens", gen.result.stats.new_tokens if gen.result else 0
            )
        else:
            self.completed += 1
        if held:
            job.emit("logprobs", held)
        job.emit("done", gen.result)
