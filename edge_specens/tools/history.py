"""Tool calls and tool results in the conversation, as the chat template reads them.

An assistant message's `tool_calls` (OpenAI's shape: arguments as JSON text; Ollama's: an object) are
handed to the template with the arguments parsed into an object, as llama.cpp and Hugging Face do:
Qwen2.5's template writes `tool_call.arguments | tojson`, which would quote JSON text a second time. A
`tool` message keeps its `tool_call_id` and `name` (templates that label results by function read it).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidParameterError
from .spec import MAX_TOOLS, NAME_RE


def extra_fields(i: int, message: dict, role: str) -> dict:
    """The tool fields of messages[i] that the template gets besides role and content."""
    out: dict[str, Any] = {}
    calls = message.get("tool_calls")
    if calls:
        if role != "assistant":
            raise InvalidParameterError(f"messages[{i}].tool_calls: only assistant messages carry tool calls")
        if not isinstance(calls, (list, tuple)) or len(calls) > MAX_TOOLS:
            raise InvalidParameterError(f"messages[{i}].tool_calls must be a list of at most {MAX_TOOLS} calls")
        out["tool_calls"] = [_call(f"messages[{i}].tool_calls[{j}]", c) for j, c in enumerate(calls)]
    for key in ("tool_call_id", "name"):
        value = message.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 256:
            raise InvalidParameterError(f"messages[{i}].{key} must be a string of at most 256 characters")
        out[key] = value
    return out


def _call(where: str, call: Any) -> dict:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict):
        raise InvalidParameterError(f"{where} must be {{id, type: function, function: {{name, arguments}}}}")
    name = fn.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidParameterError(f"{where}.function.name must match ^[a-zA-Z0-9_-]{{1,64}}$")
    arguments = fn.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            raise InvalidParameterError(f"{where}.function.arguments is not valid JSON") from None
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def tool_text(messages: list[dict], tools) -> str:
    """The text the tool fields add to the prompt (for the length check and the control-text guard)."""
    parts = [json.dumps(m["tool_calls"], ensure_ascii=False) for m in messages if m.get("tool_calls")]
    if tools:
        parts.append(json.dumps(list(tools), ensure_ascii=False))
    return "\n".join(parts)
