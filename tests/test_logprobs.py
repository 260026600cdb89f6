"""logprobs: each committed token's log-probability under r (at T = 1, after penalties, bias and grammar,
before the truncation filters) and r's likeliest tokens, in the Python API and in OpenAI's two shapes.

Every strategy reports the same numbers (docs/design.md §4): exactly with fake members, within float
noise on tiny GGUF models, and through the `openai` SDK against a real `edge-specens serve`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import fake_ensemble

from edge_specens import InvalidParameterError
from edge_specens.distributions import top2_margin
from edge_specens.logprobs import LOG_ZERO, chat_logprobs, completion_logprobs, token_logprob
from edge_specens.params import MAX_TOP_LOGPROBS, SamplingParams

STRATEGIES = ("standard", "se", "sd")


# ---------------------------------------------------------------------- the numbers
def test_token_logprob_picks_the_likeliest_first_ties_by_id_and_leaves_out_zeros():
    r = np.array([0.1, 0.3, 0.0, 0.3, 0.2, 0.1], dtype=np.float32)
    e = token_logprob(r, 4, 5)
    assert e.token == 4 and e.logprob == pytest.approx(np.log(0.2))
    assert [t for t, _ in e.top] == [1, 3, 4, 0, 5]
    assert token_logprob(r, 2, 0) == type(e)(2, LOG_ZERO, ())  # log 0 as OpenAI writes it: JSON has no -inf
    assert [t for t, _ in token_logprob(r, 1, MAX_TOP_LOGPROBS).top] == [1, 3, 4, 0, 5]  # never a zero


def _r_at_t1(ens, prompt, tokens, sampling):
    """r at T = 1 without filters after each prefix of `tokens` (fake members: exact logits)."""
    greedy = SamplingParams(**{**sampling.__dict__, "temperature": 0.0})
    out, seq = [], list(prompt)
    for t in tokens:
        rows = [m.logits(seq)[: ens.n_vocab] for m in ens.members]
        out.append(ens.spec.target(rows, greedy, seq))
        seq.append(t)
    return out


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_every_strategy_reports_r_exactly_with_fake_members(temperature):
    ens = fake_ensemble()
    prompt = [3, 1, 4, 1, 5]
    kw = dict(max_tokens=12, temperature=temperature, seed=7, logprobs=4, top_k=5, repeat_penalty=1.3)
    results = {s: ens.generate(prompt, strategy=s, **kw) for s in STRATEGIES}
    ref = results["standard"]
    assert len(ref.logprobs) == len(ref.tokens) > 0
    expected = _r_at_t1(ens, prompt, ref.tokens, SamplingParams(temperature=temperature, repeat_penalty=1.3))
    for e, tok, r in zip(ref.logprobs, ref.tokens, expected):
        assert e.token == tok
        assert e.logprob == pytest.approx(np.log(r[tok]), abs=1e-6)  # r at T = 1, penalised, not truncated
        assert [t for t, _ in e.top] == list(np.argsort(-r, kind="stable")[:4])
    if temperature == 0:  # the same tokens, so the same numbers from every strategy
        for s in ("se", "sd"):
            assert results[s].tokens == ref.tokens
            assert [e.logprob for e in results[s].logprobs] == pytest.approx([e.logprob for e in ref.logprobs])


def test_logprobs_follow_the_bias_and_are_off_by_default():
    ens = fake_ensemble()
    kw = dict(max_tokens=1, temperature=0, strategy="standard")
    plain = ens.generate([3, 1, 4], logprobs=2, **kw)
    assert ens.generate([3, 1, 4], **kw).logprobs is None
    first = plain.tokens[0]
    banned = ens.generate([3, 1, 4], logprobs=2, logit_bias={first: -100}, **kw)
    assert banned.tokens[0] != first and first not in [t for t, _ in banned.logprobs[0].top]
    assert banned.to_dict()["logprobs"][0]["token"] == banned.tokens[0]
    assert "logprobs" not in ens.generate([3, 1, 4], **kw).to_dict()


@pytest.mark.parametrize("bad", [-1, MAX_TOP_LOGPROBS + 1, 1000, True, 2.5, "3"])
def test_bad_logprobs_are_a_typed_error(bad):
    with pytest.raises(InvalidParameterError, match="logprobs"):
        fake_ensemble().generate([1, 2], logprobs=bad, strategy="standard")


def test_the_openai_shapes():
    ens = fake_ensemble()
    res = ens.generate([3, 1, 4], max_tokens=3, temperature=0, logprobs=2, strategy="standard")
    chat = chat_logprobs(res.logprobs, ens.piece)
    assert chat["refusal"] is None and len(chat["content"]) == 3
    first = chat["content"][0]
    assert first["token"] == ens.piece(res.tokens[0]).decode() and first["bytes"] == list(ens.piece(res.tokens[0]))
    assert len(first["top_logprobs"]) == 2 and first["top_logprobs"][0]["logprob"] >= first["logprob"]
    comp = completion_logprobs(res.logprobs, ens.piece)
    assert comp["tokens"] == [ens.piece(t).decode() for t in res.tokens]
    assert comp["text_offset"][0] == 0 and comp["text_offset"][1] == len(comp["tokens"][0])
    assert all(isinstance(d, dict) and len(d) <= 2 for d in comp["top_logprobs"])
    json.dumps(chat), json.dumps(comp)  # plain JSON: no -inf, no numpy types


def test_the_python_chat_api_speaks_openais_pair(duo):
    ens = duo
    msgs = [{"role": "user", "content": "hi"}]
    kw = dict(max_tokens=3, temperature=0, strategy="standard")
    with pytest.raises(InvalidParameterError, match="top_logprobs needs logprobs"):
        ens.create_chat_completion(msgs, top_logprobs=2)
    out = ens.create_chat_completion(msgs, logprobs=True, top_logprobs=2, **kw)
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == out["usage"]["completion_tokens"] and len(content[0]["top_logprobs"]) == 2
    streamed = [
        e
        for c in ens.create_chat_completion(msgs, logprobs=True, stream=True, **kw)
        for ch in c["choices"]
        for e in (ch.get("logprobs") or {}).get("content", [])
    ]
    assert [e["token"] for e in streamed] == [e["token"] for e in content]
    assert all(e["top_logprobs"] == [] for e in streamed)  # logprobs: true alone: the token only
    assert ens.create_chat_completion(msgs, **kw)["choices"][0]["logprobs"] is None


# ---------------------------------------------------------------------- tiny GGUF models
def _near_tie_free(ens, prompt, out_tokens, at_least: float) -> bool:
    seq = list(prompt) + list(out_tokens)
    want = list(range(len(prompt) - 1, len(seq)))
    rows = []
    for m in ens.members:
        m.truncate(0)
        rows.append(m.evaluate(seq, want)[:, : ens.n_vocab])
        m.truncate(0)
    greedy = SamplingParams(temperature=0)
    return min(top2_margin(ens.spec.target([r[i] for r in rows], greedy)) for i in range(len(want))) >= at_least


def test_strategies_agree_within_float_noise_on_tiny_models(duo):
    """f32 KV cache: batched and single-token logits differ by ~4e-5 (docs/design.md §4)."""
    prompt = duo.tokenize("hello world")
    ref = duo.generate(prompt, max_tokens=10, temperature=0, strategy="standard", logprobs=3)
    assert _near_tie_free(duo, prompt, ref.tokens, 5e-3)
    for s in ("se", "sd"):
        res = duo.generate(prompt, max_tokens=10, temperature=0, strategy=s, logprobs=3)
        assert res.tokens == ref.tokens
        for a, b in zip(res.logprobs, ref.logprobs):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
            assert [t for t, _ in a.top] == [t for t, _ in b.top]
            assert [lp for _, lp in a.top] == pytest.approx([lp for _, lp in b.top], abs=1e-3)
    p = np.exp([lp for _, lp in ref.logprobs[0].top])
    assert 0 < p.sum() <= 1 + 1e-6 and np.all(np.diff(p) <= 0)


def test_generate_json_prints_the_logprobs(tiny_models):
    from click.testing import CliRunner

    from edge_specens.cli.main import generate

    args = ["-m", str(tiny_models["small"]), "-m", str(tiny_models["big"]), "-c", "128", "--json"]
    r = CliRunner().invoke(generate, [*args, "--temp", "0", "-n", "3", "--logprobs", "2", "hello"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert len(out["logprobs"]) == len(out["tokens"]) and len(out["logprobs"][0]["top_logprobs"]) == 2
    import subprocess
    import sys

    bad = subprocess.run(
        [sys.executable, "-m", "edge_specens", "generate", *args, "--logprobs", "21", "hello"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "logprobs must be at most 20" in bad.stderr and "Traceback" not in bad.stderr


# ---------------------------------------------------------------------- the openai SDK against `serve`
@pytest.fixture(scope="module")
def served(tiny_models):
    pytest.importorskip("fastapi")
    openai = pytest.importorskip("openai")
    from serving import start_serve

    from edge_specens import Ensemble
    from edge_specens.chat import chat_template

    # prompts whose greedy path keeps clear of near-ties at the server's f16 KV cache
    ens = Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=512, kv_f32=True, n_threads=1)
    chats = []
    for q in ("hi", "hello world", "def f", "print hello", "a b c", "class A", "import os", "for i in range"):
        prompt = chat_template(ens).tokens([{"role": "user", "content": q}])
        res = ens.generate(prompt, max_tokens=8, temperature=0, strategy="standard")
        if _near_tie_free(ens, prompt, res.tokens, 1e-2):  # as tests/test_server.py picks its prompts
            chats.append(q)
    ens.close()
    assert len(chats) >= 2, chats
    proc, url, _ = start_serve(["-m", str(tiny_models["small"]), "-m", str(tiny_models["big"]), "-c", "512", "-t", "1"])
    try:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60), chats, url
    finally:
        proc.terminate()
        proc.wait(30)


def test_se_and_standard_report_the_same_logprobs_through_the_openai_sdk(served):
    client, chats, _ = served
    f16_noise = 2e-2  # docs/design.md §4: logits move by up to ~2e-2 with llama.cpp's f16 KV cache
    for q in chats[:3]:
        got = {}
        for s in STRATEGIES:
            r = client.chat.completions.create(
                model="x",
                messages=[{"role": "user", "content": q}],
                max_tokens=8,
                temperature=0,
                logprobs=True,
                top_logprobs=3,
                extra_body={"strategy": s},
            )
            got[s] = r.choices[0].logprobs.content
            assert len(got[s]) == r.usage.completion_tokens
        ref = got["standard"]
        for s in ("se", "sd"):
            assert [e.token for e in got[s]] == [e.token for e in ref], (q, s)
            for a, b in zip(got[s], ref):
                assert abs(a.logprob - b.logprob) <= f16_noise, (q, s)
                assert len(a.top_logprobs) == 3
                assert [x.logprob for x in a.top_logprobs] == pytest.approx(
                    [x.logprob for x in b.top_logprobs], abs=f16_noise
                )


def test_streamed_and_completion_logprobs_through_the_openai_sdk(served):
    client, chats, _ = served
    msgs = [{"role": "user", "content": chats[0]}]
    whole = client.chat.completions.create(
        model="x", messages=msgs, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2
    )
    streamed = [
        e
        for chunk in client.chat.completions.create(
            model="x", messages=msgs, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2, stream=True
        )
        for ch in chunk.choices
        for e in (ch.logprobs.content if ch.logprobs and ch.logprobs.content else [])
    ]
    assert [e.token for e in streamed] == [e.token for e in whole.choices[0].logprobs.content]
    assert "".join(e.token for e in streamed) == whole.choices[0].message.content
    comp = client.completions.create(model="x", prompt="hello world", max_tokens=5, temperature=0, logprobs=2)
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == comp.usage.completion_tokens
    assert all(len(d) <= 2 for d in lp.top_logprobs) and lp.text_offset[0] == 0
    assert max(lp.top_logprobs[0].values()) >= lp.token_logprobs[0] - 1e-9  # greedy: the top token


def test_bad_logprobs_requests_are_400_and_the_server_stays_healthy(served):
    import httpx

    _, _, url = served
    msgs = [{"role": "user", "content": "hi"}]
    for body, param in (
        ({"messages": msgs, "logprobs": True, "top_logprobs": 1000}, "top_logprobs"),
        ({"messages": msgs, "logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"messages": msgs, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": msgs, "logprobs": 3}, "logprobs"),
    ):
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param, r.json()
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "logprobs": 21}, timeout=30)
    assert r.status_code == 400 and "at most 20" in r.json()["error"]["message"]
    assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "ok"
