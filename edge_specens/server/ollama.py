"""An Ollama-compatible API beside the OpenAI one, on the same worker and the same generation options.

Editors and apps that speak only Ollama's API (the VS Code Ollama extension, Zed's and JetBrains'
Ollama providers, Continue's `ollama` provider, LangChain's ChatOllama, Open WebUI's Ollama
connection) find models with /api/tags and /api/show, check the server with /api/version and talk
/api/chat and /api/generate, streamed as NDJSON (one JSON object a line; `stream` defaults to true).
The ensemble is one model here, listed as NAME:latest; chat and generate accept any model name, as
/v1 does. Errors are Ollama's {"error": "..."}.

`options` map onto params.GenerationOptions, one set of definitions for both APIs (ollama_schema.py).
`format` ("json" or a JSON schema) is structured output on r (constrain.py); `suffix` is
fill-in-the-middle (fim.py); `think` and `keep_alive` are accepted (the weights stay loaded; nothing is
split out as thinking); `tools` are OpenAI's (tools/: tool_choice auto), the calls come back as
message.tool_calls with the arguments an object, each call in one chunk when streamed; images and Go
templates get a 400.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from .._version import __version__
from ..chat import CHATML_TEMPLATE, chat_template
from ..errors import InvalidParameterError
from ..fim import infill_tokens
from ..logprobs import chat_logprobs
from ..tools import HERMES, CallParser, check_combination, constrain_tools, parse_all, tool_request
from .facts import Facts, facts, iso, parameter_size
from .jobs import JobStream, Refused, stream_messages, submit, until
from .ollama_schema import (
    ChatRequest,
    GenerateRequest,
    OllamaRequest,
    ShowRequest,
    chat_messages,
    generation_options,
    refuse_unsupported,
)
from .schema import exception_status, validation_error_body
from .worker import Job

# the Ollama API release whose fields this follows (logprobs arrived in 0.12.11); clients compare it
OLLAMA_API_VERSION = "0.12.11"


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _now() -> str:
    return iso(datetime.now(timezone.utc))


def _ns(seconds: float) -> int:
    return int(max(seconds, 0.0) * 1e9)


def tag_of(name: str) -> str:
    """The name clients see: Ollama's NAME:TAG, with the tag `latest` when the name has none."""
    return name if ":" in name else f"{name}:latest"


def details(f: Facts) -> dict:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": f.architecture,
        "families": list(dict.fromkeys(m.architecture for m in f.members)),
        "parameter_size": parameter_size(f.n_params),
        "quantization_level": f.quantization,
    }


def ollama_template(f: Facts) -> str:
    """The GGUF's Jinja chat template; for a FIM model inside Ollama's `{{ if .Suffix }}` branch, which
    is how clients (Continue) tell that /api/generate takes a suffix. Rendering is ours, never Go's."""
    jinja = f.chat_template or CHATML_TEMPLATE
    if f.fim_text is None:
        return jinja
    pre, suf, mid = f.fim_text
    return f"{{{{- if .Suffix }}}}{pre}{{{{ .Prompt }}}}{suf}{{{{ .Suffix }}}}{mid}{{{{- else }}}}{jinja}{{{{- end }}}}"


def parameters(f: Facts) -> str:
    """Ollama's `parameters` text, one "key value" a line (Continue reads num_ctx and stop from it)."""
    lines = [f"num_ctx {f.n_ctx}"]
    if f.eos_text:
        lines.append(f"stop {json.dumps(f.eos_text)}")
    return "\n".join(lines)


