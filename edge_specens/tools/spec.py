"""What a request asks of tool calling: the tools, `tool_choice` and `parallel_tool_calls`, checked.

One definition for the Python API, /v1/chat/completions and Ollama's /api/chat, in OpenAI's shapes:
tools are `{"type": "function", "function": {"name", "description", "parameters"}}`; tool_choice is
"auto" (the default), "none", "required" or `{"type": "function", "function": {"name": ...}}`.

Limits, checked before anything is rendered or compiled (each a 400): at most MAX_TOOLS tools (OpenAI's
own limit), at most MAX_TOOLS_CHARS characters of tools JSON, names as OpenAI allows them
(^[a-zA-Z0-9_-]{1,64}$: no control characters, nothing that could break out of the JSON or the
template) and unique, parameters a JSON Schema object that llguidance compiles (constrain.grammar_of:
the same depth and size bounds as `json_schema`). The grammar text built from them is bounded again by
constrain.MAX_GRAMMAR_CHARS (grammar.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidParameterError

MAX_TOOLS = 128  # OpenAI refuses more
MAX_TOOLS_CHARS = 2**18  # characters of the tools' JSON (descriptions included): they are rendered into the prompt
NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
CHOICES = ("auto", "none", "required")
EMPTY_PARAMETERS: dict = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    name: str
    parameters: dict  # the JSON Schema of the arguments (an empty object's when the tool gave none)


@dataclass(frozen=True)
class ToolRequest:
    """Checked tools and how they may be called. `rendered` is what the chat template gets (the tools
    as the client sent them, OpenAI's shape); `forced`: the name tool_choice named, else None."""

    tools: tuple[Tool, ...]
    rendered: tuple[dict, ...]
    choice: str  # "auto" | "none" | "required" | "named"
    forced: str | None = None
    parallel: bool = True

    @property
    def calls_allowed(self) -> bool:
        return self.choice != "none"

    @property
    def call_required(self) -> bool:
        return self.choice in ("required", "named")

    def callable_tools(self) -> tuple[Tool, ...]:
        return tuple(t for t in self.tools if self.forced is None or t.name == self.forced)


def tool_request(tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = None) -> ToolRequest | None:
    """The checked request, or None when it asks for no tools (none given, or an empty list).
    Raises InvalidParameterError naming the field for anything OpenAI would refuse."""
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise InvalidParameterError("parallel_tool_calls must be true or false")
    if tools is None or (isinstance(tools, (list, tuple)) and not tools):
        if tool_choice not in (None, "none"):
            raise InvalidParameterError("tool_choice needs tools: give the functions the model may call in tools")
        return None
    if not isinstance(tools, (list, tuple)):
        raise InvalidParameterError("tools must be a list of {type: function, function: {...}} objects")
    if len(tools) > MAX_TOOLS:
        raise InvalidParameterError(f"tools has {len(tools)} entries; at most {MAX_TOOLS} are allowed")
    try:
        size = len(json.dumps(tools, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        raise InvalidParameterError("tools must be JSON: objects, lists, strings, numbers") from None
    if size > MAX_TOOLS_CHARS:
        raise InvalidParameterError(f"tools takes {size} characters of JSON; at most {MAX_TOOLS_CHARS} are allowed")
    checked = tuple(_tool(i, t) for i, t in enumerate(tools))
    names = [t.name for t in checked]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidParameterError(f"tools: the function name {twice[0]!r} is given more than once")
    choice, forced = _choice(tool_choice, names)
    return ToolRequest(
        tools=checked,
        rendered=tuple(_rendered(t) for t in tools),
        choice=choice,
        forced=forced,
        parallel=True if parallel_tool_calls is None else parallel_tool_calls,
    )


def _tool(i: int, tool: Any) -> Tool:
    where = f"tools[{i}]"
    if not isinstance(tool, dict):
        raise InvalidParameterError(f"{where} must be an object {{type: function, function: {{...}}}}")
    if tool.get("type", "function") != "function":
        raise InvalidParameterError(f"{where}.type must be 'function', got {tool.get('type')!r}")
    fn = tool.get("function")
    if not isinstance(fn, dict):
        raise InvalidParameterError(f"{where}.function must be an object with a name")
    name = fn.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidParameterError(
            f"{where}.function.name must match ^[a-zA-Z0-9_-]{{1,64}}$ (letters, digits, _ and -), got {_shown(name)}"
        )
    if "description" in fn and fn["description"] is not None and not isinstance(fn["description"], str):
        raise InvalidParameterError(f"{where}.function.description must be a string")
    params = fn.get("parameters")
    if params is None:
        return Tool(name, EMPTY_PARAMETERS)
    if not isinstance(params, dict):
        raise InvalidParameterError(f"{where}.function.parameters must be a JSON Schema object")
    _check_schema(f"{where}.function.parameters", params)
    return Tool(name, params)


def _check_schema(where: str, schema: dict) -> None:
    """llguidance compiles it (constrain.grammar_of, with its depth and size bounds), or a 400 naming where."""
    from ..constrain import grammar_of

    try:
        grammar_of(json_schema=schema)
    except InvalidParameterError as e:
        raise InvalidParameterError(f"{where} is not a JSON Schema llguidance accepts: {_why(e)}") from None


def _why(e: Exception) -> str:
    return str(e).removeprefix("json_schema: ").removeprefix("json_schema ")


def _choice(tool_choice: Any, names: list[str]) -> tuple[str, str | None]:
    if tool_choice is None:
        return "auto", None
    if isinstance(tool_choice, str):
        if tool_choice not in CHOICES:
            raise InvalidParameterError(
                f"tool_choice must be 'auto', 'none', 'required' or {{type: function, function: {{name}}}}, "
                f"got {_shown(tool_choice)}"
            )
        return tool_choice, None
    fn = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str) or tool_choice.get("type", "function") != "function":
        raise InvalidParameterError("tool_choice must name a function: {type: function, function: {name: ...}}")
    if name not in names:
        raise InvalidParameterError(f"tool_choice names the function {_shown(name)}, which is not in tools")
    return "named", name


def _rendered(tool: dict) -> dict:
    """The tool as the template sees it: OpenAI's shape, `type` filled in."""
    return {"type": "function", **tool}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
