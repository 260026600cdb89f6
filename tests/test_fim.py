"""Fill-in-the-middle: the model's own FIM tokens, llama.cpp's prompt layout, and its three doors:
Ensemble.infill, `suffix` on /v1/completions (the openai SDK) and llama-server's POST /infill."""

from __future__ import annotations

import json

import httpx
import pytest
from gguf_factory import BASE_VOCAB_SIZE, FIM_TOKENS
from tiny_servers import fim_duo, load, running_app

from edge_specens import InvalidParameterError
from edge_specens.fim import fim_tokens, infill_tokens

PRE, SUF, MID, PAD, REP, SEP = range(BASE_VOCAB_SIZE, BASE_VOCAB_SIZE + len(FIM_TOKENS))


@pytest.fixture(scope="module")
def fim_ens(tmp_path_factory):
    ens = load(fim_duo(tmp_path_factory.mktemp("fim")), n_ctx=256)
    yield ens
    ens.close()


def test_the_fim_tokens_come_from_the_gguf(fim_ens, duo):
    t = fim_tokens(fim_ens)
    assert (t.prefix, t.suffix, t.middle, t.repo, t.sep) == (PRE, SUF, MID, REP, SEP)
    with pytest.raises(InvalidParameterError, match="no fill-in-the-middle tokens.*such as Qwen2.5-Coder"):
        fim_tokens(duo)
    with pytest.raises(InvalidParameterError, match="fill-in-the-middle"):
        duo.infill("def f(", ")")


def test_the_prompt_is_llama_cpps_layout_and_user_text_stays_text(fim_ens):
    ens = fim_ens
    tokens = infill_tokens(ens, "a <|fim_middle|>", "b", [{"text": "x = 1", "filename": "util.py"}], "c", 16)

    def text(s):
        return ens.tokenize(s, add_bos=False, special=False)

    expected = [
        REP,
        *text("myproject\n"),
        SEP,
        *text("util.py\n"),
        *text("x = 1"),
        SEP,
        *text("filename\n"),
        1,  # BOS: the tiny models add one
        PRE,
        *text("a <|fim_middle|>"),
        *text("c"),
        SUF,
        *text("b"),
        MID,
    ]
    assert tokens == expected
    assert tokens.count(MID) == 1  # the prefix's "<|fim_middle|>" is text, not the control token


def test_what_does_not_fit_is_cut_from_the_far_ends(fim_ens):
    ens = fim_ens
    prefix = "".join(f"line{i} = {i}\n" for i in range(400))
    suffix = "".join(f"tail{i} = {i}\n" for i in range(400))
    extra = [{"text": "old = 1\n" * 50, "filename": "a.py"}]
    tokens = infill_tokens(ens, prefix, suffix, extra, "", 16)
    assert len(tokens) == ens.n_ctx - 16
    assert REP not in tokens  # the extra context goes first
    middle = ens.detokenize(tokens[tokens.index(PRE) + 1 : tokens.index(SUF)])
    after = ens.detokenize(tokens[tokens.index(SUF) + 1 : tokens.index(MID)])
    assert prefix.endswith(middle.lstrip()) and "line399 = 399" in middle  # the end of the prefix is kept
    assert after.lstrip().startswith("tail0 = 0") and suffix.startswith(after.lstrip())
    assert len(middle) > 2 * len(after)  # 3:1, as llama.cpp splits them
    # the server's default max_tokens (the whole context) still leaves room for the code around the cursor
    assert len(infill_tokens(ens, prefix, suffix, max_tokens=ens.n_ctx)) == ens.n_ctx - ens.n_ctx // 4


def test_bad_infill_input_is_a_typed_error(fim_ens):
    for bad in ([1, 2], "text", [{"text": 3}], [{"text": "x", "filename": "a\nb"}], [{"text": "x"}] * 300):
        with pytest.raises(InvalidParameterError, match="input_extra"):
            infill_tokens(fim_ens, "a", "b", bad)
    with pytest.raises(InvalidParameterError, match="suffix must be a string"):
        fim_ens.infill("a", 3)


def test_ensemble_infill_is_a_generation_from_the_fim_prompt(fim_ens):
    res = fim_ens.infill("def f(x):\n    ", "\n    return y\n", max_tokens=6, temperature=0, strategy="standard")
    tokens = infill_tokens(fim_ens, "def f(x):\n    ", "\n    return y\n", max_tokens=6)
    ref = fim_ens.generate(tokens, max_tokens=6, temperature=0, strategy="standard")
    assert res.tokens == ref.tokens and res.stats.prompt_tokens == len(tokens)
    assert fim_ens.infill("x", "y", max_tokens=2, temperature=0, logprobs=1, strategy="standard").logprobs


# ---------------------------------------------------------------------- through the server
@pytest.fixture(scope="module")
def srv(fim_ens, duo):
    pytest.importorskip("fastapi")
    from edge_specens.server import create_app

    with running_app(create_app(fim_ens)) as url, running_app(create_app(duo)) as plain:
        yield url, plain


def test_suffix_through_the_openai_sdk(srv, fim_ens):
    openai = pytest.importorskip("openai")
    url, plain = srv
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    r = c.completions.create(
        model="x", prompt="def f(x):\n    ", suffix="\n    return y\n", max_tokens=6, temperature=0
    )
    assert r.usage.prompt_tokens == len(infill_tokens(fim_ens, "def f(x):\n    ", "\n    return y\n", max_tokens=6))
    assert r.usage.completion_tokens >= 1
    with pytest.raises(openai.BadRequestError) as e:  # a model without FIM tokens: a clear 400
        openai.OpenAI(base_url=f"{plain}/v1", api_key="u", max_retries=0).completions.create(
            model="x", prompt="def f(", suffix=")", max_tokens=4
        )
    assert e.value.body["param"] == "suffix" and "fill-in-the-middle" in e.value.body["message"]
    r = httpx.post(f"{url}/v1/completions", json={"prompt": [1, 2, 3], "suffix": "x"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "suffix"


def test_llama_cpps_infill_endpoint(srv, fim_ens):
    url, plain = srv
    body = {
        "input_prefix": "def f(x):\n    ",
        "input_suffix": "\n    return y\n",
        "input_extra": [{"text": "y = 2\n", "filename": "u.py"}],
        "n_predict": 5,
        "temperature": 0,
        "cache_prompt": True,  # llama.cpp fields we have no use for are ignored
        "samplers": ["top_k", "infill"],
    }
    r = httpx.post(f"{url}/infill", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["stop"] is True and out["tokens_predicted"] == 5 and out["stop_type"] == "limit"
    assert out["tokens_evaluated"] == len(
        infill_tokens(fim_ens, body["input_prefix"], body["input_suffix"], body["input_extra"], "", 5)
    )
    assert {"prompt_n", "predicted_n", "predicted_ms"} <= set(out["timings"])
    with httpx.stream("POST", f"{url}/infill", json={**body, "stream": True, "n_probs": 2}, timeout=60) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1]["stop"] is True and all(not e["stop"] for e in events[:-1])
    assert "".join(e["content"] for e in events[:-1]) == out["content"]  # greedy: the same middle
    assert all(len(p["top_logprobs"]) == 2 for e in events[:-1] for p in e["completion_probabilities"])
    r = httpx.post(f"{plain}/infill", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_suffix", r.text
    for bad, param in (({"input_extra": "x"}, "input_extra"), ({"n_predict": 0}, "n_predict")):
        r = httpx.post(f"{url}/infill", json={**body, **bad}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
