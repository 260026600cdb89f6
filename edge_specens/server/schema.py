"""Request bodies of the OpenAI-compatible server, and OpenAI's error object.

Bodies are pydantic models in strict mode (a string where a number belongs is an error, not a
conversion). Fields OpenAI defines that the ensemble cannot honour are accepted at their neutral
value and refused otherwise; unknown fields are ignored, so chat front-ends that send extras work.
Range checks of the generation options live in `params.GenerationOptions` (one place for API, CLI
and server); the worker raises them as InvalidParameterError and they become 400s too.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..chat import ROLES, chat_logprobs_option
from ..errors import (
    ContextOverflowError,
    EdgeSpecensError,
    InvalidParameterError,
    MemberLostError,
    UnsupportedModelError,
)
from ..params import GENERATION_OPTIONS, MAX_TOP_LOGPROBS

Role = Literal[ROLES]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ContentPart(_Strict):
    type: str
    text: str | None = None  # other kinds (image_url, input_audio, file) are refused: see unsupported()


class ChatMessage(_Strict):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list | None = None  # an assistant's calls (checked in tools/history.py)
    tool_call_id: str | None = None  # a tool result's

    def as_dict(self) -> dict:
        content = self.content
        if isinstance(content, list):  # OpenAI content parts (other kinds than text are refused)
            content = "".join(p.text or "" for p in content if p.type == "text")
        out: dict = {"role": self.role, "content": content or ""}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.role == "tool":
            out.update({k: v for k, v in (("tool_call_id", self.tool_call_id), ("name", self.name)) if v is not None})
        return out


class _Sampling(_Strict):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None
    repeat_penalty: float | None = None  # llama.cpp / llama-cpp-python extras
    repeat_last_n: int | None = None
    user: str | None = None
    response_format: dict | None = None
    # edge_specens extras (send them as extra body fields)
    strategy: str | None = None
    gamma: int | list[int] | str | None = None
    lookup: int | None = None
    parallel: bool | None = None
    json_schema: dict | str | None = None
    grammar: str | None = None
    regex: str | None = None
    provenance: bool | None = None  # stream where each token came from (provenance.py); streams only

    def unsupported(self) -> list[tuple[str, str]]:
        """(param, message) for each OpenAI feature asked for that the ensemble does not have."""
        out = []
        if self.n not in (None, 1):
            out.append(("n", "only n = 1 is supported"))
        kind = (self.response_format or {}).get("type")
        if kind not in (None, "text", "json_object", "json_schema"):
            # never an unconstrained answer to a request that asked for a constrained one
            out.append(("response_format", f"response_format type {kind!r} is not supported"))
        elif kind == "json_schema" and not isinstance((self.response_format or {}).get("json_schema"), dict):
            out.append(("response_format", "response_format json_schema needs {'json_schema': {'schema': {...}}}"))
        return out

    def generation_kwargs(self, default_max_tokens: int) -> dict:
        """Keyword arguments for Ensemble.events: every generation option the request set (each
        is a field here: tests/test_options.py), range-checked there; the rest keep the API's defaults."""
        kw: dict[str, Any] = {k: getattr(self, k) for k in GENERATION_OPTIONS if getattr(self, k) is not None}
        kw.setdefault("max_tokens", default_max_tokens)
        if isinstance(self.stop, str):
            kw["stop"] = (self.stop,)
        rf = self.response_format or {}
        if rf.get("type") == "json_object":  # any JSON object, constrained on r (constrain.py)
            kw["json_schema"] = {"type": "object"}
        elif rf.get("type") == "json_schema":
            kw["json_schema"] = rf["json_schema"].get("schema") or {"type": "object"}
        return kw


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list | None = None  # tools/spec.py checks them, tool_choice and parallel_tool_calls
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None

    def tool_request(self):
        """The checked tools (tools.ToolRequest), None without any; InvalidParameterError otherwise."""
        from ..tools import tool_request

        return tool_request(self.tools, self.tool_choice, self.parallel_tool_calls)

    def unsupported(self):
        out = super().unsupported()
        if self.top_logprobs is not None and not self.logprobs:
            out.append(("top_logprobs", "top_logprobs needs logprobs = true"))
        elif self.top_logprobs is not None and not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            out.append(("top_logprobs", f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"))
        for i, m in enumerate(self.messages):
            for j, part in enumerate(m.content if isinstance(m.content, list) else ()):
                if part.type != "text":  # never an answer about an image the model did not see
                    out.append(
                        (
                            f"messages.{i}.content.{j}",
                            f"messages[{i}].content[{j}] is a {part.type!r} part; this server's models read text only",
                        )
                    )
        return out

    def generation_kwargs(self, default_max_tokens: int) -> dict:
        kw = super().generation_kwargs(default_max_tokens)
        if self.max_tokens is None and self.max_completion_tokens is not None:
            kw["max_tokens"] = self.max_completion_tokens
        kw.pop("logprobs", None)  # OpenAI's chat pair, as the one logprobs option (unsupported() checked it)
        logprobs = chat_logprobs_option(self.logprobs, self.top_logprobs)
        if logprobs is not None:
            kw["logprobs"] = logprobs
        return kw


class CompletionRequest(_Sampling):
    prompt: Any
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, v):
        """A string or a list of token ids (a batch of exactly one of either is unwrapped)."""
        if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (str, list)):
            v = v[0]
        if isinstance(v, str):
            return v
        if isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in v):
            return v
        if isinstance(v, list) and v and all(isinstance(p, (str, list)) for p in v):
            raise ValueError("only one prompt per request is supported (send one request per prompt)")
        raise ValueError("prompt must be a string or a list of token ids")

    def unsupported(self):
        out = super().unsupported()
        if self.echo:
            out.append(("echo", "echo is not supported"))
        if self.suffix and not isinstance(self.prompt, str):
            out.append(("suffix", "a suffix needs a text prompt (the text before the cursor)"))
        if self.best_of not in (None, 1):
            out.append(("best_of", "only best_of = 1 is supported"))
        return out


