"""Tool calling (edge_specens/tools/): the request checks, the incremental parser, the lazy grammar on a
real vocabulary, and the Python API on a tiny pair whose template renders tools."""

from __future__ import annotations

import json

import pytest
from tiny_servers import load, tool_duo

from edge_specens import InvalidParameterError
from edge_specens.constrain import Constraint, grammar_of
from edge_specens.tools import HERMES, CallParser, parse_all, spelling, tool_grammar, tool_request

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Tokyo"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "hello"}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'


@pytest.fixture(scope="module")
def tools_duo(tmp_path_factory):
    ens = load(tool_duo(tmp_path_factory.mktemp("tools")), n_ctx=2048)  # tool JSON is long in a character vocabulary
    yield ens
    ens.close()


# ---------------------------------------------------------------------------- the request
@pytest.mark.parametrize(
    "tools, choice, message",
    [
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "banana"}}}], None, "JSON Schema"),
        ([{"type": "function", "function": {"name": "f", "parameters": "object"}}], None, "JSON Schema object"),
        ([{"type": "function", "function": {"name": "get\x00weather"}}], None, "must match"),
        ([{"type": "function", "function": {"name": "a" * 65}}], None, "must match"),
        ([{"type": "function", "function": {"name": "f"}}] * 2, None, "more than once"),
        ([{"type": "function", "function": {"name": f"f{i}"}} for i in range(10_000)], None, "at most 128"),
        ([{"type": "retrieval"}], None, "must be 'function'"),
        (TOOLS, {"type": "function", "function": {"name": "absent"}}, "not in tools"),
        (TOOLS, "sometimes", "tool_choice must be"),
        (None, "required", "tool_choice needs tools"),
        (None, {"type": "function", "function": {"name": "get_weather"}}, "tool_choice needs tools"),
        ([{"type": "function", "function": {"name": "f", "description": "x" * 300_000}}], None, "characters of JSON"),
    ],
)
def test_bad_tool_requests_are_refused_naming_the_field(tools, choice, message):
    with pytest.raises(InvalidParameterError, match=message):
        tool_request(tools, choice)


def test_a_good_request_and_its_choices():
    assert tool_request(None) is None and tool_request([]) is None and tool_request(None, "none") is None
    req = tool_request(TOOLS, {"type": "function", "function": {"name": "get_time"}}, False)
    assert req is not None and req.choice == "named" and req.forced == "get_time" and not req.parallel
    assert [t.name for t in req.callable_tools()] == ["get_time"]
    assert tool_request([{"function": {"name": "f"}}]).rendered[0]["type"] == "function"  # type filled in


# ---------------------------------------------------------------------------- the parser
def test_streamed_parse_equals_the_whole_parse_at_any_split():
    text = "Let me look.\n" + CALL + "\n" + CALL.replace("Paris", "Tokyo")
    whole = parse_all(HERMES, text)
    assert whole.content == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in whole.calls] == [
        ("get_weather", {"city": "Paris", "days": 2}),
        ("get_weather", {"city": "Tokyo", "days": 2}),
    ]
    for step in (1, 2, 3, 7):
        p = CallParser(HERMES)
        events = []
        for i in range(0, len(text), step):
            events += p.feed(text[i : i + step])
        events += p.finish()
        content = "".join(e[1] for e in events if e[0] == "content")
        assert content == whole.content and "<" not in content  # never the markup, even partly
        args = ["".join(e[2] for e in events if e[0] == "arguments" and e[1] == k) for k in (0, 1)]
        assert args == [c.arguments for c in whole.calls]
        assert [e[3] for e in events if e[0] == "call"] == ["get_weather", "get_weather"]
        assert all(c.complete for c in p.calls)


