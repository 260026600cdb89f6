"""Streamed text and warnings on one terminal without gluing them together.

A reply is streamed to stdout piece by piece with no newline until it ends, while warnings go to
stderr through the `edge_specens` logger (the scheduler's "ran slower than calibrated", a context
longer than the training one). On a terminal both streams land on the same screen, so a warning
logged mid-line used to appear glued to the answer (`fib(n-2warning: ...`). `Stream` remembers
whether the text it wrote ended its line; `LineSafeHandler` ends that line before it writes a
warning, so the warning always stands on its own line and the answer stays whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import click


class Stream:
    """A text stream written piece by piece (`write(piece, nl=False)`) and ended with one newline
    (`finish`). `end_line` (the warning handler's) ends a line left open in between; finish then
    adds no second newline, so what the stream writes is the same with or without warnings."""

    def __init__(self, write: Callable[..., None] = click.echo):
        self._write = write
        self.mid_line = False  # the last piece did not end its line
        self.ended = False  # a newline was written after the last piece

    def piece(self, text: str, **style) -> None:
        if not text:
            return
        self._write(click.style(text, **style) if style else text, nl=False)
        self.mid_line = not text.endswith("\n")
        self.ended = False

    def end_line(self) -> None:
        """Finish the line the text left open, if it did (a second call writes nothing)."""
        if self.mid_line:
            self._write("")
            self.mid_line, self.ended = False, True

    def finish(self) -> None:
        """The newline that ends the text (unless end_line already wrote it after the last piece)."""
        if not self.ended:
            self._write("")
        self.mid_line, self.ended = False, True


_active: Stream | None = None  # the stream on screen now (one at a time: the CLI runs one command)


def streaming(stream: Stream) -> _Streaming:
    """`with streaming(Stream()) as out:` marks `out` as the text on screen while the block runs."""
    return _Streaming(stream)


class _Streaming:
    def __init__(self, stream: Stream):
        self.stream = stream

    def __enter__(self) -> Stream:
        global _active
        _active = self.stream
        return self.stream

    def __exit__(self, *exc) -> None:
        global _active
        _active = None


class LineSafeHandler(logging.Handler):
    """The CLI's handler for the `edge_specens` logger: one line on stderr per record, after ending
    a streamed line that is still open (so a warning never lands inside the answer)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if _active is not None:
                _active.end_line()
            click.echo(message, err=True)
        except Exception:  # a logging failure must never end the generation
            self.handleError(record)


def install_log_handler() -> None:
    """Route the package's warnings through LineSafeHandler (once; the message text is unchanged)."""
    logger = logging.getLogger("edge_specens")
    if not any(isinstance(h, LineSafeHandler) for h in logger.handlers):
        handler = LineSafeHandler(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