# ---------------------------------------------------------------------- errors
def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_PARAMS = (*GENERATION_OPTIONS, "messages", "prompt", "suffix")
_PARAM_RE = re.compile(r"\b(" + "|".join(_PARAMS) + r")\b")
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after", "function-before"}


def exception_status(e: BaseException, prompt_param: str = "prompt") -> tuple[int, dict]:
    """HTTP status and OpenAI error object for an exception raised while preparing or generating."""
    if isinstance(e, ContextOverflowError):
        return 400, error_body(str(e), param=prompt_param, code="context_length_exceeded")
    if isinstance(e, (InvalidParameterError, UnsupportedModelError)) or (
        isinstance(e, EdgeSpecensError) and getattr(e, "exit_code", 1) == 2
    ):
        m = _PARAM_RE.search(str(e))
        param = m.group(1) if m else None
        if param == "prompt":
            param = prompt_param
        return 400, error_body(str(e), param=param, code="invalid_value")
    if isinstance(e, MemberLostError):  # the next request reconnects: worth retrying
        return 503, error_body(str(e), type_="server_error", code="member_lost")
    if isinstance(e, EdgeSpecensError):
        return 500, error_body(str(e), type_="server_error", code="generation_failed")
    return 500, error_body(f"internal error ({type(e).__name__}: {e})", type_="server_error", code="internal_error")


def validation_error_body(errors: list[dict]) -> dict:
    """FastAPI's RequestValidationError (normally a 422) as one 400 error object."""
    if not errors:
        return error_body("invalid request")
    msgs, first_param = [], None
    seen = set()
    for err in errors:
        loc = [x for x in err.get("loc", ()) if x != "body"]
        parts = [
            str(x) for x in loc if isinstance(x, int) or (isinstance(x, str) and "[" not in x and x not in _UNION_TAGS)
        ]
        param = ".".join(parts) or None
        if err.get("type") == "json_invalid":
            msgs.append("the request body is not valid JSON")
            param = None
        elif err.get("type") == "missing" and param is None:
            msgs.append("the request body must be a JSON object")
        else:
            if param in seen:
                continue  # one message per field (unions report every alternative)
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            if err.get("type") == "missing":
                msg = "is required"
            elif err.get("type") == "model_attributes_type" and param is None:
                msg = "the request body must be a JSON object"
            msgs.append(f"{param}: {msg}" if param else msg)
        seen.add(param)
        first_param = first_param or param
    return error_body("; ".join(msgs[:4]), param=first_param, code="invalid_value")