def test_a_reply_that_opens_with_the_calls_json_is_a_bare_call_other_json_is_content():
    bare = CALL.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
    for text in (bare, " \n" + bare, bare + "\n" + bare.replace("Paris", "Tokyo")):
        whole = parse_all(HERMES, text)
        assert whole.content == "" and all(c.complete and c.bare for c in whole.calls)
        assert json.loads(whole.calls[0].arguments) == {"city": "Paris", "days": 2}
        p = CallParser(HERMES)
        streamed = [e for ch in text for e in p.feed(ch)] + p.finish()
        args = "".join(e[2] for e in streamed if e[0] == "arguments" and e[1] == 0)
        assert args == whole.calls[0].arguments and not any(e[0] == "content" for e in streamed)
        assert [(c.name, c.arguments, c.complete) for c in p.calls] == [
            (c.name, c.arguments, c.complete) for c in whole.calls
        ]
    for text in ('{"a": 1} is JSON', "{", '{"nam'):
        assert parse_all(HERMES, text).content == text and not parse_all(HERMES, text).calls


def test_text_that_only_looks_like_a_call_is_content_and_a_cut_off_call_stays_partial():
    p = parse_all(HERMES, "a <tool_ b <tool")
    assert p.content == "a <tool_ b <tool" and not p.calls
    cut = parse_all(HERMES, CALL[:50])
    assert cut.content == "" and cut.calls[0].name == "get_weather" and not cut.calls[0].complete


# ---------------------------------------------------------------------------- the grammar, token by token
def _grammar(ens, req) -> str:
    spell = spelling(ens, HERMES)
    assert not spell.open_is_token  # the tiny vocabulary spells <tool_call> in pieces: the lazy text trigger
    return tool_grammar(req, HERMES, spell)


def _walk(ens, grammar: str, text: str) -> tuple[Constraint, list[bool]]:
    """The constraint over `text`'s tokens: whether each token was allowed where it came."""
    c = Constraint(ens._grammar_tokenizer(), grammar, ens.n_vocab)
    ok = []
    for tok in ens._grammar_tokenizer().tokenize_str(text):  # as text continues: no SentencePiece space
        ok.append(bool(c.allowed()[tok]))
        c.commit(tok)
    return c, ok


def test_the_grammar_is_lazy_free_text_until_the_trigger_then_only_a_call(tools_duo):
    auto = _grammar(tools_duo, tool_request(TOOLS))
    text = "Sure thing, 12 * (3 + 4) = 84!"
    c, ok = _walk(tools_duo, auto, text)
    free, _ = _walk(tools_duo, grammar_of(regex="(.|\n)*"), text)
    assert all(ok) and (c.allowed() == free.allowed()).all()  # free text: what any text allows
    c, ok = _walk(tools_duo, auto, "Let me see.\n" + CALL)
    assert all(ok) and c.failure is None
    c, ok = _walk(tools_duo, auto, 'ok <tool_call>\n{"name": "get_wea')
    assert all(ok)
    pieces = [tools_duo.piece(int(t)).decode() for t in c.allowed().nonzero()[0]]
    assert pieces and all('ther", "arguments": {"'.startswith(p) for p in pieces)  # get_wea can only be get_weather
    _, ok = _walk(tools_duo, auto, '<tool_call>\n{"name": "nope"')
    assert not all(ok)  # an unknown function cannot be written
    bare = CALL.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
    c, ok = _walk(tools_duo, auto, bare)  # Qwen2.5-Coder's call without the tags
    assert all(ok) and c.failure is None
    _, ok = _walk(tools_duo, auto, '{"name": "nope"')
    assert not all(ok)
    _, ok = _walk(tools_duo, auto, '{"a": [1, 2]} is JSON, not a call')
    assert all(ok)


