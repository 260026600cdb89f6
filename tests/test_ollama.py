"""The Ollama-compatible API, driven with the official `ollama` Python client against a real server
(uvicorn on a loopback port) over tiny GGUF members that have fill-in-the-middle tokens."""

from __future__ import annotations

import json

import httpx
import pytest
from tiny_servers import fim_duo, load, running_app

pytest.importorskip("fastapi")
ollama = pytest.importorskip("ollama")

from edge_specens import InvalidParameterError  # noqa: E402
from edge_specens.chat import chat_template  # noqa: E402
from edge_specens.fim import infill_tokens  # noqa: E402
from edge_specens.server import create_app  # noqa: E402
from edge_specens.server.ollama_schema import ChatRequest, GenerateRequest, generation_options  # noqa: E402

MSGS = [{"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    ens = load(fim_duo(tmp_path_factory.mktemp("ollama")))
    with running_app(create_app(ens, model_name="tiny-duo")) as url:
        yield {"url": url, "ens": ens, "client": ollama.Client(host=url, timeout=60)}
    ens.close()


def test_version_tags_ps_and_show(srv):
    c = srv["client"]
    assert httpx.get(f"{srv['url']}/api/version", timeout=10).json()["version"].count(".") == 2
    (model,) = c.list().models
    assert model.model == "tiny-duo:latest" and model.size > 0 and model.details.format == "gguf"
    assert model.details.family == "llama" and model.details.quantization_level == "F32"
    (loaded,) = c.ps().models
    assert loaded.model == "tiny-duo:latest" and loaded.context_length == 512 and loaded.size_vram == 0
    for name in ("tiny-duo", "tiny-duo:latest"):
        show = c.show(name)
        params = dict(line.split(None, 1) for line in show.parameters.splitlines())
        assert params["num_ctx"] == "512" and json.loads(params["stop"]) == "</s>"  # as Continue parses them
        assert ".Suffix" in show.template and "<|fim_prefix|>" in show.template  # how Continue detects FIM
        assert show.capabilities == ["completion", "insert"]
        assert show.modelinfo["llama.context_length"] == 512
    with pytest.raises(ollama.ResponseError) as e:
        c.show("llama3:8b")
    assert e.value.status_code == 404 and "not found" in e.value.error


def test_chat_streamed_and_not(srv):
    c, ens = srv["client"], srv["ens"]
    options = {"num_predict": 6, "temperature": 0, "strategy": "standard"}
    r = c.chat(model="tiny-duo", messages=MSGS, options=options)
    assert r.done and r.done_reason == "length" and r.eval_count == 6 and r.message.role == "assistant"
    assert r.prompt_eval_count == len(chat_template(ens).tokens(MSGS))
    assert r.total_duration >= r.eval_duration > 0 and r.prompt_eval_duration > 0 and r.load_duration == 0
    ref = ens.create_chat_completion(MSGS, max_tokens=6, temperature=0, strategy="standard")
    assert r.message.content == ref["choices"][0]["message"]["content"]
    parts = list(c.chat(model="tiny-duo", messages=MSGS, options=options, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].eval_count == 6
    assert "".join(p.message.content for p in parts) == r.message.content
    lp = c.chat(model="tiny-duo", messages=MSGS, options=options, logprobs=True, top_logprobs=2)
    assert len(lp.logprobs) == 6 and all(len(e.top_logprobs) == 2 for e in lp.logprobs)
    load_only = c.chat(model="tiny-duo", messages=[])
    assert load_only.done and load_only.done_reason == "load"


def test_generate_with_a_suffix_and_with_a_schema(srv):
    c, ens = srv["client"], srv["ens"]
    r = c.generate(model="tiny-duo", prompt="def f(x):\n    ", suffix="\n    return y\n", options={"num_predict": 5})
    assert r.done and r.eval_count >= 1
    assert r.prompt_eval_count == len(infill_tokens(ens, "def f(x):\n    ", "\n    return y\n", max_tokens=5))
    schema = {"type": "string", "enum": ["red", "green", "blue"]}
    for temperature in (0, 1):
        r = c.generate(model="tiny-duo", prompt="Pick a colour.", format=schema, options={"temperature": temperature})
        assert r.done_reason == "stop" and json.loads(r.response) in schema["enum"]
    r = c.generate(model="tiny-duo", prompt="hello", raw=True, options={"num_predict": 3, "seed": -1})
    assert r.prompt_eval_count == len(ens.tokenize("hello")) and r.eval_count == 3
    streamed = list(c.generate(model="tiny-duo", prompt="hello", stream=True, options={"num_predict": 3}))
    assert streamed[-1].done and streamed[-1].eval_count == 3


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: c.chat(model="m", messages=MSGS, options={"bogus": 1}), "unknown option(s) in options: bogus"),
        (lambda c: c.chat(model="m", messages=MSGS, options={"mirostat": 2}), "options.mirostat is not supported"),
        (lambda c: c.chat(model="m", messages=MSGS, options={"num_predict": 0}), "num_predict"),
        (lambda c: c.chat(model="m", messages=MSGS, options={"temperature": -1}), "temperature"),
        (lambda c: c.chat(model="m", messages=MSGS, options={"strategy": "nope"}), "unknown strategy"),
        (lambda c: c.chat(model="m", messages=[{**MSGS[0], "images": ["aGk="]}]), "messages[0].images"),
        (lambda c: c.chat(model="m", messages=MSGS, tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
        (lambda c: c.chat(model="m", messages=MSGS, logprobs=True, top_logprobs=1000), "top_logprobs"),
        (lambda c: c.generate(model="m", prompt="x", images=["aGk="]), "images"),
        (lambda c: c.generate(model="m", prompt="x", template="{{ .Prompt }}"), "template"),
        (lambda c: c.generate(model="m", prompt="x", suffix="y", raw=True), "raw mode does not support suffix"),
    ],
)
def test_bad_requests_are_400_in_ollamas_shape_and_the_server_stays_healthy(srv, call, message):
    with pytest.raises(ollama.ResponseError) as e:
        call(srv["client"])
    assert e.value.status_code == 400 and message in e.value.error, e.value.error
    assert httpx.get(f"{srv['url']}/health", timeout=10).json()["status"] == "ok"


def test_bad_bodies_are_400_in_ollamas_shape(srv):
    url = srv["url"]
    for path, body, message in (
        ("/api/chat", b"{not json", "not valid JSON"),
        ("/api/chat", b"[1]", "JSON object"),
        ("/api/generate", b'{"prompt": 3}', "prompt"),
        ("/api/generate", b'{"prompt": "x", "format": "yaml"}', "format"),  # the client refuses to send it
        ("/api/generate", b'{"prompt": "x", "context": [1, 2]}', "context"),
    ):
        r = httpx.post(f"{url}{path}", content=body, timeout=10)
        assert r.status_code == 400 and message in r.json()["error"], r.text


def test_options_map_onto_the_one_set_of_generation_options():
    kw = generation_options(
        ChatRequest(
            options={
                "num_predict": 7,
                "temperature": 0.5,
                "top_k": 3,
                "seed": 9,
                "stop": ["\n"],
                "repeat_last_n": -1,
                "draft_num_predict": 4,
                "num_ctx": 99999,  # load-time options change nothing
                "num_thread": 2,
                "typical_p": 1.0,  # neutral: accepted
                "lookup": 2,  # our own option names work too
            },
            format="json",
            logprobs=True,
        ),
        512,
    )
    assert kw == {
        "max_tokens": 7,
        "temperature": 0.5,
        "top_k": 3,
        "seed": 9,
        "stop": ["\n"],
        "repeat_last_n": 512,
        "gamma": 4,
        "lookup": 2,
        "json_schema": {"type": "object"},
        "logprobs": 0,
    }
    assert generation_options(GenerateRequest(options={"num_predict": -1, "seed": -1}), 512) == {"max_tokens": 512}
    with pytest.raises(InvalidParameterError, match="typical_p"):
        generation_options(GenerateRequest(options={"typical_p": 0.9}), 512)


def test_the_api_key_guards_the_ollama_api(tmp_path):
    ens = load(fim_duo(tmp_path))
    try:
        with running_app(create_app(ens, api_key="sekrit")) as url:
            with pytest.raises(ollama.ResponseError) as e:
                ollama.Client(host=url).list()
            assert e.value.status_code == 401 and "API key" in e.value.error
            keyed = ollama.Client(host=url, headers={"Authorization": "Bearer sekrit"})
            assert keyed.list().models
    finally:
        ens.close()