def ollama_router(ens, worker, name: str) -> APIRouter:
    router = APIRouter()
    tag = tag_of(name)
    started = datetime.now(timezone.utc)

    def served(model: str) -> bool:
        return model in ("", name, tag)

    def entry(f: Facts) -> dict:
        return {
            "name": tag,
            "model": tag,
            "modified_at": iso(f.modified_at),
            "size": f.size,
            "digest": f.digest,
            "details": details(f),
        }

    @router.get("/api/version")
    async def version():
        return {"version": OLLAMA_API_VERSION, "edge_specens": __version__}

    @router.get("/api/tags")
    async def tags():
        return {"models": [entry(facts(ens, name))]}

    @router.get("/api/ps")
    async def ps():
        f = facts(ens, name)
        on_gpu = sum(m.size for m in f.members if m.device != "cpu")
        until_ = started + timedelta(days=365 * 100)  # loaded for as long as the server runs
        return {"models": [{**entry(f), "expires_at": iso(until_), "size_vram": on_gpu, "context_length": f.n_ctx}]}

    @router.post("/api/show")
    async def show(request: Request):
        body = await _parse(request, ShowRequest)
        if isinstance(body, Response):
            return body
        model = body.model or body.name
        if not served(model):
            return _error(404, f"model '{model}' not found; this server serves '{tag}'")
        f = facts(ens, name)
        template = ollama_template(f)
        modelfile = "\n".join(
            [
                "# Modelfile generated by edge-specens: an ensemble of " + ", ".join(m.name for m in f.members),
                f"FROM {f.members[0].path if f.members else name}",
                f'TEMPLATE """{template}"""',
                *(f"PARAMETER {line}" for line in parameters(f).splitlines()),
            ]
        )
        return {
            "license": "",
            "modelfile": modelfile,
            "parameters": parameters(f),
            "template": template,
            "details": details(f),
            "model_info": {
                "general.architecture": f.architecture,
                "general.parameter_count": f.n_params,
                f"{f.architecture}.context_length": f.n_ctx,
                "edge_specens.method": f.method,
                "edge_specens.members": [m.name for m in f.members],
            },
            "capabilities": [
                "completion",
                *(["tools"] if speaks_tools(f.chat_template) else []),
                *(["insert"] if f.fim is not None else []),
            ],
            "modified_at": iso(f.modified_at),
        }

    @router.post("/api/generate")
    async def generate(request: Request):
        body = await _parse(request, GenerateRequest)
        if isinstance(body, Response):
            return body
        if not body.prompt and not body.suffix:  # Ollama's "load the model" (keep_alive 0: unload) call
            reason = "unload" if body.keep_alive in (0, "0", "0s") else "load"
            return {
                "model": body.model or tag,
                "created_at": _now(),
                "response": "",
                "done": True,
                "done_reason": reason,
            }
        prompt, suffix, system, raw = body.prompt, body.suffix, body.system, body.raw

        def make_prompt(e, max_tokens: int):
            if suffix:
                return infill_tokens(e, prompt, suffix, max_tokens=max_tokens)
            if raw:
                return prompt
            msgs = [{"role": "system", "content": system}] if system else []
            return chat_template(e).tokens([*msgs, {"role": "user", "content": prompt}])

        return await respond(request, body, make_prompt, chat=False)

    @router.post("/api/chat")
    async def chat(request: Request):
        body = await _parse(request, ChatRequest)
        if isinstance(body, Response):
            return body
        if not body.messages:  # "load the model"
            return {
                "model": body.model or tag,
                "created_at": _now(),
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "unload" if body.keep_alive in (0, "0", "0s") else "load",
            }
        messages = chat_messages(body)
        try:
            tools = tool_request(body.tools)
        except InvalidParameterError as e:
            return _error(400, str(e))
        rendered = list(tools.rendered) if tools is not None else None
        return await respond(
            request, body, lambda e, _: chat_template(e).tokens(messages, tools=rendered), chat=True, tools=tools
        )

    async def respond(request: Request, body: OllamaRequest, make_prompt, chat: bool, tools=None) -> Any:
        try:
            refuse_unsupported(body)
            kw = generation_options(body, ens.n_ctx)
            if tools is not None:
                check_combination(tools, kw)
        except InvalidParameterError as e:
            return _error(400, str(e))
        max_tokens = kw["max_tokens"]

        def prompt_of(e):  # on the worker thread, before it reads kw: the calls' grammar for e's vocabulary
            prompt = make_prompt(e, max_tokens)
            if tools is not None:
                constrain_tools(tools, kw, e)
            return prompt

        job = Job(prompt_of, kw, body.stream)
        try:
            submit(worker, job)
        except Refused as e:
            return _error(e.status, e.message, e.headers)
        first = await until(worker, job, request, ("start", "done"))
        if first is None:
            return Response(status_code=499)
        if first[0] == "error":
            return _error(*_status(first[1]))
        model = body.model or tag
        parser = CallParser(HERMES) if tools is not None and tools.calls_allowed else None

        def chunk(text: str, logprobs=None, calls=()) -> dict:
            d: dict[str, Any] = {"model": model, "created_at": _now()}
            if chat:
                d["message"] = {"role": "assistant", "content": text}
                if calls:
                    d["message"]["tool_calls"] = [ollama_call(c) for c in calls]
            else:
                d["response"] = text
            d["done"] = False
            if logprobs:
                d["logprobs"] = chat_logprobs(logprobs, ens.piece)["content"]
            return d

        def final(res, text: str = "", logprobs=None) -> dict:
            s = res.stats
            return {
                **chunk(text, logprobs),
                "done": True,
                "done_reason": res.finish_reason,
                "total_duration": _ns(time.monotonic() - job.created),
                "load_duration": 0,
                "prompt_eval_count": s.prompt_tokens,
                "prompt_eval_duration": _ns(s.prompt_seconds),
                "eval_count": s.new_tokens,
                "eval_duration": _ns(s.seconds - s.prompt_seconds),
                "edge_specens": s.to_dict(extended=True),
            }

        if not body.stream:
            done = first if first[0] == "done" else await until(worker, job, request, ("done",))
            if done is None:
                return Response(status_code=499)
            if done[0] == "error":
                return _error(*_status(done[1]))
            res = done[1]
            if parser is None:
                return final(res, res.text, res.logprobs)
            whole = parse_all(HERMES, res.text)
            out = final(res, whole.content, res.logprobs)
            if whole.calls:
                out["message"]["tool_calls"] = [ollama_call(c) for c in whole.calls]
            return out

        async def lines():
            logprobs = None
            async for kind, value in stream_messages(job):
                if kind == "logprobs":  # kept until a line goes out (a held-back call's tokens)
                    logprobs = value if logprobs is None else [*logprobs, *value]
                elif kind == "piece" and parser is not None:  # content as it settles, each call once whole
                    events = parser.feed(value)
                    text = "".join(ev[1] for ev in events if ev[0] == "content")
                    calls = [parser.calls[ev[1]] for ev in events if ev[0] == "end"]
                    if text or calls:
                        yield _line(chunk(text, logprobs, calls))
                        logprobs = None
                elif kind == "piece":
                    yield _line(chunk(value, logprobs))
                    logprobs = None
                elif kind == "done":
                    tail = "".join(ev[1] for ev in parser.finish() if ev[0] == "content") if parser else ""
                    yield _line(final(value, tail, logprobs))
                elif kind == "error":
                    yield _line({"error": _status(value)[1]})

        return JobStream(lines(), job, media_type="application/x-ndjson")

    return router


def ollama_call(call) -> dict:
    """A parsed call in Ollama's shape: the arguments an object (a call cut off keeps what parses, else {})."""
    try:
        arguments = json.loads(call.arguments) if call.arguments else {}
    except ValueError:
        arguments = {}
    return {"function": {"name": call.name, "arguments": arguments if isinstance(arguments, dict) else {}}}


def speaks_tools(template: str | None) -> bool:
    """Does the GGUF template render tools in the format tools/ parses (what `capabilities` advertises)?"""
    from ..tools.formats import HERMES, reads_tools

    return bool(template) and HERMES.open in str(template) and reads_tools(str(template))


def _status(e: BaseException) -> tuple[int, str]:
    status, body = exception_status(e)
    return status, body["error"]["message"]


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


_Parsed = TypeVar("_Parsed", bound=BaseModel)


async def _parse(request: Request, model: type[_Parsed]) -> _Parsed | Response:
    """The body as `model`, or a 400 in Ollama's shape."""
    try:
        raw = await request.body()
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return _error(400, "the request body is not valid JSON")
    if not isinstance(data, dict):
        return _error(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:  # worded as on /v1 (one message per field)
        return _error(400, validation_error_body([dict(x) for x in e.errors()])["error"]["message"])
