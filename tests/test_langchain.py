"""LangChain against our server, as its users write it: `ChatOpenAI(...).bind_tools([...])` on
/v1/chat/completions and `ChatOllama` on the Ollama API, over a tiny pair whose template renders tools.
The real-model round trip with both is in test_tools_real.py."""

from __future__ import annotations

from typing import Literal

import pytest
from tiny_servers import load, running_app, tool_duo

pytest.importorskip("fastapi")
langchain_openai = pytest.importorskip("langchain_openai")
langchain_ollama = pytest.importorskip("langchain_ollama")

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

from edge_specens.server import create_app  # noqa: E402


@tool
def get_weather(location: Literal["Paris", "Oslo"]) -> str:  # an enum: a tiny model's string could run on
    """Get the current weather in a given city."""
    return f"18 C and sunny in {location}"


@tool
def get_time(zone: Literal["UTC", "CET"]) -> str:
    """The current time in a time zone."""
    return "12:00"


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    ens = load(tool_duo(tmp_path_factory.mktemp("langchain")), n_ctx=2048)
    with running_app(create_app(ens, model_name="tiny-tools")) as base:
        yield base
    ens.close()


def _openai(url: str, **kw):
    return langchain_openai.ChatOpenAI(
        base_url=f"{url}/v1", api_key="none", model="tiny-tools", temperature=0, max_retries=0, timeout=120, **kw
    )


# strict=True is LangChain's way to send additionalProperties: false; without it the schema allows
# extra keys, and a tiny random model writes one until max_tokens (a real model does not)
def test_chat_openai_bind_tools_makes_a_call_and_takes_the_result_back(url):
    llm = _openai(url, max_tokens=256).bind_tools(
        [get_weather, get_time], tool_choice="get_weather", parallel_tool_calls=False, strict=True
    )
    first = llm.invoke([HumanMessage("hello")])
    assert isinstance(first, AIMessage) and first.response_metadata["finish_reason"] == "tool_calls"
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and call["args"]["location"] in ("Paris", "Oslo") and call["id"]
    result = get_weather.invoke(call)  # LangChain's own tool execution gives the ToolMessage
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    second = _openai(url, max_tokens=6).bind_tools([get_weather]).invoke([HumanMessage("hello"), first, result])
    assert isinstance(second.content, str) and second.usage_metadata["input_tokens"] > 0


def test_chat_openai_streamed_tool_call_chunks_add_up_to_the_call(url):
    llm = _openai(url, max_tokens=256).bind_tools(
        [get_weather], tool_choice="required", parallel_tool_calls=False, strict=True
    )
    chunks = list(llm.stream([HumanMessage("hello")]))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    (call,) = whole.tool_calls
    assert call["name"] == "get_weather" and call["args"]["location"] in ("Paris", "Oslo")
    assert call == {**llm.invoke([HumanMessage("hello")]).tool_calls[0], "id": call["id"]}


def test_chat_ollama_invoke_and_stream(url):
    llm = langchain_ollama.ChatOllama(base_url=url, model="tiny-tools", temperature=0, num_predict=6)
    whole = llm.invoke([HumanMessage("hello")])
    assert isinstance(whole.content, str) and whole.content
    meta = whole.response_metadata
    assert meta["done_reason"] == "length" and meta["eval_count"] == 6 and meta["model"] == "tiny-tools"
    assert whole.usage_metadata["output_tokens"] == 6
    streamed = "".join(chunk.content for chunk in llm.stream([HumanMessage("hello")]))
    assert streamed == whole.content
