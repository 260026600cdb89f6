"""OpenAI's response shapes (chat.completion, text_completion and their stream chunks), built in
one place for the Python API (`Ensemble.create_chat_completion`) and the server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from .logprobs import TokenLogprob, chat_logprobs, completion_logprobs


class PromptTokensDetails(TypedDict):
    cached_tokens: int  # prompt tokens the members did not read again (kept or restored KV: prompt_cache.py)


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class FunctionCall(TypedDict):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(TypedDict):
    id: str  # "call_..."
    type: str  # "function"
    function: FunctionCall


class _ChatMessage(TypedDict):
    role: str
    content: str | None  # None when the reply is only tool calls


class ChatMessage(_ChatMessage, total=False):
    tool_calls: list[ToolCall]  # with tools (tools/chunks.py)


class ChatChoice(TypedDict):
    index: int
    message: ChatMessage
    logprobs: dict | None  # {"content": [...]} with the logprobs option (logprobs.py)
    finish_reason: str


class ChatCompletion(TypedDict):
    """What create_chat_completion returns (OpenAI's chat.completion), plus our stats."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    edge_specens: dict[str, Any]  # GenerationStats.to_dict()


class ChatDelta(TypedDict, total=False):
    role: str
    content: str
    tool_calls: list[dict]  # {index, id, type, function: {name, arguments}}, then {index, function: {arguments}}


class ChunkChoice(TypedDict):
    index: int
    delta: ChatDelta
    finish_reason: str | None


class ChatCompletionChunk(TypedDict, total=False):
    """One streamed chunk (chat.completion.chunk); usage and our stats ride on the last ones."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage
    edge_specens: dict[str, Any]


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Usage:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


class OpenAIFormat:
    """The shapes of one response: `head()` chunks, one `piece()` per text piece and `last()`
    when streaming, else `full()`. Each carries our stats under "edge_specens" (all of
    GenerationStats with extended=True, else docs/design.md §9's fields).

    piece_bytes (Ensemble.piece) spells the tokens of logprobs out: a piece() given logprobs carries
    those of the tokens whose text it releases, last() those of tokens whose text never came out
    (held back by a stop string), full() the result's."""

    def __init__(
        self,
        chat: bool,
        model: str,
        extended: bool = False,
        include_usage: bool = False,
        piece_bytes: Callable[[int], bytes] | None = None,
    ):
        self.chat, self.model, self.extended = chat, model, extended
        self.piece_bytes = piece_bytes
        self._offset = 0  # text_offset of the next streamed completion token
        # stream_options.include_usage: usage in its own final chunk with empty choices, as OpenAI
        # sends it (otherwise it rides on the finish chunk, as llama-cpp-python's server does)
        self.include_usage = include_usage
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _chunk(self, choice: dict, **extra) -> dict:
        d = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        d.update(extra)
        return d

    def head(self) -> list[dict]:
        if self.chat:
            return [self._chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})]
        return []

    def _logprobs(self, entries: Sequence[TokenLogprob] | None) -> dict | None:
        if entries is None or self.piece_bytes is None:
            return None
        if self.chat:
            return chat_logprobs(entries, self.piece_bytes)
        out = completion_logprobs(entries, self.piece_bytes, self._offset)
        self._offset += sum(len(t) for t in out["tokens"])
        return out

    def piece(self, text: str, logprobs: Sequence[TokenLogprob] | None = None) -> dict:
        if self.chat:
            choice: dict = {"index": 0, "delta": {"content": text}, "finish_reason": None}
            if logprobs is not None:
                choice["logprobs"] = self._logprobs(logprobs)
            return self._chunk(choice)
        return self._chunk({"index": 0, "text": text, "logprobs": self._logprobs(logprobs), "finish_reason": None})

    def pieces(self, text: str, logprobs: Sequence[TokenLogprob] | None = None) -> list[dict]:
        """The chunks one text piece makes: one here; none or several where tool calls are parsed
        (tools/chunks.py)."""
        return [self.piece(text, logprobs)]

    def last(self, res, logprobs: Sequence[TokenLogprob] | None = None) -> list[dict]:
        """The finish chunk (with our stats), then with include_usage the usage chunk."""
        choice = (
            {"index": 0, "delta": {}, "finish_reason": res.finish_reason}
            if self.chat
            else {"index": 0, "text": "", "logprobs": self._logprobs(logprobs), "finish_reason": res.finish_reason}
        )
        if self.chat and logprobs:
            choice["logprobs"] = self._logprobs(logprobs)
        used = usage(res.stats.prompt_tokens, res.stats.new_tokens, res.stats.reused_tokens)
        stats = res.stats.to_dict(extended=self.extended)
        if not self.include_usage:
            return [self._chunk(choice, usage=used, edge_specens=stats)]
        final = {**self._chunk(choice), "choices": [], "usage": used}
        return [self._chunk(choice, edge_specens=stats), final]

    def full(self, res) -> dict:
        if self.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": res.text},
                "logprobs": self._logprobs(res.logprobs),
                "finish_reason": res.finish_reason,
            }
        else:
            choice = {
                "index": 0,
                "text": res.text,
                "logprobs": self._logprobs(res.logprobs),
                "finish_reason": res.finish_reason,
            }
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(res.stats.prompt_tokens, res.stats.new_tokens, res.stats.reused_tokens),
            "edge_specens": res.stats.to_dict(extended=self.extended),
        }
