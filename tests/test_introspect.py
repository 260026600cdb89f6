"""llama-server's introspection routes (/props, /tokenize, /detokenize, /metrics), the context length
in /v1/models, and image content parts refused with a 400 that names the field."""

from __future__ import annotations

import re

import httpx
import pytest
from tiny_servers import load, running_app

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from edge_specens.server import create_app  # noqa: E402


@pytest.fixture(scope="module")
def srv(tiny_models):
    ens = load([tiny_models["small"], tiny_models["big"]])
    with running_app(create_app(ens)) as url:
        yield url, ens
    ens.close()


def test_props(srv):
    url, ens = srv
    p = httpx.get(f"{url}/props", timeout=10).json()
    assert p["n_ctx"] == 512 == p["default_generation_settings"]["n_ctx"] and p["total_slots"] == 1
    params = p["default_generation_settings"]["params"]
    assert params["temperature"] == 0.8 and params["top_k"] == 40 and params["max_tokens"] == 512
    assert params["strategy"] == "auto" and "logprobs" in params
    assert p["chat_template"].startswith("{% for message in messages %}") and p["chat_template_source"] == "gguf"
    assert [m["name"] for m in p["members"]] == ["small.gguf", "big.gguf"]
    assert all(m["size"] > 0 and m["architecture"] == "llama" and m["n_params"] > 0 for m in p["members"])
    assert p["fim"] is False and p["modalities"] == {"vision": False, "audio": False}
    card = openai.OpenAI(base_url=f"{url}/v1", api_key="u", max_retries=0).models.list().data[0]
    assert card.context_length == 512  # what aider and others read


def test_tokenize_and_detokenize(srv):
    url, ens = srv
    r = httpx.post(f"{url}/tokenize", json={"content": "hello world"}, timeout=10).json()
    assert r["tokens"] == ens.tokenize("hello world", add_bos=False)
    with_bos = httpx.post(f"{url}/tokenize", json={"content": "hello", "add_special": True}, timeout=10).json()
    assert with_bos["tokens"][0] == 1 and with_bos["tokens"][1:] == ens.tokenize("hello", add_bos=False)
    pieces = httpx.post(f"{url}/tokenize", json={"content": "hello world", "with_pieces": True}, timeout=10).json()
    assert [p["id"] for p in pieces["tokens"]] == r["tokens"]
    assert "".join(p["piece"] for p in pieces["tokens"]) == " hello world"
    d = httpx.post(f"{url}/detokenize", json={"tokens": r["tokens"]}, timeout=10).json()
    assert d["content"] == " hello world"
    for path, body, param in (
        ("/detokenize", {"tokens": [10**9]}, "tokens"),
        ("/detokenize", {"tokens": ["a"]}, "tokens.0"),
        ("/tokenize", {"content": 3}, "content"),
        ("/tokenize", {}, "content"),
    ):
        r = httpx.post(f"{url}{path}", json=body, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert httpx.post(f"{url}/tokenize", content=b"{oops", timeout=10).status_code == 400


def _sample(text: str, name: str, **labels) -> float:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^edge_specens_{name}{'{' + re.escape(inner) + '}' if inner else ''} (\S+)$"
    m = re.search(pattern, text, re.M)
    assert m, (name, labels)
    return float(m.group(1))


def test_metrics_count_requests_tokens_and_per_member_drafts(srv):
    url, _ = srv
    before = httpx.get(f"{url}/metrics", timeout=10)
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    assert "# TYPE edge_specens_requests_total counter" in before.text
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="u", max_retries=0)
    r = c.completions.create(
        model="x", prompt="hello world", max_tokens=5, temperature=0, extra_body={"strategy": "sd"}
    )
    after = httpx.get(f"{url}/metrics", timeout=10).text
    assert (
        _sample(after, "requests_total", outcome="completed")
        == _sample(before.text, "requests_total", outcome="completed") + 1
    )
    grew = _sample(after, "tokens_predicted_total") - _sample(before.text, "tokens_predicted_total")
    assert grew == r.usage.completion_tokens
    assert _sample(after, "prompt_tokens_total") >= r.usage.prompt_tokens
    verified = _sample(after, "member_drafts_verified_total", member="small.gguf")  # sd: the small one drafts
    accepted = _sample(after, "member_drafts_accepted_total", member="small.gguf")
    assert verified > 0 and _sample(after, "member_acceptance_ratio", member="small.gguf") == pytest.approx(
        accepted / verified
    )
    assert _sample(after, "member_decode_calls_total", member="big.gguf") > 0
    assert _sample(after, "requests_waiting") == 0 and _sample(after, "queue_capacity") == 64


def test_image_parts_are_refused_naming_the_field(srv):
    url, _ = srv
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="u", max_retries=0)
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:,x"}}]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="x", messages=[{"role": "user", "content": content}], max_tokens=2)
    assert e.value.body["param"] == "messages.0.content.1" and "text only" in e.value.body["message"]
    ok = c.chat.completions.create(model="x", messages=[{"role": "user", "content": content[:1]}], max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_the_python_chat_api_refuses_image_parts_too(duo):
    from edge_specens import InvalidParameterError

    parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:,x"}}]
    with pytest.raises(InvalidParameterError, match=r"messages\[0\]\.content\[1\].*text only"):
        duo.create_chat_completion([{"role": "user", "content": parts}], max_tokens=1)


def test_the_api_key_guards_the_native_routes(tiny_models):
    ens = load([tiny_models["small"], tiny_models["big"]])
    try:
        with running_app(create_app(ens, api_key="k")) as url:
            for method, path in (("GET", "/props"), ("GET", "/metrics"), ("POST", "/tokenize"), ("POST", "/infill")):
                r = httpx.request(method, f"{url}{path}", json={"content": "x"}, timeout=10)
                assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
            ok = httpx.get(f"{url}/props", headers={"Authorization": "Bearer k"}, timeout=10)
            assert ok.status_code == 200
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # a monitor needs no key
    finally:
        ens.close()
