"""A tool-call round trip on the real qwen2.5-coder-duo with the openai SDK (and the ollama client):
the model calls get_weather, the client returns the result as a `tool` message, the model answers.
Skipped unless both members are already in the cache (nothing is downloaded here)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from edge_specens import Ensemble  # noqa: E402
from edge_specens.fetch import cached_path  # noqa: E402
from edge_specens.presets import load_preset  # noqa: E402
from edge_specens.server import create_app  # noqa: E402

pytestmark = pytest.mark.real

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city, e.g. Paris"}},
            "required": ["location"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


@pytest.fixture(scope="module")
def real_server():
    if any(cached_path(m) is None for m in load_preset("qwen2.5-coder-duo").members):
        pytest.skip("the qwen2.5-coder-duo models are not in the cache (edge-specens models pull qwen2.5-coder-duo)")
    from tiny_servers import running_app

    ens = Ensemble.from_preset("qwen2.5-coder-duo", n_ctx=2048, progress=False)
    with running_app(create_app(ens, model_name="duo")) as url:
        yield url, ens
    ens.close()


def test_a_tool_call_round_trip_on_the_duo(real_server):
    url, _ = real_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    first = client.chat.completions.create(model="duo", messages=ASK, tools=[WEATHER], temperature=0, max_tokens=96)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    print("tool call:", json.dumps(call.model_dump()))
    assert call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["location"].lower()
    history = [
        *ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 18, "condition": "sunny"})},
    ]
    # the result goes back without `tools`: with them the duo (either member alone too) calls get_weather again
    answer = client.chat.completions.create(model="duo", messages=history, temperature=0, max_tokens=96)
    text = answer.choices[0].message.content or ""
    print("answer:", text)
    assert answer.choices[0].finish_reason == "stop" and not answer.choices[0].message.tool_calls
    assert "18" in text or "sunny" in text.lower()


def test_se_streams_the_call_standard_makes(real_server):
    url, _ = real_server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)

    def streamed(strategy):
        args, name = "", None
        for chunk in client.chat.completions.create(
            model="duo",
            messages=ASK,
            tools=[WEATHER],
            temperature=0,
            max_tokens=96,
            stream=True,
            extra_body={"strategy": strategy},
        ):
            for tc in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
                name = tc.function.name or name
                args += tc.function.arguments or ""
        return name, json.loads(args)

    assert streamed("se") == streamed("standard")


def test_ollama_chat_calls_the_tool_with_object_arguments(real_server):
    ollama = pytest.importorskip("ollama")
    url, _ = real_server
    client = ollama.Client(host=url, timeout=600)
    options = {"temperature": 0, "num_predict": 96}
    r = client.chat(model="duo", messages=ASK, tools=[WEATHER], options=options)
    (call,) = r.message.tool_calls
    assert call.function.name == "get_weather" and "paris" in call.function.arguments["location"].lower()
    chunks = list(client.chat(model="duo", messages=ASK, tools=[WEATHER], options=options, stream=True))
    streamed = [c for chunk in chunks for c in chunk.message.tool_calls or ()]
    assert [(c.function.name, dict(c.function.arguments)) for c in streamed] == [
        (call.function.name, dict(call.function.arguments))
    ]
    assert not "".join(chunk.message.content or "" for chunk in chunks).strip()  # no markup as content


def test_langchain_bind_tools_round_trip_on_the_duo(real_server):
    """LangChain's ChatOpenAI and ChatOllama, as their users write them: bind_tools, run the tool, answer."""
    langchain_openai = pytest.importorskip("langchain_openai")
    langchain_ollama = pytest.importorskip("langchain_ollama")
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(location: str) -> str:
        """Get the current weather in a given city"""
        return json.dumps({"temperature_c": 18, "condition": "sunny"})

    url, _ = real_server
    ask = [HumanMessage(ASK[0]["content"])]
    clients = {
        "ChatOpenAI": langchain_openai.ChatOpenAI(
            base_url=f"{url}/v1", api_key="none", model="duo", temperature=0, max_tokens=96, timeout=600
        ),
        "ChatOllama": langchain_ollama.ChatOllama(base_url=url, model="duo", temperature=0, num_predict=96),
    }
    for name, llm in clients.items():
        first = llm.bind_tools([get_weather]).invoke(ask)
        (call,) = first.tool_calls
        print(name, "tool call:", call)
        assert call["name"] == "get_weather" and "paris" in call["args"]["location"].lower()
        answer = llm.invoke([*ask, first, get_weather.invoke(call)])  # without tools, as above
        print(name, "answer:", answer.content)
        assert not answer.tool_calls and ("18" in answer.content or "sunny" in answer.content.lower())
