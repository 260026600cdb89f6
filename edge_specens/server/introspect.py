"""llama-server's introspection routes: GET /props, POST /tokenize and /detokenize, GET /metrics.

Clients use them to learn the context size and defaults (llama.cpp's web UI syncs its settings to
/props), to count tokens before they send a prompt, and to watch the server (Prometheus).

Tokenizing here, on the handler's side, is the one exception to "only the worker touches the
ensemble": it reads the vocabulary only, which llama.cpp allows from any thread (llama-server itself
tokenizes on its HTTP threads while a slot decodes), so a count never waits behind a generation. It
runs on a thread of its own so that a long text does not hold the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._version import __version__
from ..chat import CHATML_TEMPLATE
from ..errors import EdgeSpecensError
from ..params import GenerationOptions
from ..prompt_cache import PromptCacheStats, member_cache_stats
from .facts import facts
from .metrics import render
from .schema import error_body, exception_status, validation_error_body

MAX_DETOKENIZE = 1_000_000  # token ids one /detokenize request may send


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TokenizeRequest(_Body):
    content: str
    add_special: bool = False  # llama.cpp's default: no BOS
    parse_special: bool = True  # control-token text becomes the control token
    with_pieces: bool = False


class DetokenizeRequest(_Body):
    tokens: list[int] = Field(max_length=MAX_DETOKENIZE)


def default_settings(n_ctx: int) -> dict[str, Any]:
    """The generation options a request gets when it sets none (a server's max_tokens: the context)."""
    d = GenerationOptions()
    out = {f.name: _json(getattr(d, f.name)) for f in fields(GenerationOptions)}
    out["max_tokens"] = n_ctx
    return out


def _json(v):
    return [_json(x) for x in v] if isinstance(v, tuple) else v


_Parsed = TypeVar("_Parsed", bound=BaseModel)


async def parse(request: Request, model: type[_Parsed]) -> _Parsed | JSONResponse:
    """The body as `model`, or the 400 in OpenAI's error shape (the /v1 routes' handler does the same)."""
    try:
        data = await request.json()
    except ValueError:
        return JSONResponse(error_body("the request body is not valid JSON", code="invalid_value"), 400)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        return JSONResponse(validation_error_body([dict(x) for x in e.errors()]), 400)


def introspect_router(ens, worker, name: str) -> APIRouter:
    router = APIRouter()

    @router.get("/props")
    async def props():
        f = facts(ens, name)
        return {
            "model": name,
            "model_path": f.members[0].path if f.members else "",
            "n_ctx": f.n_ctx,
            "total_slots": 1,  # one worker: requests queue (worker.py)
            "default_generation_settings": {"n_ctx": f.n_ctx, "params": default_settings(f.n_ctx)},
            "chat_template": f.chat_template or CHATML_TEMPLATE,
            "chat_template_source": "gguf" if f.chat_template else "chatml fallback",
            "modalities": {"vision": False, "audio": False},
            "fim": f.fim is not None,
            "method": f.method,
            "weights": list(f.weights),
            "members": [
                {
                    "name": m.name,
                    "path": m.path,
                    "size": m.size,
                    "architecture": m.architecture,
                    "n_params": m.n_params,
                    "quantization": m.quantization,
                    "trained_context": m.trained_context,
                    "device": m.device,
                }
                for m in f.members
            ],
            "prompt_cache": _prompt_cache(ens),
            "build_info": f"edge-specens {__version__}",
            "is_sleeping": False,
        }

    @router.post("/tokenize")
    async def tokenize(request: Request):
        body = await parse(request, TokenizeRequest)
        if isinstance(body, JSONResponse):
            return body

        def run():
            ids = ens.tokenize(body.content, add_bos=None if body.add_special else False, special=body.parse_special)
            if not body.with_pieces:
                return {"tokens": ids}
            return {"tokens": [{"id": t, "piece": _piece(ens.piece(t))} for t in ids]}

        return await _off_loop(run)

    @router.post("/detokenize")
    async def detokenize(request: Request):
        body = await parse(request, DetokenizeRequest)
        if isinstance(body, JSONResponse):
            return body
        bad = next((t for t in body.tokens if not 0 <= t < ens.n_vocab), None)
        if bad is not None:
            msg = f"token id {bad} is outside the vocabulary (0..{ens.n_vocab - 1})"
            return JSONResponse(error_body(msg, param="tokens", code="invalid_value"), 400)
        return await _off_loop(lambda: {"content": ens.detokenize(body.tokens)})

    @router.get("/metrics")
    async def metrics():
        return PlainTextResponse(render(worker, ens, name), media_type="text/plain; version=0.0.4")

    return router


def _prompt_cache(ens) -> dict[str, Any]:
    """The saved prompts (--cache-ram): the budget, and what the members keep now."""
    caches = [member_cache_stats(m) or PromptCacheStats() for m in ens.members]
    return {
        "cache_ram_mib": getattr(ens, "cache_ram", 0.0),
        "entries": [c.entries for c in caches],
        "bytes": sum(c.bytes for c in caches),
    }


def _piece(b: bytes) -> str | list[int]:
    """llama.cpp's with_pieces: the text, or the bytes when they are not whole UTF-8 characters."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return list(b)


async def _off_loop(fn) -> Any:
    try:
        return await asyncio.get_running_loop().run_in_executor(None, fn)
    except EdgeSpecensError as e:
        status, body = exception_status(e, "content")
        return JSONResponse(body, status)
