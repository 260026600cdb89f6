"""Request bodies of the Ollama-compatible API (ollama.py), and how their `options` map onto the one
set of generation options (params.GenerationOptions).

Ollama's names (num_predict, temperature, top_k, top_p, min_p, seed, stop, repeat_penalty,
repeat_last_n, presence_penalty, frequency_penalty; draft_num_predict is gamma) and every generation
option under its own name (strategy, gamma, lookup, ...) are taken. Options that size or place the
model are accepted and change nothing (`serve` loaded it); samplers the ensemble does not have are
refused unless neutral; unknown options are refused.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import InvalidParameterError
from ..params import GENERATION_OPTIONS, MAX_TOP_LOGPROBS

# options that size or place the model: fixed when `serve` loaded it, so accepted and ignored
LOAD_TIME_OPTIONS = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "use_mmap",
        "use_mlock",
        "numa",
        "low_vram",
        "vocab_only",
        "f16_kv",
        "logits_all",
        "num_keep",
        "num_gqa",
        "rope_frequency_base",
        "rope_frequency_scale",
        "embedding_only",
        "penalize_newline",
        "mirostat_tau",
        "mirostat_eta",
    }
)
NEUTRAL_ONLY = {"typical_p": 1.0, "tfs_z": 1.0, "mirostat": 0}  # samplers r does not have


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list | None = None
    tool_calls: list | None = None
    thinking: str | None = None
    tool_name: str | None = None


class OllamaRequest(_Body):
    model: str = ""
    format: str | dict | None = None
    options: dict | None = None
    stream: bool = True
    keep_alive: str | int | float | None = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class GenerateRequest(OllamaRequest):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list | None = None


class ChatRequest(OllamaRequest):
    messages: list[Message] = []
    tools: list | None = None


class ShowRequest(_Body):
    model: str = ""
    name: str = ""  # older clients
    verbose: bool = False


def generation_options(body: OllamaRequest, n_ctx: int) -> dict[str, Any]:
    """The request's `options`, `format` and logprobs as Ensemble.events keywords (GENERATION_OPTIONS).
    InvalidParameterError names an unknown or unsupported option."""
    kw: dict[str, Any] = {}
    unknown = []
    for key, value in (body.options or {}).items():
        if value is None or key in LOAD_TIME_OPTIONS:
            continue
        if key in NEUTRAL_ONLY:
            if value != NEUTRAL_ONLY[key]:
                raise InvalidParameterError(
                    f"options.{key} is not supported (the ensemble samples from r with temperature, top-k, "
                    f"top-p and min-p); leave it at {NEUTRAL_ONLY[key]}"
                )
        elif key == "num_predict":
            if value in (-1, -2):
                continue  # no limit / fill the context: the server's default
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameterError(f"options.num_predict must be -1, -2 or at least 1, got {value!r}")
            kw["max_tokens"] = value
        elif key == "draft_num_predict":
            kw["gamma"] = value
        elif key == "repeat_last_n" and value == -1:
            kw["repeat_last_n"] = n_ctx
        elif key == "seed" and isinstance(value, int) and not isinstance(value, bool) and value < 0:
            continue  # Ollama's -1: a random seed
        elif key == "stop" and isinstance(value, str):
            kw["stop"] = (value,)
        elif key in GENERATION_OPTIONS:
            kw[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise InvalidParameterError(
            f"unknown option(s) in options: {', '.join(sorted(unknown))}; the options are Ollama's sampling "
            f"options and {', '.join(GENERATION_OPTIONS)}"
        )
    kw.setdefault("max_tokens", n_ctx)
    fmt = body.format
    if fmt == "json":  # any JSON object, constrained on r (constrain.py)
        kw["json_schema"] = {"type": "object"}
    elif isinstance(fmt, dict):
        kw["json_schema"] = fmt
    elif fmt not in (None, ""):
        raise InvalidParameterError(f'format must be "json" or a JSON schema, got {fmt!r}')
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidParameterError("top_logprobs needs logprobs = true")
    if body.logprobs:
        n = body.top_logprobs or 0
        if isinstance(n, bool) or not 0 <= n <= MAX_TOP_LOGPROBS:
            raise InvalidParameterError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {n!r}")
        kw["logprobs"] = n
    return kw


def refuse_unsupported(body: OllamaRequest) -> None:
    if isinstance(body, GenerateRequest):
        for field, why in (
            ("images", "images are not supported: the members read text only"),
            ("context", "context is not supported: send the conversation to /api/chat"),
            ("template", "template is not supported: the model's own (GGUF) chat template is used"),
        ):
            if getattr(body, field):
                raise InvalidParameterError(f"{field}: {why}")
        if body.raw and body.suffix:
            raise InvalidParameterError("raw mode does not support suffix")
    if isinstance(body, ChatRequest):
        for i, m in enumerate(body.messages):
            if m.images:
                raise InvalidParameterError(
                    f"messages[{i}].images: images are not supported: the members read text only"
                )


def chat_messages(body: ChatRequest) -> list[dict]:
    """The conversation as chat.py reads it: an assistant's tool_calls (arguments an object, as Ollama
    sends them) and a tool result's tool_name (as `name`) kept for the template."""
    out = []
    for m in body.messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            msg["tool_calls"] = m.tool_calls
        if m.role == "tool" and m.tool_name:
            msg["name"] = m.tool_name
        out.append(msg)
    return out
