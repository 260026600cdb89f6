"""llama-server's `POST /infill`: code completion at a cursor, as llama.vscode and llama.vim send it.

The body is llama.cpp's: `input_prefix`, `input_suffix`, `input_extra` ([{"text", "filename"}]: other
files for context), `prompt` (text the middle starts with), `n_predict`, `stream`, and the sampling
fields every endpoint takes (schema.py; unknown llama.cpp fields such as `cache_prompt`, `samplers`
or `t_max_predict_ms` are ignored). The prompt is the model's own FIM layout (fim.py); the answer is
llama.cpp's completion object (`content`, `stop`, `tokens_predicted`, `timings`, ...), streamed as
server-sent events of the same shape when asked.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..errors import EdgeSpecensError
from ..fim import extra_chunks, infill_tokens
from ..logprobs import llama_probabilities
from .jobs import JobStream, Refused, stream_messages, submit, until
from .schema import _Sampling, error_body, exception_status
from .worker import Job


class InfillRequest(_Sampling):
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[dict] | None = None
    prompt: str = ""
    n_predict: int | None = None  # llama.cpp's max_tokens; -1: until the context is full
    n_probs: int | None = None  # llama.cpp's name for the logprobs option
    logprobs: int | None = None

    def unsupported(self):
        out = super().unsupported()
        if self.n_predict is not None and self.n_predict != -1 and self.n_predict < 1:
            out.append(("n_predict", "n_predict must be -1 (no limit) or at least 1"))
        return out

    def generation_kwargs(self, default_max_tokens: int) -> dict:
        kw = super().generation_kwargs(default_max_tokens)
        if self.max_tokens is None and self.n_predict is not None and self.n_predict >= 1:
            kw["max_tokens"] = self.n_predict
        if self.logprobs is None and self.n_probs:
            kw["logprobs"] = self.n_probs
        return kw


def completion_object(ens, name: str, res, stop_strings) -> dict[str, Any]:
    """llama.cpp's final /completion object for a GenerationResult."""
    s = res.stats
    word = ""
    if res.finish_reason == "stop" and stop_strings:  # a stop string, or the end-of-generation token?
        said = ens.detokenize(res.tokens)
        word = next((w for w in stop_strings if w in said), "")
    stop_type = {"stop": "word" if word else "eos", "length": "limit"}.get(res.finish_reason, "none")
    evaluated = max(s.prompt_tokens - s.reused_tokens, 0)
    decode_s = max(s.seconds - s.prompt_seconds, 0.0)
    out = {
        "index": 0,
        "content": "",
        "id_slot": 0,
        "stop": True,
        "model": name,
        "tokens_predicted": s.new_tokens,
        "tokens_evaluated": s.prompt_tokens,
        "tokens_cached": s.reused_tokens,
        "has_new_line": "\n" in res.text,
        "truncated": False,
        "stop_type": stop_type,
        "stopping_word": word,
        "timings": {
            "cache_n": s.reused_tokens,
            "prompt_n": evaluated,
            "prompt_ms": s.prompt_seconds * 1000,
            "prompt_per_second": evaluated / s.prompt_seconds if s.prompt_seconds > 0 else 0.0,
            "predicted_n": s.new_tokens,
            "predicted_ms": decode_s * 1000,
            "predicted_per_second": s.new_tokens / decode_s if decode_s > 0 else 0.0,
        },
        "edge_specens": s.to_dict(extended=True),
    }
    if res.logprobs is not None:
        out["completion_probabilities"] = llama_probabilities(res.logprobs, ens.piece)
    return out


def _error(e: BaseException) -> tuple[int, dict]:
    status, body = exception_status(e, "input_prefix")
    if body["error"].get("param") == "suffix":
        body["error"]["param"] = "input_suffix"
    return status, body


def _failed(e: BaseException) -> JSONResponse:
    status, body = _error(e)
    return JSONResponse(body, status)


def _sse(obj: dict) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def infill_router(ens, worker, name: str) -> APIRouter:
    router = APIRouter()

    @router.post("/infill")
    async def infill(body: InfillRequest, request: Request):
        bad = body.unsupported()
        if bad:
            return JSONResponse(error_body("; ".join(m for _, m in bad), param=bad[0][0], code="unsupported"), 400)
        try:
            extra = extra_chunks(body.input_extra)
        except EdgeSpecensError as e:
            status, err = exception_status(e)
            err["error"]["param"] = "input_extra"
            return JSONResponse(err, status)
        gen_kw = body.generation_kwargs(ens.n_ctx)
        prefix, suffix, prompt, max_tokens = body.input_prefix, body.input_suffix, body.prompt, gen_kw["max_tokens"]
        job = Job(lambda e: infill_tokens(e, prefix, suffix, extra, prompt, max_tokens), gen_kw, body.stream)
        try:
            submit(worker, job)
        except Refused as e:
            return JSONResponse(error_body(e.message, type_="server_error", code="busy"), e.status, headers=e.headers)
        first = await until(worker, job, request, ("start", "done"))
        if first is None:
            return Response(status_code=499)
        kind, value = first
        if kind == "error":
            return _failed(value)
        stop = tuple(gen_kw.get("stop") or ())
        if not body.stream:
            done = (kind, value) if kind == "done" else await until(worker, job, request, ("done",))
            if done is None:
                return Response(status_code=499)
            if done[0] == "error":
                return _failed(done[1])
            res = done[1]
            return {**completion_object(ens, name, res, stop), "content": res.text}

        async def events():
            logprobs = None  # the next piece's (n_probs)
            async for kind, value in stream_messages(job):
                if kind == "logprobs":
                    logprobs = value
                elif kind == "piece":
                    chunk = {"index": 0, "content": value, "stop": False, "id_slot": 0, "tokens": []}
                    if logprobs:
                        chunk["completion_probabilities"] = llama_probabilities(logprobs, ens.piece)
                    logprobs = None
                    yield _sse(chunk)
                elif kind == "done":  # the tokens of the streamed pieces went out with them
                    yield _sse(completion_object(ens, name, replace(value, logprobs=logprobs), stop))
                elif kind == "error":
                    yield _sse(_error(value)[1])

        return JobStream(events(), job, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return router
