"""The generated text, read as it streams: plain content, then tool calls (formats.CallFormat).

One incremental parser serves every face, so the streamed deltas and the whole response say the same
thing: `feed(text)` returns what the new text settles, `finish()` what the end settles.

- ("content", text): text outside the calls. Text that may still turn out to be the start of a call
  (a prefix of `<tool_call>`, and the whitespace just before it) is held back until it is settled,
  so the markup never reaches a client as content.
- ("call", index, id, name): a call's name is complete (OpenAI's first tool_calls delta).
- ("arguments", index, text): the next characters of its arguments, exactly as generated (the value
  of "arguments": a JSON object under grammar.py's constraint), so the fragments join into its JSON.
- ("end", index): the call's closing tag arrived (Ollama sends whole calls).

A reply that opens with `{"name"` is a call without the tags (Qwen2.5-Coder writes them so; grammar.py
allows it), closed by its JSON's last brace; one that opens with other JSON is content.

A call cut off (max_tokens) stays as far as it got, as OpenAI's does with finish_reason "length".
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from .formats import CallFormat

# the start of a call's JSON, up to the arguments' value (grammar.py puts "name" first)
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"([a-zA-Z0-9_-]{1,64})"\s*,\s*"arguments"\s*:')
_HEADER_MAX = 256  # characters: a header this long that does not match never will (a 64-character name)
_WHITESPACE = " \t\r\n"
_BARE = '{"name":"'  # how a bare call opens, whitespace removed


def _may_open_bare(text: str) -> bool:
    """Could text (leading whitespace stripped) still be the start of a bare call?"""
    compact = "".join(text.split())[: len(_BARE)]
    return _BARE.startswith(compact)


@dataclass
class ParsedCall:
    id: str
    name: str
    arguments: str = ""
    complete: bool = False
    bare: bool = False  # written without the tags


@dataclass
class _Value:
    """Where a JSON value ends, scanned a character at a time (strings and escapes respected)."""

    depth: int = 0
    started: bool = False
    in_string: bool = False
    escape: bool = False
    scalar: bool = False  # a bare number or literal: ends before a delimiter

    def take(self, ch: str) -> bool | None:
        """Feed one character: True if it is part of the value and ends it, False if it is part of the
        value, None if the value ended before it (a scalar's delimiter)."""
        if not self.started:
            self.started = True
            if ch in "{[":
                self.depth = 1
            elif ch == '"':
                self.in_string = True
            else:
                self.scalar = True
            return False
        if self.scalar:
            return None if ch in ",}]" + _WHITESPACE else False
        if self.in_string:
            if self.escape:
                self.escape = False
            elif ch == "\\":
                self.escape = True
            elif ch == '"':
                self.in_string = False
                return self.depth == 0
            return False
        if ch == '"':
            self.in_string = True
        elif ch in "{[":
            self.depth += 1
        elif ch in "}]":
            self.depth -= 1
            return self.depth == 0
        return False


@dataclass
class CallParser:
    fmt: CallFormat
    calls: list[ParsedCall] = field(default_factory=list)
    content: str = ""  # all content settled so far
    _buf: str = ""
    _state: str = "start"  # start | text | header | args | tail | between | skip
    _value: _Value = field(default_factory=_Value)
    _bare: bool = False  # the call being read has no tags

    def feed(self, text: str) -> list[tuple]:
        self._buf += text
        out: list[tuple] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> list[tuple]:
        """The end of the text: held-back content is content after all; an open call stays cut off."""
        out: list[tuple] = []
        if self._state == "header" and self._bare and not self.calls:
            self._state = "text"  # a reply that only began like a bare call
        if self._state in ("start", "text") and self._buf:
            self._content(out, self._buf)
        elif self._state == "args" and self._value.scalar and self._value.started:
            self._state = "tail"  # a bare scalar ends with the text
        self._buf = ""
        return out

    # ------------------------------------------------------------------ one state at a time
    def _step(self, out: list[tuple]) -> bool:
        """Advance as far as the buffer settles; True to go on with the next state."""
        buf, fmt = self._buf, self.fmt
        if self._state == "start":  # the reply's first characters: a bare call, or text
            rest = buf.lstrip(_WHITESPACE)
            if not rest:
                return False
            if rest.startswith("{") and _may_open_bare(rest):
                self._buf, self._state, self._bare = rest, "header", True
            else:
                self._state = "text"
            return True
        if self._state == "text":
            i = buf.find(fmt.open)
            if i >= 0:
                self._content(out, buf[:i].rstrip(_WHITESPACE))
                self._open_call(buf[i + len(fmt.open) :])
                return True
            keep = _held_back(buf, fmt.open)
            self._content(out, buf[: len(buf) - keep])
            self._buf = buf[len(buf) - keep :]
            return False
        if self._state == "header":
            m = _HEADER.match(buf)
            if m is None:
                if self._bare and not self.calls and not _may_open_bare(buf):
                    self._state = "text"  # JSON, but not a call: content
                    return True
                if len(buf) > _HEADER_MAX or fmt.close in buf:
                    self._state = "skip"  # not a call this parser can read (never under the grammar)
                    return True
                return False
            call = ParsedCall(id=f"call_{uuid.uuid4().hex[:24]}", name=m.group(1), bare=self._bare)
            self.calls.append(call)
            out.append(("call", len(self.calls) - 1, call.id, call.name))
            self._buf, self._state, self._value = buf[m.end() :].lstrip(_WHITESPACE), "args", _Value()
            return bool(self._buf)
        if self._state == "args":
            return self._arguments(out)
        if self._state == "tail" and self._bare:  # the object's own closing brace ends a bare call
            j = buf.find("}")
            if j < 0:
                return False
            self.calls[-1].complete = True
            out.append(("end", len(self.calls) - 1))
            self._buf, self._state = buf[j + 1 :], "between"
            return bool(self._buf)
        if self._state in ("tail", "skip"):
            j = buf.find(fmt.close)
            if j < 0:
                return False
            if self._state == "tail":
                self.calls[-1].complete = True
                out.append(("end", len(self.calls) - 1))
            self._buf, self._state = buf[j + len(fmt.close) :], "between"
            return bool(self._buf)
        # between calls: another call, or (never under the grammar) more text
        rest = buf.lstrip(_WHITESPACE)
        if rest.startswith(fmt.open):
            self._open_call(rest[len(fmt.open) :])
            return True
        if self._bare and rest.startswith("{"):
            self._buf, self._state = rest, "header"
            return True
        if not rest or fmt.open.startswith(rest):
            return False
        self._buf, self._state = rest, "text"
        return True

    def _arguments(self, out: list[tuple]) -> bool:
        buf, value, end = self._buf, self._value, None
        if not value.started:
            buf = self._buf = buf.lstrip(_WHITESPACE)
        for k, ch in enumerate(buf):
            done = value.take(ch)
            if done is None:
                end = k
                break
            if done:
                end = k + 1
                break
        taken = buf if end is None else buf[:end]
        if taken:
            self.calls[-1].arguments += taken
            out.append(("arguments", len(self.calls) - 1, taken))
        if end is None:
            self._buf = ""
            return False
        self._buf, self._state = buf[end:], "tail"
        return True

    def _open_call(self, rest: str) -> None:
        self._buf, self._state, self._bare = rest, "header", False

    def _content(self, out: list[tuple], text: str) -> None:
        if text:
            self.content += text
            out.append(("content", text))


def _held_back(buf: str, trigger: str) -> int:
    """How many characters at the end of buf to hold back: a partial trigger, and the whitespace before it
    (the separation between the text and a call is no content)."""
    keep = 0
    for n in range(min(len(trigger) - 1, len(buf)), 0, -1):
        if trigger.startswith(buf[-n:]):
            keep = n
            break
    head = buf[: len(buf) - keep]
    return keep + (len(head) - len(head.rstrip(_WHITESPACE)))


def parse_all(fmt: CallFormat, text: str) -> CallParser:
    """The whole text parsed (a non-streamed response)."""
    p = CallParser(fmt)
    p.feed(text)
    p.finish()
    return p
