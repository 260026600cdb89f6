"""OpenAI's shapes for a reply that may call tools: the message's `tool_calls`, and streamed deltas.

Streamed as OpenAI streams them: text before the calls as `content` deltas; per call a first delta
`{"index", "id", "type": "function", "function": {"name", "arguments": ""}}`, then
`{"index", "function": {"arguments": <the next characters>}}`; the finish chunk says
`finish_reason: "tool_calls"` when the model ended after calling (a call cut off by max_tokens keeps
"length"). The `<tool_call>` markup never goes out as content (parse.py holds it back).

logprobs and provenance ride on the next chunk that goes out (a piece that only extends held-back text
sends nothing); what is left over goes with the finish chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..logprobs import TokenLogprob
from ..openai_format import OpenAIFormat
from .formats import CallFormat
from .parse import CallParser, parse_all


def finish_reason(parser: CallParser, reason: str) -> str:
    """OpenAI's "tool_calls" when the reply ended with complete calls, else the generation's own."""
    return "tool_calls" if reason == "stop" and parser.calls and all(c.complete for c in parser.calls) else reason


def message(parser: CallParser) -> dict:
    """The assistant message: content (None when there is only whitespace beside calls) and tool_calls."""
    content = parser.content
    if parser.calls and not content.strip():
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [_call(c) for c in parser.calls],
        }
    out: dict = {"role": "assistant", "content": content}
    if parser.calls:
        out["tool_calls"] = [_call(c) for c in parser.calls]
    return out


def _call(c) -> dict:
    return {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}


class ToolChatFormat(OpenAIFormat):
    """OpenAIFormat for a chat whose reply is parsed for tool calls in `fmt`."""

    def __init__(self, fmt: CallFormat, model: str, **kw):
        super().__init__(True, model, **kw)
        self.fmt = fmt
        self.parser = CallParser(fmt)
        self._held: list[TokenLogprob] = []

    def pieces(self, text: str, logprobs: Sequence[TokenLogprob] | None = None) -> list[dict]:
        return self._shaped(self.parser.feed(text), logprobs)

    def _shaped(self, events: list[tuple], logprobs: Sequence[TokenLogprob] | None) -> list[dict]:
        if logprobs:
            self._held.extend(logprobs)
        chunks = [self._chunk({"index": 0, "delta": delta, "finish_reason": None}) for delta in _deltas(events)]
        if chunks and self._held and self.piece_bytes is not None:
            chunks[0]["choices"][0]["logprobs"] = self._logprobs(self._held)
            self._held = []
        return chunks

    def last(self, res, logprobs: Sequence[TokenLogprob] | None = None) -> list[dict]:
        tail = self._shaped(self.parser.finish(), logprobs)
        left = self._held or None
        self._held = []
        res = dataclasses.replace(res, finish_reason=finish_reason(self.parser, res.finish_reason))
        return [*tail, *super().last(res, left)]

    def full(self, res) -> dict:
        parser = parse_all(self.fmt, res.text)
        out = super().full(dataclasses.replace(res, finish_reason=finish_reason(parser, res.finish_reason)))
        out["choices"][0]["message"] = message(parser)
        return out


def _deltas(events: list[tuple]) -> list[dict]:
    """The parser's events as OpenAI deltas, runs of content or of one call's arguments merged."""
    out: list[dict] = []
    for ev in events:
        kind = ev[0]
        last = out[-1] if out else None
        if kind == "content":
            if last is not None and "content" in last:
                last["content"] += ev[1]
            else:
                out.append({"content": ev[1]})
        elif kind == "call":
            _, index, call_id, name = ev
            fn = {"name": name, "arguments": ""}
            out.append({"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": fn}]})
        elif kind == "arguments":
            _, index, text = ev
            calls = last.get("tool_calls") if last is not None else None
            if calls and calls[0]["index"] == index and "name" not in calls[0]["function"]:
                calls[0]["function"]["arguments"] += text
            else:
                out.append({"tool_calls": [{"index": index, "function": {"arguments": text}}]})
    return out
