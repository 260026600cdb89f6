"""One generation at a time per ensemble.

llama.cpp contexts are not thread-safe: two threads decoding on one member abort the process. So
an ensemble hands out *turns*. A generation holds the ensemble's turn from the moment it is
prepared until it ends (exhausted, closed, dropped, or failed); llama.cpp work happens only inside
`Turn.step()`, under the ensemble's lock.

- Another thread that starts a generation meanwhile waits for the turn (or, asked not to wait,
  gets EnsembleBusyError).
- The same thread starting a generation while its own earlier one is unfinished (a stream it
  stopped reading) supersedes it: the old one's next step raises GenerationSupersededError instead
  of decoding on caches that now hold the new tokens.
- A stream that is dropped before it starts holds nothing: the ensemble keeps only a weak
  reference to the current turn.
- close() waits for a running step, then every later step raises EnsembleClosedError.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import EnsembleBusyError, EnsembleClosedError, GenerationCancelledError, GenerationSupersededError

_POLL_S = 0.05  # how often a waiting caller re-checks a turn whose holder may have been dropped


class Turns:
    """The turn of one ensemble."""

    def __init__(self, name: str = "ensemble"):
        self.name = name
        self.lock = threading.Condition(threading.RLock())
        self.closed = False
        self._current: weakref.ref[Turn] | None = None

    def check_open(self) -> None:
        if self.closed:
            raise EnsembleClosedError(f"{self.name} is closed; load it again to generate")

    def begin(self, wait: bool | float = True, cancel: threading.Event | None = None) -> Turn:
        """The turn for a new generation. wait: True waits as long as it takes, False raises
        EnsembleBusyError at once when another thread holds the turn, a number waits that many seconds.
        cancel: once set, a waiting caller gives up with GenerationCancelledError (an abandoned async call)."""
        if isinstance(wait, bool) or wait is None:
            deadline = None if wait else time.monotonic()
        else:
            deadline = time.monotonic() + max(0.0, float(wait))
        with self.lock:
            while True:
                self.check_open()
                holder = self._current() if self._current is not None else None
                if holder is None or holder.ended:
                    break
                if holder.thread == threading.get_ident():
                    holder.superseded = True  # this thread abandoned it: the new generation wins
                    break
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelledError(f"cancelled while waiting for {self.name}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise EnsembleBusyError(f"{self.name} is generating for another thread (wait=False)")
                self.lock.wait(_POLL_S if left is None else min(_POLL_S, left))
            turn = Turn(self)
            self._current = weakref.ref(turn)
            return turn

    def close(self) -> bool:
        """Mark the ensemble closed once a running step has finished; False if it already was."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            self.lock.notify_all()
            return True


class Turn:
    """One generation's hold on its ensemble."""

    def __init__(self, turns: Turns):
        self.turns = turns
        self.thread = threading.get_ident()
        self.superseded = False
        self.ended = False

    @contextmanager
    def step(self) -> Iterator[None]:
        """Run llama.cpp work for this generation: excludes every other thread's steps."""
        with self.turns.lock:
            self.turns.check_open()
            if self.superseded:
                raise GenerationSupersededError(
                    "a newer generation started on this ensemble before this one finished; "
                    "this one cannot resume (close or finish a stream before starting another)"
                )
            yield

    @property
    def current(self) -> bool:
        """Is this still the ensemble's generation (not superseded, the ensemble open)?"""
        return not (self.superseded or self.turns.closed)

    def end(self) -> None:
        with self.turns.lock:
            self.ended = True
            self.turns.lock.notify_all()