def test_required_and_named_start_at_once_and_none_can_never_open_a_call(tools_duo):
    required = _grammar(tools_duo, tool_request(TOOLS, "required"))
    _, ok = _walk(tools_duo, required, "Hello")
    assert not ok[0]
    named = _grammar(tools_duo, tool_request(TOOLS, {"type": "function", "function": {"name": "get_time"}}))
    _, ok = _walk(tools_duo, named, CALL)
    assert not all(ok)  # get_weather is not the named function
    _, ok = _walk(tools_duo, named, '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>')
    assert all(ok)
    none = _grammar(tools_duo, tool_request(TOOLS, "none"))
    _, ok = _walk(tools_duo, none, "Plain <tool_ text")
    assert all(ok)
    _, ok = _walk(tools_duo, none, "Plain " + CALL)
    assert not all(ok)


def test_schemas_with_defs_keep_their_refs(tools_duo):
    tool = {
        "type": "function",
        "function": {
            "name": "paint",
            "parameters": {
                "type": "object",
                "$defs": {"colour": {"type": "string", "enum": ["red", "blue"]}},
                "properties": {"c": {"$ref": "#/$defs/colour"}},
                "required": ["c"],
                "additionalProperties": False,
            },
        },
    }
    g = _grammar(tools_duo, tool_request([tool, WEATHER], "required"))
    _, ok = _walk(tools_duo, g, '<tool_call>\n{"name": "paint", "arguments": {"c": "red"}}\n</tool_call>')
    assert all(ok)
    _, ok = _walk(tools_duo, g, '<tool_call>\n{"name": "paint", "arguments": {"c": "green"')
    assert not all(ok)


# ---------------------------------------------------------------------------- the Python API
def _check_call(call: dict, names=("get_weather", "get_time")) -> dict:
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] in names
    args = json.loads(call["function"]["arguments"])
    assert isinstance(args, dict)
    return args


def test_the_api_returns_tool_calls_and_streams_the_same(tools_duo):
    kw = dict(tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=256, temperature=0)
    res = tools_duo.create_chat_completion(ASK, **kw)
    choice = res["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    args = _check_call(call)
    if call["function"]["name"] == "get_weather":
        assert args["city"] in ("Paris", "Tokyo") and 1 <= args["days"] <= 7
    chunks = list(tools_duo.create_chat_completion(ASK, stream=True, **kw))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert not any(d.get("content") for d in deltas)  # no markup as content
    first = next(d["tool_calls"][0] for d in deltas if d.get("tool_calls"))
    assert first["id"].startswith("call_") and first["function"] == {"name": call["function"]["name"], "arguments": ""}
    streamed = "".join(
        tc["function"].get("arguments", "") for d in deltas for tc in d.get("tool_calls", ()) if tc["index"] == 0
    )
    assert json.loads(streamed) == args
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("strategy, gamma", [("se", [3, 1]), ("sd", 2), ("auto", None)])
def test_every_strategy_gives_standards_tool_call_at_t0(tools_duo, strategy, gamma):
    kw = dict(tools=TOOLS, tool_choice="required", max_tokens=384, temperature=0, parallel_tool_calls=True)
    ref = tools_duo.create_chat_completion(ASK, strategy="standard", **kw)
    out = tools_duo.create_chat_completion(ASK, strategy=strategy, gamma=gamma, **kw)
    calls = [[c["function"] for c in r["choices"][0]["message"].get("tool_calls") or ()] for r in (out, ref)]
    assert calls[0] == calls[1] and calls[0]  # ids differ; names and arguments are the same tokens
    assert out["choices"][0]["finish_reason"] == ref["choices"][0]["finish_reason"]


def test_auto_leaves_text_free_and_none_never_calls(tools_duo):
    for choice in ("auto", "none"):
        res = tools_duo.create_chat_completion(ASK, tools=TOOLS, tool_choice=choice, max_tokens=12, temperature=0)
        msg = res["choices"][0]["message"]
        assert not msg.get("tool_calls") and "<tool_call>" not in (msg["content"] or "")
        assert res["choices"][0]["finish_reason"] in ("stop", "length")


def test_history_with_calls_and_results_renders_through_the_template(tools_duo):
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 18}'},
    ]
    text = tools_duo.chat_template.render(history, tools=TOOLS)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert '<tool_response>\n{"celsius": 18}\n</tool_response>' in text and '"name": "get_time"' in text
    res = tools_duo.create_chat_completion(history, tools=TOOLS, max_tokens=4, temperature=0)
    assert res["usage"]["prompt_tokens"] == len(tools_duo.chat_template.tokens(history, tools=TOOLS))
    with pytest.raises(InvalidParameterError, match="arguments is not valid JSON"):
        bad = [*history[:1], {**history[1], "tool_calls": [{"function": {"name": "f", "arguments": "{nope"}}]}]
        tools_duo.create_chat_completion(bad, max_tokens=2)


