"""The FastAPI application: OpenAI's /v1 endpoints in front of the worker that owns the ensemble.

Handlers validate the body, queue a Job (503 + Retry-After when the queue is full), and wait for
the worker's messages; a stream is forwarded as server-sent events in OpenAI's chunk format ending
with `data: [DONE]`. A client that goes away (while waiting or mid-stream) cancels its job.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..chat import chat_template
from ..errors import InvalidParameterError
from ..fim import infill_tokens
from ..openai_format import OpenAIFormat
from ..tools import HERMES, ToolChatFormat, check_combination, constrain_tools
from .content_type import not_json_content_type
from .docs import install_docs
from .provenance import with_provenance
from .run import DEFAULT_MAX_BODY
from .schema import ChatCompletionRequest, CompletionRequest, error_body, exception_status, validation_error_body
from .worker import Job, QueueFullError, ServerClosedError, Worker

log = logging.getLogger("edge_specens.server")

RETRY_AFTER_S = 1
BODY_TIMEOUT_S = 30.0  # the longest wait for the next piece of a request body
_POLL_S = 0.2  # how often a waiting handler checks whether its client is still there


class _ClientGone(Exception):
    pass


def member_health(member) -> dict:
    """Where a member runs and whether it can serve: a remote one whose server went away says
    "lost" (with why) until a request reconnects it."""
    out = {"name": member.name, "device": member.device, "status": "ok"}
    lost = getattr(member, "lost", None)
    if lost:
        out.update(status="lost", error=lost)
    return out


def _error(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


# what an API key guards: the OpenAI API, the Ollama API and llama-server's native routes
KEYED_PATHS = ("/v1", "/api/", "/props", "/tokenize", "/detokenize", "/infill", "/metrics")


class _ApiKeyMiddleware:
    """Pure ASGI: with a key set, KEYED_PATHS need `Authorization: Bearer <key>` (checked before the body)."""

    def __init__(self, app, api_key: str):
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(KEYED_PATHS) and scope.get("method") != "OPTIONS":
            auth = dict(scope.get("headers") or ()).get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
                msg = "missing API key" if not auth else "invalid API key"
                msg += ": send the header 'Authorization: Bearer <key>'"
                body = (  # Ollama's clients read {"error": "..."}
                    {"error": msg} if scope["path"].startswith("/api/") else error_body(msg, code="invalid_api_key")
                )
                resp = _error(401, body, headers={"WWW-Authenticate": "Bearer"})
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_name(value: bytes) -> str:
    """The name in a Host header, without the port: b"[::1]:8080" -> "::1", b"LocalHost." -> "localhost"."""
    host = value.decode("latin-1").strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class _HostCheckMiddleware:
    """Pure ASGI: answer only requests whose Host header names this server (any port), else 400.

    A keyless server on 127.0.0.1 is otherwise reachable from any web page through DNS rebinding:
    the page's own name is re-pointed at 127.0.0.1, so the browser treats the server as same-origin
    (CORS never applies), but the Host header still carries the page's name. run_server turns this on
    for loopback addresses (DNS names of other machines cannot be told from rebound ones)."""

    def __init__(self, app, allowed: frozenset[str]):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            hosts = [v for k, v in scope.get("headers") or () if k == b"host"]
            if any(host_name(h) not in self.allowed for h in hosts):
                names = ", ".join(sorted(self.allowed))
                resp = _error(
                    400,
                    error_body(
                        f"the Host header names another server; this one answers requests for {names} "
                        "(serve --allowed-host NAME adds a name)",
                        code="invalid_host",
                    ),
                )
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _RequestLimitMiddleware:
    """Pure ASGI: at most `limit` requests in progress at once (reading a body, waiting in the queue,
    generating, streaming); more get 503 + Retry-After. It counts requests, not connections:
    uvicorn's own limit_concurrency counted every open connection, so 256 sockets that never sent a
    byte locked every client out (run.py closes idle connections instead). /health and /metrics are
    not counted, so that a monitor still sees the server when it is full."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in ("/health", "/metrics"):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            resp = _error(
                503,
                error_body(
                    f"the server is busy ({self.limit} requests in progress); retry shortly",
                    type_="server_error",
                    code="too_many_requests",
                ),
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            await resp(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class _BodyLimitMiddleware:
    """Pure ASGI: refuse a request body over `limit` bytes with 413, before it is read whole.

    A 52 MB body used to take 32 s to reject (parsed, then tokenized) while everyone waited.
    Content-Length is checked first; a chunked body is counted as it arrives.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        too_big = _error(
            413,
            error_body(f"the request body exceeds {self.limit} bytes (--max-body)", code="request_too_large"),
        )
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await too_big(scope, receive, send)
            return
        seen = 0
        complete = False  # the whole body has arrived: later receives wait for a disconnect, untimed
        refused = False  # a 413/408 went out: the app sees a disconnect and nothing it sends goes out

        async def counted_receive():
            nonlocal seen, complete, refused
            if refused:
                return {"type": "http.disconnect"}
            if complete:
                return await receive()
            try:  # a body that trickles in must not hold a connection (and a handler) for ever
                message = await asyncio.wait_for(receive(), BODY_TIMEOUT_S)
            except asyncio.TimeoutError:
                refused = True
                await _error(408, error_body("the request body arrived too slowly", code="request_timeout"))(
                    scope, receive, send
                )
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.limit:
                    refused = True
                    await too_big(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)


def _status(e: BaseException, prompt_param: str = "prompt") -> tuple[int, dict]:
    """HTTP status and OpenAI error object for an error the worker reports."""
    if isinstance(e, ServerClosedError):
        return 503, error_body(str(e), type_="server_error", code="shutting_down")
    return exception_status(e, prompt_param)


def tool_error_body(e: InvalidParameterError) -> dict:
    """OpenAI's error object for a refused tool request, its param the field the message starts with."""
    text = str(e)
    param = next((p for p in ("tool_choice", "parallel_tool_calls", "messages") if text.startswith(p)), "tools")
    return error_body(text, param=param, code="invalid_value")


def _with_tool_grammar(make_prompt, tools, gen_kw: dict):
    """make_prompt, which also puts the calls' grammar for the ensemble's vocabulary into gen_kw (the
    dict the Job holds): it runs on the worker thread, before the worker reads gen_kw (worker.py), and
    building the grammar may read the vocabulary through llguidance (tools/grammar.py)."""

    def make(e):
        prompt = make_prompt(e)
        constrain_tools(tools, gen_kw, e)
        return prompt

    return make


def _sse(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class _JobStream(StreamingResponse):
    """A stream whose job is cancelled however the response ends (done, disconnect, server error)."""

    def __init__(self, content, job: Job, **kw):
        super().__init__(content, **kw)
        self._job = job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._job.cancel.set()


async def _next_message(job: Job, request: Request) -> tuple[str, Any]:
    """The worker's next message for this job; raises _ClientGone if the client disconnects meanwhile."""
    get = asyncio.ensure_future(job.messages.get())
    try:
        while True:
            done, _ = await asyncio.wait({get}, timeout=_POLL_S)
            if done:
                return get.result()
            if await request.is_disconnected():
                raise _ClientGone()
    finally:
        if not get.done():
            get.cancel()


def create_app(
    ens,
    *,
    api_key: str | None = None,
    max_queue: int = 64,
    model_name: str | None = None,
    cors_origins=(),
    max_body: int = DEFAULT_MAX_BODY,
    allowed_hosts: Iterable[str] | None = None,
    max_requests: int | None = None,
    webui: bool = True,
) -> FastAPI:
    """An OpenAI-compatible ASGI app serving `ens`. Exactly one worker thread touches the ensemble.

    api_key: when set, /v1/* requires `Authorization: Bearer <api_key>` (/health stays open).
    max_queue: how many requests may wait for the ensemble (besides the running one); more get 503.
    model_name: the model id to report (default: the ensemble's name).
    cors_origins: browser origins allowed to call the API ("*" for any); none by default.
    max_body: request bodies over this many bytes get 413 before they are read.
    allowed_hosts: when given, requests whose Host header names anything else get 400 (run_server
        sets it for loopback addresses: DNS rebinding); None accepts any Host.
    max_requests: when given, at most this many requests in progress (/health aside); more get 503.
    webui: serve the chat page at / (webui.py).
    """
    worker = Worker(ens, max_queue=max_queue)
    name = model_name or ens.name
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, worker.stop)

    app = FastAPI(
        title="edge-specens",
        description="OpenAI-compatible server for an ensemble of GGUF models",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # docs.py serves /docs from vendored files (no CDN); redoc would need one
        redoc_url=None,
    )
    install_docs(app)
    app.state.worker = worker
    app.state.ensemble = ens
    app.add_middleware(_BodyLimitMiddleware, limit=max_body)
    if max_requests is not None:  # inside the key check: a client without the key holds no slot
        app.add_middleware(_RequestLimitMiddleware, limit=max_requests)
    if api_key:  # outside the body limit: an unauthenticated client cannot even make us count its bytes
        app.add_middleware(_ApiKeyMiddleware, api_key=api_key)
    if cors_origins:  # added last = outermost: a 401 also carries the CORS headers a browser needs to read it
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
            # any request header: the OpenAI SDKs send a changing set of x-stainless-* headers, and
            # access is decided by the API key, never by which headers a page may send
            allow_headers=["*"],
        )
    if allowed_hosts is not None:  # outermost: a rebound page gets nothing, not even CORS headers
        allowed = frozenset(h.strip().lower().strip("[]").rstrip(".") for h in allowed_hosts)
        app.add_middleware(_HostCheckMiddleware, allowed=allowed)

    # ------------------------------------------------------------------ errors → OpenAI error objects
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        wrong_type = not_json_content_type(request.headers.get("content-type")) if await request.body() else None
        if wrong_type is not None:  # curl -d without -H: a JSON body FastAPI did not read as JSON
            return _error(400, wrong_type)
        return _error(400, validation_error_body(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error(
            exc.status_code, error_body(str(exc.detail), type_=type_, code=code), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error")
        status, body = exception_status(exc)
        return _error(status, body)

    # ------------------------------------------------------------------ the one path every request takes
    async def run(request: Request, body, chat: bool, make_prompt, tools=None) -> Response:
        bad = body.unsupported()
        if bad:
            return _error(400, error_body("; ".join(m for _, m in bad), param=bad[0][0], code="unsupported"))
        gen_kw = body.generation_kwargs(ens.n_ctx)
        if tools is not None:
            try:
                check_combination(tools, gen_kw)  # tool calls and another constraint: refused at once
            except InvalidParameterError as e:
                return _error(400, tool_error_body(e))
            make_prompt = _with_tool_grammar(make_prompt, tools, gen_kw)
        job = Job(make_prompt, gen_kw, body.stream)
        job.provenance = bool(body.provenance)
        try:
            worker.submit(job)
        except QueueFullError as e:
            return _error(
                503,
                error_body(f"the server is busy ({e}); retry shortly", type_="server_error", code="queue_full"),
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        except ServerClosedError as e:
            return _error(*_status(e))
        fmt_options: dict = dict(
            extended=True,
            include_usage=bool((body.stream_options or {}).get("include_usage")),
            piece_bytes=ens.piece,  # token spellings for logprobs (vocabulary reads: introspect.py)
        )
        parsed = tools is not None and tools.calls_allowed  # the reply is read for tool calls
        fmt = ToolChatFormat(HERMES, name, **fmt_options) if parsed else OpenAIFormat(chat, name, **fmt_options)
        prompt_param = "messages" if chat else "prompt"
        try:
            while True:
                kind, value = await _next_message(job, request)
                if kind == "error":
                    return _error(*_status(value, prompt_param))
                if kind == "start" and body.stream:
                    return _JobStream(
                        _events(job, fmt),
                        job,
                        media_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                    )
                if kind == "done":
                    return JSONResponse(fmt.full(value))
        except _ClientGone:
            worker.withdraw(job)  # a waiting job leaves the queue at once
            return Response(status_code=499)
        except BaseException:
            worker.withdraw(job)
            raise

    async def _events(job: Job, fmt: OpenAIFormat) -> AsyncIterator[bytes]:
        try:
            for c in fmt.head():
                yield _sse(c)
            logprobs = None  # those of the next piece's tokens (the logprobs option)
            spans = None  # where the next piece's tokens came from (the provenance option)
            while True:
                kind, value = await job.messages.get()
                if kind == "logprobs":
                    logprobs = value
                elif kind == "provenance":  # kept until a chunk goes out (a held-back tool call's tokens)
                    spans = value if spans is None else [*spans, *value]
                elif kind == "piece":
                    chunks = fmt.pieces(value, logprobs)  # none while a tool call's markup is held back
                    for i, chunk in enumerate(chunks):
                        yield _sse(with_provenance(chunk, spans) if i == 0 else chunk)
                    logprobs = None  # the format keeps those of a piece that sent nothing (tools/chunks.py)
                    spans = spans if not chunks else None
                elif kind == "done":
                    for chunk in fmt.last(value, logprobs):
                        yield _sse(chunk)
                    yield _sse("[DONE]")
                    return
                elif kind == "error":
                    yield _sse(_status(value)[1])
                    return
        finally:
            job.cancel.set()

    # ------------------------------------------------------------------ endpoints
    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health():
        ok = worker.alive
        members = [member_health(m) for m in ens.members]
        degraded = any(m["status"] != "ok" for m in members)
        return JSONResponse(
            {
                "status": "error" if not ok else "degraded" if degraded else "ok",
                "members": members,
                "model": name,
                "busy": worker.current is not None,
                "waiting": worker.waiting,
                "max_queue": worker.max_queue,
                "completed": worker.completed,
                "cancelled": worker.cancelled,
                "failed": worker.failed,
            },
            status_code=200 if ok else 503,
        )

    def model_card() -> dict:
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "edge-specens",
            "context_length": ens.n_ctx,  # what aider and other clients look for (also in /props, /api/show)
            "edge_specens": {"method": ens.spec.method, "members": [m.name for m in ens.members], "n_ctx": ens.n_ctx},
        }

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def list_models():
        return {"object": "list", "data": [model_card()]}

    @app.api_route("/v1/models/{model_id:path}", methods=["GET", "HEAD"])
    async def get_model(model_id: str):
        if model_id != name:
            return _error(
                404,
                error_body(
                    f"model {model_id!r} not found; this server serves {name!r}", param="model", code="model_not_found"
                ),
            )
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        try:
            tools = body.tool_request()  # checked before queueing: a bad tool is a 400 at once
        except InvalidParameterError as e:
            return _error(400, tool_error_body(e))
        messages = [m.as_dict() for m in body.messages]
        rendered = list(tools.rendered) if tools is not None else None
        return await run(request, body, True, lambda e: chat_template(e).tokens(messages, tools=rendered), tools)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        prompt, suffix = body.prompt, body.suffix
        if suffix:  # fill in the middle between the prompt and the suffix (fim.py)
            max_tokens = body.generation_kwargs(ens.n_ctx)["max_tokens"]
            return await run(request, body, False, lambda e: infill_tokens(e, prompt, suffix, max_tokens=max_tokens))
        return await run(request, body, False, lambda e: prompt)

    # the Ollama API and llama-server's own routes, on the same worker
    from .infill import infill_router
    from .introspect import introspect_router
    from .ollama import ollama_router

    for router in (ollama_router, introspect_router, infill_router):
        app.include_router(router(ens, worker, name))
    if webui:
        from .webui import mount_webui

        mount_webui(app, api_key=api_key, model_name=name)
    return app
