"""Tool calls over HTTP with real clients: the `openai` SDK on /v1/chat/completions (streamed deltas
reassembled for every strategy, tool_choice named and none, se = standard at T = 0, bad input as 400s
with the server healthy after) and the `ollama` client on /api/chat, over a tiny pair whose template
renders tools."""

from __future__ import annotations

import json

import httpx
import pytest
from test_tools import TIME, TOOLS, WEATHER
from tiny_servers import load, running_app, tool_duo

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
ollama = pytest.importorskip("ollama")

from edge_specens.server import create_app  # noqa: E402

ASK = [{"role": "user", "content": "hello"}]
STRATEGIES = [("standard", None), ("sd", 2), ("se", [3, 1]), ("auto", None)]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    ens = load(tool_duo(tmp_path_factory.mktemp("tools_server")), n_ctx=2048)
    with running_app(create_app(ens, model_name="tiny-tools")) as url:
        yield {
            "url": url,
            "ens": ens,
            "openai": openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120),
            "ollama": ollama.Client(host=url, timeout=120),
        }
    ens.close()


def _streamed_calls(stream) -> tuple[list[dict], str | None, str]:
    """The tool calls a stream's deltas assemble into (as the SDK's users do), its finish_reason and content."""
    calls: dict[int, dict] = {}
    finish, content = None, ""
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        content += choice.delta.content or ""
        for tc in choice.delta.tool_calls or ():
            call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            if tc.id:
                assert call["id"] is None and tc.type == "function"  # id and name come once, first
                call["id"], call["name"] = tc.id, tc.function.name
                assert tc.function.arguments == ""
            else:
                call["arguments"] += tc.function.arguments or ""
    return [calls[k] for k in sorted(calls)], finish, content


@pytest.mark.parametrize("strategy, gamma", STRATEGIES)
def test_streamed_deltas_reassemble_into_the_calls_for_every_strategy(srv, strategy, gamma):
    extra = {"strategy": strategy} | ({"gamma": gamma} if gamma else {})
    kw = dict(model="x", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=384, temperature=0)
    calls, finish, content = _streamed_calls(srv["openai"].chat.completions.create(stream=True, extra_body=extra, **kw))
    assert finish == "tool_calls" and content == "" and calls
    for call in calls:
        assert call["id"].startswith("call_") and call["name"] in ("get_weather", "get_time")
        assert isinstance(json.loads(call["arguments"]), dict)
    whole = srv["openai"].chat.completions.create(extra_body=extra, **kw)
    msg = whole.choices[0].message
    assert whole.choices[0].finish_reason == "tool_calls" and msg.content is None
    assert [(c.function.name, c.function.arguments) for c in msg.tool_calls] == [
        (c["name"], c["arguments"]) for c in calls
    ]


def test_se_and_standard_give_the_same_tool_call_at_t0(srv):
    def call(strategy, gamma=None):
        extra = {"strategy": strategy} | ({"gamma": gamma} if gamma else {})
        kw = dict(tools=TOOLS, tool_choice="required", max_tokens=384, temperature=0, extra_body=extra)
        r = srv["openai"].chat.completions.create(model="x", messages=ASK, **kw)
        return [(c.function.name, c.function.arguments) for c in r.choices[0].message.tool_calls]

    assert call("se", [3, 1]) == call("standard")


def test_tool_choice_named_and_none(srv):
    named = srv["openai"].chat.completions.create(
        model="x",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        max_tokens=256,
        temperature=0,
    )
    (call,) = named.choices[0].message.tool_calls
    assert call.function.name == "get_time" and json.loads(call.function.arguments)["zone"] in ("UTC", "CET")
    none = srv["openai"].chat.completions.create(
        model="x", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=8, temperature=0
    )
    assert not none.choices[0].message.tool_calls and none.choices[0].finish_reason in ("stop", "length")


def test_a_round_trip_with_the_tool_result_in_the_history(srv):
    client = srv["openai"]
    first = client.chat.completions.create(
        model="x", messages=ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, max_tokens=256
    )
    (call,) = first.choices[0].message.tool_calls
    history = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 18})},
    ]
    second = client.chat.completions.create(model="x", messages=history, tools=[WEATHER], max_tokens=6)
    assert second.choices[0].message.content is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


@pytest.mark.parametrize(
    "body, param, message",
    [
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "banana"}}}]},
            "tools",
            "JSON Schema",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(10_000)]},
            "tools",
            "at most 128",
        ),
        ({"tools": [{"type": "function", "function": {"name": "get\nweather"}}]}, "tools", "must match"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "absent"}}},
            "tool_choice",
            "not in tools",
        ),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "tools", "cannot be combined"),
        ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls", None),
    ],
)
def test_bad_tool_requests_are_400s_and_the_server_stays_healthy(srv, body, param, message):
    r = httpx.post(f"{srv['url']}/v1/chat/completions", json={"messages": ASK, **body}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert message is None or message in err["message"]
    assert httpx.get(f"{srv['url']}/health", timeout=10).json()["status"] == "ok"
    with pytest.raises(openai.BadRequestError):
        srv["openai"].chat.completions.create(model="x", messages=ASK, max_tokens=2, **body)


def test_ollama_chat_returns_calls_with_object_arguments(srv):
    c = srv["ollama"]
    weather_only = [WEATHER]
    r = c.chat(model="tiny-tools", messages=ASK, tools=weather_only, options={"num_predict": 256, "temperature": 0})
    # auto on a random tiny model: it need not call; when it does, the call is whole and typed
    for call in r.message.tool_calls or ():
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    assert "<tool_call>" not in (r.message.content or "")
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_time", "arguments": {"zone": "UTC"}}}],
        },
        {"role": "tool", "content": "12:00", "tool_name": "get_time"},
    ]
    streamed = list(c.chat(model="tiny-tools", messages=history, tools=[TIME], stream=True, options={"num_predict": 4}))
    assert streamed[-1].done
    with pytest.raises(ollama.ResponseError) as e:
        c.chat(model="tiny-tools", messages=ASK, tools=[{"type": "function", "function": {"name": "bad name"}}])
    assert e.value.status_code == 400 and "must match" in e.value.error


def test_ollama_shapes_a_call_with_its_arguments_an_object():
    from test_tools import CALL

    from edge_specens.server.ollama import ollama_call
    from edge_specens.tools import HERMES, parse_all

    (call,) = parse_all(HERMES, CALL).calls
    assert ollama_call(call) == {"function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}
    (cut,) = parse_all(HERMES, CALL[:60]).calls  # cut off by num_predict: the name, no arguments yet
    assert ollama_call(cut) == {"function": {"name": "get_weather", "arguments": {}}}