def test_a_template_without_tool_support_is_a_clear_error(duo):
    with pytest.raises(InvalidParameterError, match=r"chat template of .*small.* has no tool support"):
        duo.create_chat_completion(ASK, tools=TOOLS, max_tokens=2)
    assert duo.create_chat_completion(ASK, max_tokens=2)["choices"][0]["message"]["content"] is not None


def test_tools_and_another_constraint_are_refused_together(tools_duo):
    with pytest.raises(InvalidParameterError, match="cannot be combined with json_schema"):
        tools_duo.create_chat_completion(ASK, tools=TOOLS, json_schema={"type": "object"}, max_tokens=2)
    res = tools_duo.create_chat_completion(
        ASK, tools=TOOLS, tool_choice="none", regex="(yes|no)", max_tokens=4, temperature=0
    )
    assert res["choices"][0]["message"]["content"] in ("yes", "no")


def test_a_follower_reads_the_tools_in_its_own_template(tmp_path):
    """A member with another vocabulary (ids permuted) renders the tools and calls itself, as it does
    the rest of the conversation (chat.member_chat_tokens), and the calls still come out whole."""
    import gguf_factory as gf
    import numpy as np

    from edge_specens.chat import member_chat_tokens, with_tools

    vocab = gf.build_vocab()
    perm = [int(i) for i in np.random.default_rng(7).permutation(len(vocab))]
    new = {old: i for i, old in enumerate(perm)}
    tok = gf.TinyTokenizer([vocab[i] for i in perm], bos=new[gf.BOS_ID], eos=new[gf.EOS_ID], unk=new[gf.UNK_ID])
    primary, follower = tool_duo(tmp_path)[0], tmp_path / "follower.gguf"
    gf.write_tiny_llama(follower, seed=2, tokenizer=tok, row_order=perm, chat_template=gf.TOOLS_CHAT_TEMPLATE)
    ens = load([primary, follower], n_ctx=2048)
    try:
        ids = ens.chat_template.tokens(ASK, tools=TOOLS)
        res = ens.create_chat_completion(ASK, tools=TOOLS, tool_choice="required", max_tokens=256, temperature=0)
        assert res["choices"][0]["finish_reason"] == "tool_calls"
        _check_call(res["choices"][0]["message"]["tool_calls"][0])
        own = ens.members[1].own_prompt(ids)
        assert own == member_chat_tokens(ens, 1, with_tools(ASK, TOOLS)) != member_chat_tokens(ens, 1, ASK)
    finally:
        ens.close()


def test_logprobs_of_a_streamed_call_cover_every_token_once(tools_duo):
    kw = dict(tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=256, temperature=0)
    whole = tools_duo.create_chat_completion(ASK, logprobs=True, **kw)
    chunks = list(tools_duo.create_chat_completion(ASK, stream=True, logprobs=True, **kw))
    streamed = [e for c in chunks for ch in c["choices"] for e in (ch.get("logprobs") or {}).get("content") or ()]
    expected = whole["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in streamed] == [e["token"] for e in expected]  # each token once, in order
    assert all(abs(a["logprob"] - b["logprob"]) < 1e-6 for a, b in zip(streamed, expected))  # float noise
    assert len(streamed) == whole["usage"]["completion_tokens"]
