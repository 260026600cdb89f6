"""The OpenAI-compatible server, end to end: a real uvicorn on a loopback port, tiny GGUF members.

Driven with the official `openai` client (chat, completion, streaming) and raw httpx for the error
cases. Greedy answers are compared with direct `Ensemble.generate` results computed before the server
starts, for prompts whose greedy path has no near-tie (docs/design.md §4: batched and single-token evaluation
differ by float noise, which KV prefix reuse and speculation change from request to request).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from tiny_servers import running_app  # noqa: E402

from edge_specens import Ensemble  # noqa: E402
from edge_specens.chat import chat_template  # noqa: E402
from edge_specens.cli.serve import serve  # noqa: E402
from edge_specens.distributions import top2_margin  # noqa: E402
from edge_specens.params import SamplingParams  # noqa: E402
from edge_specens.server import create_app  # noqa: E402

N_TOK = 12  # greedy answer length in the comparisons
MIN_MARGIN = 1e-2  # prompts whose greedy path comes closer to a tie (docs/design.md §4 excuses < 5e-3) are not compared
COMPLETION_CANDIDATES = [
    "hello world",
    "def f",
    "the value",
    "print hello",
    "return self",
    "a b c",
    "world hello world",
    "result",
    "self value return",
    "1 2 3",
    "import os",
    "class A",
    "for i in",
    "if x",
    "value = 1",
    "hello",
    "print(1)",
    "true false",
]
CHAT_CANDIDATES = [
    "hi",
    "hello world",
    "what is 1 2 3",
    "print hello",
    "return the value",
    "a b c",
    "def f",
    "class A",
    "import os",
    "for i in range",
    "good day",
    "self value",
]
SLOW_MAX_TOKENS = 432  # the disconnect test's marker for "slow this generation down" (< n_ctx 512)


# ---------------------------------------------------------------------- helpers
def load(tiny_models) -> Ensemble:
    return Ensemble.from_paths(
        [tiny_models["small"], tiny_models["big"]], n_ctx=512, kv_f32=True, n_threads=1, n_threads_batch=1
    )


def min_margin(ens, prompt, out_tokens) -> float:
    """Smallest top-2 margin of r along prompt + greedy output (one batched pass per member)."""
    seq = list(prompt) + list(out_tokens)
    want = list(range(len(prompt) - 1, len(seq)))
    per_member = []
    for m in ens.members:
        m.truncate(0)
        per_member.append(m.evaluate(seq, want)[:, : ens.n_vocab])
        m.truncate(0)
    greedy = SamplingParams(temperature=0)
    return min(top2_margin(ens.spec.target([rows[i] for rows in per_member], greedy)) for i in range(len(want)))


running_server = running_app  # test_abuse.py imports it under this name


def client(url, **kw) -> openai.OpenAI:
    kw.setdefault("api_key", "unused")
    return openai.OpenAI(base_url=f"{url}/v1", max_retries=0, timeout=60, **kw)


def chat_msgs(text):
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def assert_error(r: httpx.Response, status: int, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == ("invalid_request_error" if status < 500 else "server_error")
    if param is not None:
        assert err["param"] == param, err
    return err


class SlowOrGated:
    """Wraps Ensemble.events: generations sleep `delay` s per token, or wait for `gate` before starting."""

    def __init__(self, ens, delay=0.0, gate: threading.Event | None = None, only_max_tokens=None):
        self.ens, self.events = ens, ens.events
        self.delay, self.gate, self.only = delay, gate, only_max_tokens
        self.started = threading.Event()
        self.generations = []

    def __call__(self, prompt, **kw):
        gen = self.events(prompt, **kw)
        if self.only is not None and kw.get("max_tokens") != self.only:
            return gen
        self.generations.append(gen)
        outer = self

        class Wrapped:
            def __getattr__(self, name):
                return getattr(gen, name)

            def __iter__(self):
                outer.started.set()
                if outer.gate is not None:
                    assert outer.gate.wait(30)
                it = iter(gen)
                try:
                    for ev in it:
                        time.sleep(outer.delay)
                        yield ev
                finally:
                    it.close()

        return Wrapped()


# ---------------------------------------------------------------------- the shared server
@pytest.fixture(scope="module")
def srv(tiny_models):
    """One server for most tests, with greedy references computed before it starts."""
    ens = load(tiny_models)
    comp, chat = {}, {}
    for p in COMPLETION_CANDIDATES:
        res = ens.generate(p, max_tokens=N_TOK, temperature=0, strategy="standard")
        if min_margin(ens, ens.tokenize(p), res.tokens) >= MIN_MARGIN:
            comp[p] = res.text
    for q in CHAT_CANDIDATES:
        prompt = chat_template(ens).tokens(chat_msgs(q))
        res = ens.generate(prompt, max_tokens=N_TOK, temperature=0, strategy="standard")
        if min_margin(ens, prompt, res.tokens) >= MIN_MARGIN:
            chat[q] = res.text
    assert len(comp) >= 4 and len(chat) >= 4, (len(comp), len(chat))
    # a sampled continuation long enough (no early end-of-generation) for the disconnect test
    long_seed = next(
        (
            s
            for s in range(40)
            if ens.generate("once upon a time", max_tokens=150, temperature=1.0, seed=s).stats.new_tokens == 150
        ),
        None,
    )
    assert long_seed is not None
    app = create_app(ens)
    with running_server(app) as url:
        yield {"url": url, "ens": ens, "app": app, "comp": comp, "chat": chat, "long_seed": long_seed}
    ens.close()


def health(url) -> dict:
    r = httpx.get(f"{url}/health", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    return body


# ---------------------------------------------------------------------- openai client
def test_models_and_health(srv):
    h = health(srv["url"])
    assert h["model"] == srv["ens"].name and h["waiting"] == 0
    models = client(srv["url"]).models.list()
    assert [m.id for m in models.data] == [srv["ens"].name]
    assert client(srv["url"]).models.retrieve(srv["ens"].name).id == srv["ens"].name
    assert httpx.get(f"{srv['url']}/v1/models/nope").status_code == 404


def test_completion(srv):
    c = client(srv["url"])
    for prompt, expected in list(srv["comp"].items())[:3]:
        r = c.completions.create(model="anything", prompt=prompt, max_tokens=N_TOK, temperature=0)
        assert r.object == "text_completion" and r.model == srv["ens"].name
        assert r.choices[0].text == expected
        assert r.choices[0].finish_reason in ("stop", "length")
        n_prompt = len(srv["ens"].tokenize(prompt))
        assert (r.usage.prompt_tokens, r.usage.total_tokens) == (n_prompt, n_prompt + r.usage.completion_tokens)
        stats = r.model_dump()["edge_specens"]
        assert stats["new_tokens"] == r.usage.completion_tokens and "acceptance_rate" in stats
    # a token-id prompt is the same prompt
    prompt, expected = next(iter(srv["comp"].items()))
    r = c.completions.create(model="x", prompt=srv["ens"].tokenize(prompt), max_tokens=N_TOK, temperature=0)
    assert r.choices[0].text == expected


def test_chat_and_extras(srv):
    c = client(srv["url"])
    q, expected = next(iter(srv["chat"].items()))
    r = c.chat.completions.create(model="x", messages=chat_msgs(q), max_tokens=N_TOK, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == expected
    for strategy, gamma in (("se", [3, 1]), ("sd", 2), ("standard", None)):
        extra = {"strategy": strategy} | ({"gamma": gamma} if gamma else {})
        r = c.chat.completions.create(
            model="x", messages=chat_msgs(q), max_tokens=N_TOK, temperature=0, extra_body=extra
        )
        assert r.choices[0].message.content == expected
        assert r.model_dump()["edge_specens"]["strategy"] == strategy
    # sampling: same seed, same answer; stop strings end it early
    kw = dict(
        model="x",
        messages=chat_msgs(q),
        max_tokens=20,
        temperature=0.8,
        top_p=0.9,
        seed=7,
        extra_body={"top_k": 40, "min_p": 0.01},
    )
    a, b = c.chat.completions.create(**kw), c.chat.completions.create(**kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    text = a.choices[0].message.content
    if len(text) > 3:
        stop = text[2:4]
        s = c.chat.completions.create(**kw, stop=[stop])
        assert s.choices[0].finish_reason == "stop" and stop not in s.choices[0].message.content


def test_streaming(srv):
    c = client(srv["url"])
    q, expected = next(iter(srv["chat"].items()))
    chunks = list(
        c.chat.completions.create(model="x", messages=chat_msgs(q), max_tokens=N_TOK, temperature=0, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == expected
    assert all(ch.object == "chat.completion.chunk" and ch.id == chunks[0].id for ch in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length") and last.usage.completion_tokens >= 1
    prompt, expected = next(iter(srv["comp"].items()))
    chunks = list(c.completions.create(model="x", prompt=prompt, max_tokens=N_TOK, temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == expected
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    # raw SSE framing: data lines and a final [DONE]
    with httpx.stream(
        "POST",
        f"{srv['url']}/v1/completions",
        timeout=30,
        json={"prompt": prompt, "max_tokens": 4, "temperature": 0, "stream": True},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_kv_prefix_reused_across_requests(srv):
    c = client(srv["url"])
    msgs = chat_msgs("hello world")
    first = c.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0)
    msgs += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "more"}]
    second = c.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0)
    reused = second.model_dump()["edge_specens"]["reused_tokens"]
    assert reused >= first.usage.prompt_tokens - 1, (reused, first.usage.prompt_tokens)


# ---------------------------------------------------------------------- bad requests → 400
MSG = [{"role": "user", "content": "hi"}]
CHAT_ERRORS = [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": MSG, "max_tokens": 0}, "max_tokens"),
    ({"messages": MSG, "max_tokens": "10"}, "max_tokens"),
    ({"messages": MSG, "temperature": "hot"}, "temperature"),
    ({"messages": MSG, "temperature": -1}, "temperature"),
    ({"messages": MSG, "top_p": 0}, "top_p"),
    ({"messages": MSG, "stream": "yes"}, "stream"),
    ({"messages": MSG, "strategy": "warp"}, "strategy"),
    ({"messages": MSG, "strategy": "warp", "stream": True}, "strategy"),
    ({"messages": MSG, "gamma": [1, 2, 3]}, "gamma"),
    ({"messages": MSG, "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "hello " * 600}]}, "messages"),
    ({"messages": [{"role": "user", "content": "hello " * 600}], "stream": True}, "messages"),
]
COMPLETION_ERRORS = [
    ({}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": [1, 2, 10**6]}, None),
    ({"prompt": "hello " * 600}, "prompt"),
    ({"prompt": "hi", "max_tokens": -3}, "max_tokens"),
    ({"prompt": "hi", "seed": 1.5}, "seed"),
    ({"prompt": "hi", "stop": 3}, "stop"),
    ({"prompt": "hi", "strategy": "single:9"}, None),
    ({"prompt": "hi", "echo": True}, "echo"),
]


@pytest.mark.parametrize("body,param", CHAT_ERRORS)
def test_chat_errors(srv, body, param):
    assert_error(httpx.post(f"{srv['url']}/v1/chat/completions", json=body, timeout=30), 400, param)


@pytest.mark.parametrize("body,param", COMPLETION_ERRORS)
def test_completion_errors(srv, body, param):
    assert_error(httpx.post(f"{srv['url']}/v1/completions", json=body, timeout=30), 400, param)


def test_malformed_bodies_and_paths(srv):
    url = srv["url"]
    for raw in (b"{not json", b"[1, 2]", b"", b"null"):
        r = httpx.post(f"{url}/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        assert_error(r, 400)
    err = assert_error(httpx.post(f"{url}/v1/completions", json={"prompt": "hello " * 600}), 400, "prompt")
    assert err["code"] == "context_length_exceeded"
    assert_error(httpx.get(f"{url}/v1/nothing"), 404)
    assert_error(httpx.get(f"{url}/v1/chat/completions"), 405)
    with pytest.raises(openai.BadRequestError):
        client(url).chat.completions.create(model="x", messages=[], max_tokens=4)
    # nothing above hurt the server
    assert health(url)["status"] == "ok"
    prompt, expected = next(iter(srv["comp"].items()))
    r = client(url).completions.create(model="x", prompt=prompt, max_tokens=N_TOK, temperature=0)
    assert r.choices[0].text == expected


# ---------------------------------------------------------------------- many clients at once
def test_concurrent_clients(srv):
    url, comp, chat = srv["url"], list(srv["comp"].items()), list(srv["chat"].items())

    def one_client(i):
        c = client(url)
        wrong = []
        for j in range(5):
            k = i * 5 + j
            if k % 2 == 0:
                q, expected = chat[k % len(chat)]
                kw = dict(model="x", messages=chat_msgs(q), max_tokens=N_TOK, temperature=0)
                if k % 4 == 0:
                    got = "".join(
                        ch.choices[0].delta.content or "" for ch in c.chat.completions.create(**kw, stream=True)
                    )
                else:
                    got = c.chat.completions.create(**kw).choices[0].message.content
            else:
                q, expected = comp[k % len(comp)]
                kw = dict(model="x", prompt=q, max_tokens=N_TOK, temperature=0)
                if k % 4 == 1:
                    got = "".join(ch.choices[0].text for ch in c.completions.create(**kw, stream=True))
                else:
                    got = c.completions.create(**kw).choices[0].text
            if got != expected:
                wrong.append((q, expected, got))
        return wrong

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one_client, range(16)))
    wrong = [w for r in results for w in r]
    assert not wrong, wrong[:3]
    h = health(url)
    assert h["waiting"] == 0 and not h["busy"]
    assert time.monotonic() - t0 < 40


# ---------------------------------------------------------------------- disconnects
def test_disconnect_stops_generation(srv, monkeypatch):
    url, ens = srv["url"], srv["ens"]
    slow = SlowOrGated(ens, delay=0.05, only_max_tokens=SLOW_MAX_TOKENS)
    monkeypatch.setattr(ens, "events", slow)  # the worker is idle between requests
    cancelled_before = health(url)["cancelled"]
    c = client(url)
    stream = c.completions.create(
        model="x",
        prompt="once upon a time",
        max_tokens=SLOW_MAX_TOKENS,
        temperature=1.0,
        seed=srv["long_seed"],
        stream=True,
    )
    got = 0
    for ch in stream:
        got += bool(ch.choices[0].text)
        if got >= 3:
            break
    stream.close()  # the client goes away mid-stream (~150 tokens x 50 ms were left)
    t0 = time.monotonic()
    prompt, expected = next(iter(srv["comp"].items()))
    r = c.completions.create(model="x", prompt=prompt, max_tokens=N_TOK, temperature=0)
    elapsed = time.monotonic() - t0
    assert r.choices[0].text == expected
    assert elapsed < 3.0, f"the next request waited {elapsed:.1f}s: the abandoned generation kept running"
    gen = slow.generations[0]
    assert gen.result is not None and gen.result.stats.new_tokens < 60
    h = health(url)
    assert h["cancelled"] == cancelled_before + 1 and not h["busy"]
    # a client that gives up on a non-streamed answer cancels it too
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{url}/v1/completions",
            timeout=httpx.Timeout(10, read=0.5),
            json={
                "prompt": "once upon a time",
                "max_tokens": SLOW_MAX_TOKENS,
                "temperature": 1.0,
                "seed": srv["long_seed"],
            },
        )
    t0 = time.monotonic()
    r = c.completions.create(model="x", prompt=prompt, max_tokens=N_TOK, temperature=0)
    assert r.choices[0].text == expected and time.monotonic() - t0 < 3.0
    assert slow.generations[1].result.stats.new_tokens < 60
    assert health(url)["cancelled"] == cancelled_before + 2


# ---------------------------------------------------------------------- queue full → 503
def test_queue_full_gets_503(tiny_models, monkeypatch):
    ens = load(tiny_models)
    gate = threading.Event()
    gated = SlowOrGated(ens, gate=gate)
    monkeypatch.setattr(ens, "events", gated)
    app = create_app(ens, max_queue=1)
    body = {"prompt": "hello world", "max_tokens": 4, "temperature": 0}
    try:
        with running_server(app) as url, ThreadPoolExecutor(2) as pool:
            post = lambda: httpx.post(f"{url}/v1/completions", json=body, timeout=30)  # noqa: E731
            running = pool.submit(post)
            assert gated.started.wait(10)  # the worker holds request 1
            waiting = pool.submit(post)
            deadline = time.monotonic() + 10
            while health(url)["waiting"] < 1:  # request 2 fills the queue
                assert time.monotonic() < deadline
                time.sleep(0.01)
            r = httpx.post(f"{url}/v1/completions", json=body, timeout=10)
            err = assert_error(r, 503)
            assert err["code"] == "queue_full" and int(r.headers["retry-after"]) >= 1
            with pytest.raises(openai.APIStatusError) as e:
                client(url).completions.create(model="x", prompt="hi", max_tokens=2)
            assert e.value.status_code == 503
            gate.set()
            assert running.result().status_code == 200 and waiting.result().status_code == 200
            assert httpx.post(f"{url}/v1/completions", json=body, timeout=30).status_code == 200
    finally:
        gate.set()
        ens.close()


# ---------------------------------------------------------------------- API key
def test_api_key(tiny_models):
    ens = load(tiny_models)
    try:
        with running_server(create_app(ens, api_key="s3cret")) as url:
            assert httpx.get(f"{url}/health").status_code == 200  # health stays open
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "s3cret"},
                {"Authorization": "Basic s3cret"},
            ):
                err = assert_error(httpx.get(f"{url}/v1/models", headers=headers), 401)
                assert err["code"] == "invalid_api_key"
            # checked before the body is read: no key + bad body is still a 401
            assert_error(httpx.post(f"{url}/v1/chat/completions", content=b"{"), 401)
            with pytest.raises(openai.AuthenticationError):
                client(url, api_key="wrong").models.list()
            good = client(url, api_key="s3cret")
            assert good.models.list().data[0].id == ens.name
            r = good.chat.completions.create(model="x", messages=MSG, max_tokens=3, temperature=0)
            assert r.choices[0].message.content is not None
    finally:
        ens.close()


def test_cors_origins(tiny_models):
    """Browsers get CORS headers only for the allowed origin, on answers and on 401s alike."""
    ens = load(tiny_models)
    try:
        with running_server(create_app(ens, api_key="k", cors_origins=["http://app.local"])) as url:
            ok = {"Origin": "http://app.local", "Authorization": "Bearer k"}
            r = httpx.get(f"{url}/v1/models", headers=ok)
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.local"
            pre = httpx.options(
                f"{url}/v1/chat/completions",
                headers={
                    "Origin": "http://app.local",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            assert pre.status_code == 200 and "POST" in pre.headers["access-control-allow-methods"]
            denied = httpx.get(f"{url}/v1/models", headers={"Origin": "http://app.local"})
            assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "http://app.local"
            other = httpx.get(
                f"{url}/v1/models", headers={"Origin": "http://evil.example", "Authorization": "Bearer k"}
            )
            assert "access-control-allow-origin" not in other.headers
        with running_server(create_app(ens)) as url:  # default: no CORS headers at all
            r = httpx.get(f"{url}/v1/models", headers={"Origin": "http://app.local"})
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    finally:
        ens.close()


# ---------------------------------------------------------------------- the CLI command
def test_serve_command(tiny_models, monkeypatch):
    from click.testing import CliRunner

    import edge_specens.cli.serve as server_mod

    runner = CliRunner()
    models = ["-m", str(tiny_models["small"]), "-m", str(tiny_models["big"]), "-c", "256"]
    # a taken port fails at once (before any model loads), exit status 1, one line, no traceback
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = runner.invoke(serve, models + ["--port", str(taken.getsockname()[1])])
    assert r.exit_code == 1 and "cannot listen" in r.output and "Traceback" not in r.output

    class FakeSocket:
        def __init__(self, host, port):
            self.addr = (host, port)

        def getsockname(self):
            return self.addr

        def close(self):
            pass

    calls = []
    monkeypatch.setattr(server_mod, "bind_socket", FakeSocket)
    monkeypatch.setattr(server_mod, "run_server", lambda ens, **kw: calls.append((ens.name, kw)))
    r = runner.invoke(serve, models, env={"EDGE_SPECENS_API_KEY": "from-env"})
    assert r.exit_code == 0, r.output
    name, kw = calls[-1]
    assert name == "small.gguf+big.gguf" and kw["sock"].addr == ("127.0.0.1", 8080)
    assert (kw["host"], kw["port"], kw["api_key"], kw["max_queue"]) == ("127.0.0.1", 8080, "from-env", 64)
    r = runner.invoke(
        serve,
        models + ["--port", "9001", "--api-key", "k", "--max-queue", "3", "--alias", "duo"],
        env={"EDGE_SPECENS_API_KEY": None},
    )
    assert r.exit_code == 0, r.output
    kw = calls[-1][1]
    assert (kw["port"], kw["api_key"], kw["max_queue"], kw["model_name"]) == (9001, "k", 3, "duo")
    r = runner.invoke(serve, ["-m", os.devnull + ".missing.gguf"])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output
    r = runner.invoke(serve, models + ["--port", "99999"])
    assert r.exit_code == 2
    r = runner.invoke(serve, ["--help"])
    assert r.exit_code == 0 and "--api-key" in r.output and "EDGE_SPECENS_API_KEY" in r.output


def test_streaming_usage_in_its_own_final_chunk(srv):
    """stream_options.include_usage: as OpenAI sends it, a last chunk with empty choices and the usage."""
    c = client(srv["url"])
    q, expected = next(iter(srv["chat"].items()))
    chunks = list(
        c.chat.completions.create(
            model="x",
            messages=chat_msgs(q),
            max_tokens=N_TOK,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert chunks[-2].choices[0].finish_reason in ("stop", "length") and chunks[-2].usage is None
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == expected


def test_penalties_through_the_openai_client_and_unknown_response_formats(srv):
    c = client(srv["url"])
    q, _ = next(iter(srv["chat"].items()))
    r = c.chat.completions.create(
        model="x",
        messages=chat_msgs(q),
        max_tokens=N_TOK,
        temperature=0,
        presence_penalty=0.5,
        frequency_penalty=0.3,
        logit_bias={"7": -100},
        extra_body={"repeat_penalty": 1.2, "repeat_last_n": 32},
    )
    assert r.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="x", messages=chat_msgs(q), max_tokens=N_TOK, response_format={"type": "xml"})
    assert "response_format" in str(e.value)


def test_response_format_json_schema_through_the_openai_client(srv):
    """Structured output in the server: every answer parses and validates, greedy and sampled."""
    import json

    c = client(srv["url"])
    schema = {"type": "string", "enum": ["red", "green", "blue"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "colour", "schema": schema}}
    for temperature in (0, 1):
        r = c.chat.completions.create(
            model="x",
            messages=chat_msgs("Pick a colour."),
            max_tokens=N_TOK,
            temperature=temperature,
            response_format=fmt,
        )
        assert r.choices[0].finish_reason == "stop"
        assert json.loads(r.choices[0].message.content) in schema["enum"]
    r = c.chat.completions.create(
        model="x", messages=chat_msgs("Any object."), max_tokens=64, response_format={"type": "json_object"}
    )
    if r.choices[0].finish_reason == "stop":  # random tiny weights may run out of tokens mid-object
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:
        assert r.choices[0].message.content.lstrip().startswith("{")


# ---------------------------------------------------------------------- structured output (probe N9-N12)
def test_grammar_and_schema_strings_are_never_file_names(srv, tiny_models, tmp_path):
    """N9: `{"grammar": "/etc/shadow"}` was a 500 quoting the file's first line, `~/.bashrc` and
    `/proc/self/environ` likewise, a GGUF path cost 7 s and 2 GB of RSS, and a string json_schema
    naming a file was used as the schema. Now each is a 400 and no path is even looked at."""
    from test_structured import NAMED_FILES, no_file_access, secret_files

    secret, grammar, schema = secret_files(tmp_path)
    names = [*NAMED_FILES, str(tiny_models["small"]), str(grammar), str(schema)]
    bodies = []
    for name in names:
        bodies += [
            {"prompt": "x", "max_tokens": 8, "grammar": name},
            {"prompt": "x", "max_tokens": 8, "json_schema": name},
            {
                "prompt": "x",
                "max_tokens": 8,
                "response_format": {"type": "json_schema", "json_schema": {"schema": name}},
            },
        ]
    responses = []
    with httpx.Client(base_url=srv["url"], timeout=30) as http:
        http.get("/health")  # the connection is open before file access is watched
        with no_file_access(names) as calls:
            for body in bodies:
                responses.append(http.post("/v1/completions", json=body))
    assert calls == []
    for body, r in zip(bodies, responses):
        err = assert_error(r, 400)
        assert secret not in r.text and err["code"] == "invalid_value", (body, r.text)
        if "grammar" in body or "json_schema" in body:
            assert err["param"] in ("grammar", "json_schema"), err
    assert health(srv["url"])["status"] == "ok"


STRUCTURED_ERRORS = [
    ({"grammar": "root ::= ("}, "grammar"),  # N10: a 500 "internal error (GbnfToLarkError ...)"
    ({"grammar": "foo"}, "grammar"),
    ({"json_schema": '{"type":"object","properties":{"a":' * 5000}, "json_schema"),
    ({"json_schema": "[1]"}, "json_schema"),
    ({"grammar": "root ::= a\na ::= b\nb ::= a"}, "grammar"),  # N12: 200, "" and finish_reason "stop"
    ({"grammar": 'root ::= root "x" | root'}, "grammar"),
    (
        {"json_schema": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}},
        "json_schema",
    ),
]


@pytest.mark.parametrize("extra,param", STRUCTURED_ERRORS)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_or_unsatisfiable_constraints_are_400(srv, extra, param, stream):
    body = {"prompt": "x", "max_tokens": 24, "stream": stream, **extra}
    err = assert_error(httpx.post(f"{srv['url']}/v1/completions", json=body, timeout=30), 400, param)
    assert "internal" not in err["message"]


def test_a_constraint_that_fails_midway_says_so(srv):
    """N12: llguidance gives up on this counted regex after a token; the answer said "stop"."""
    body = {"prompt": "x", "max_tokens": 24, "temperature": 0, "regex": "((a{100}){100}){100}"}
    r = httpx.post(f"{srv['url']}/v1/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["finish_reason"] == "error"
    assert out["edge_specens"]["note"].startswith("constraint failed: ")
    chunks = []
    with httpx.stream("POST", f"{srv['url']}/v1/completions", json={**body, "stream": True}, timeout=30) as s:
        chunks = [line for line in s.iter_lines() if line.startswith("data: {")]
    import json

    assert json.loads(chunks[-1].removeprefix("data: "))["choices"][0]["finish_reason"] == "error"
    assert health(srv["url"])["status"] == "ok"


# ---------------------------------------------------------------------- Host header (DNS rebinding)
def test_allowed_hosts_for_binds():
    from edge_specens.server.run import allowed_hosts_for

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert {"localhost", "127.0.0.1", "::1", host} <= set(allowed_hosts_for(host))
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        assert allowed_hosts_for(host) is None
    assert "box.lan" in allowed_hosts_for("0.0.0.0", ["box.lan"])


def test_a_loopback_server_answers_only_requests_addressed_to_it(tiny_models):
    """A keyless server on 127.0.0.1 accepted `Host: attacker.example:8080`, so a web page could use
    it (and N9 read files) through DNS rebinding."""
    from edge_specens.server.run import allowed_hosts_for

    ens = load(tiny_models)
    try:
        app = create_app(ens, allowed_hosts=allowed_hosts_for("127.0.0.1", ["proxy.lan"]))
        with running_server(app) as url:
            port = url.rsplit(":", 1)[1]
            for host in ("attacker.example:8080", "attacker.example", "127.0.0.1.attacker.example", f"x:{port}"):
                for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/completions")):
                    r = httpx.request(method, f"{url}{path}", headers={"Host": host}, json={"prompt": "hi"})
                    assert assert_error(r, 400)["code"] == "invalid_host", (host, path)
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "proxy.lan:443"):
                assert httpx.get(f"{url}/health", headers={"Host": host}).status_code == 200, host
            r = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2})
            assert r.status_code == 200
    finally:
        ens.close()


def test_serve_passes_allowed_hosts(tiny_models, monkeypatch):
    from click.testing import CliRunner

    import edge_specens.cli.serve as server_mod

    class FakeSocket:
        def getsockname(self):
            return ("127.0.0.1", 8080)

        def close(self):
            pass

    calls = []
    monkeypatch.setattr(server_mod, "bind_socket", lambda host, port: FakeSocket())
    monkeypatch.setattr(server_mod, "run_server", lambda ens, **kw: calls.append(kw))
    models = ["-m", str(tiny_models["small"]), "-m", str(tiny_models["big"]), "-c", "256"]
    r = CliRunner().invoke(serve, [*models, "--allowed-host", "box.lan", "--allowed-host", "proxy"])
    assert r.exit_code == 0, r.output
    assert tuple(calls[-1]["allowed_hosts"]) == ("box.lan", "proxy")


# ---------------------------------------------------------------------------- the first five minutes (issue 28)
@pytest.fixture
def fake_app():
    from fakes import fake_ensemble
    from fastapi.testclient import TestClient

    app = create_app(fake_ensemble())
    with TestClient(app) as c:
        yield c


def test_docs_are_served_from_vendored_files_without_warnings(fake_app, recwarn):
    """/docs loaded Swagger UI from a CDN (a blank page offline), and opening it made FastAPI warn
    "Duplicate Operation ID" for every GET + HEAD route."""
    from edge_specens.server.docs import FILES, SWAGGER_UI_VERSION

    page = fake_app.get("/docs")
    assert page.status_code == 200 and "cdn" not in page.text and "http" not in page.text.split("<body>")[1]
    for asset, kind in (
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "css"),
        ("favicon-32x32.png", "png"),
    ):
        assert f"/docs/assets/{asset}" in page.text
        r = fake_app.get(f"/docs/assets/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"] and r.content == (FILES / asset).read_bytes()
    assert (FILES / "LICENSE").exists() and SWAGGER_UI_VERSION in (FILES / "VENDORED.md").read_text()
    schema = fake_app.get("/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "head" not in schema["paths"]["/health"]
    assert not [w for w in recwarn if "Duplicate Operation ID" in str(w.message)]
    assert fake_app.get("/redoc").status_code == 404  # it would need a CDN


@pytest.mark.parametrize("headers", [{"content-type": "application/x-www-form-urlencoded"}, {}])
def test_a_json_body_without_its_content_type_is_told_which_header(srv, headers):
    """curl -d '{...}' without -H was told "the request body must be a JSON object" (it is one). It is
    not read as JSON anyway: a web page may send such bodies to 127.0.0.1 without a CORS preflight."""
    url = f"{srv['url']}/v1/chat/completions"
    body = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
    r = httpx.post(url, content=body, headers=headers, timeout=30)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "unsupported_media_type"
    assert "Content-Type: application/json" in err["message"] and "must be a JSON object" not in err["message"]
    ok = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert ok.status_code == 200 and ok.json()["choices"]
    r = httpx.post(url, content=b"[1, 2]", headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "must be a JSON object" in r.json()["error"]["message"]  # when it is not one


def test_serve_after_a_clean_ctrl_c_says_stopped_not_aborted(tiny_models, monkeypatch):
    from test_cli import run

    import edge_specens.cli.serve as server_mod

    class FakeSocket:
        def getsockname(self):
            return ("127.0.0.1", 8080)

        def close(self):
            pass

    def interrupted(ens, **kw):
        raise KeyboardInterrupt  # what run_server raises after uvicorn's clean shutdown on Ctrl-C

    monkeypatch.setattr(server_mod, "bind_socket", lambda host, port: FakeSocket())
    monkeypatch.setattr(server_mod, "run_server", interrupted)
    rc, _, err = run(["serve", "-m", str(tiny_models["small"]), "-c", "256"])
    assert rc == 130 and "server stopped" in err and "aborted" not in err and "Traceback" not in err
