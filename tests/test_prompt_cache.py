"""Saved prompts (prompt_cache.py, --cache-ram): a side request between two chat turns does not cost the
next turn a re-read of the conversation, a restored state gives the logits of a re-read, the budget
evicts the least recently used state, and usage reports cached_tokens as OpenAI does.

Tiny GGUF members throughout (tests/gguf_factory.py); the server tests run a real uvicorn on loopback.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_specens import Ensemble
from edge_specens.errors import InvalidParameterError
from edge_specens.member import Member, MemberOptions
from edge_specens.prompt_cache import (
    MIB,
    MIN_SAVE_TOKENS,
    PromptCache,
    check_cache_ram,
    default_cache_ram,
    split_cache_ram,
)

TURN1 = [
    {"role": "system", "content": "you are a helpful assistant that answers in one line"},
    {"role": "user", "content": "print hello world and return the value of self in class A"},
]
SIDE = [{"role": "user", "content": "make a title for this chat: print hello world"}]  # Open WebUI's title request


def turn2(turn1_reply: str) -> list[dict]:
    return [*TURN1, {"role": "assistant", "content": turn1_reply}, {"role": "user", "content": "more please"}]


def load(tiny_models, **kw) -> Ensemble:
    kw.setdefault("n_threads", 1)
    return Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=512, kv_f32=True, **kw)


def tokens(rng, n: int) -> list[int]:
    return [1, *(int(t) for t in rng.integers(3, 500, n - 1))]


# ---------------------------------------------------------------------------- the cache itself
def test_lru_eviction_under_the_budget():
    cache = PromptCache(100)
    a = cache.add((1, 2, 3), b"a", 40)
    cache.add((4, 5, 6), b"b", 40)
    assert a is not None and len(cache) == 2
    cache.touch(a)  # a restored: now b is the least recently used
    cache.add((7, 8, 9), b"c", 40)
    assert [e.tokens for e in cache._entries.values()] == [(1, 2, 3), (7, 8, 9)]
    s = cache.stats()
    assert (s.entries, s.bytes, s.budget, s.evictions, s.restores) == (2, 80, 100, 1, 1)
    assert cache.add((9,), b"big", 101) is None and len(cache) == 2  # larger than the whole budget: not kept


def test_a_state_replaces_the_ones_it_extends_and_the_best_one_is_picked():
    cache = PromptCache(10**6)
    cache.add((1, 2, 3), b"", 10)
    cache.add((1, 2, 3, 4, 5), b"", 10)  # extends (1, 2, 3): any request reuses at least as much of it
    assert len(cache) == 1 and cache.covers((1, 2, 3)) and cache.covers((1, 2, 3, 4, 5))
    assert not cache.covers((1, 2, 3, 4, 5, 6)) and not cache.covers((1, 9))
    cache.add((1, 7, 7, 7), b"", 10)
    saved, n = cache.best((1, 2, 3, 4, 9))
    assert saved is not None and saved.tokens == (1, 2, 3, 4, 5) and n == 4
    saved, n = cache.best((1, 2, 3, 4, 5))  # one token is left to evaluate: its logits are needed
    assert n == 4
    saved, n = cache.best((1, 7, 7, 7, 8), can_rollback=False)  # no rollback: only a whole prefix
    assert saved is not None and saved.tokens == (1, 7, 7, 7) and n == 4
    assert cache.best((1, 2, 3, 9), can_rollback=False) == (None, 0)


def test_the_budget_splits_by_kv_size_and_is_bounded_by_ram(tiny_models, monkeypatch):
    from edge_specens import prompt_cache
    from edge_specens.gguf_header import validate_gguf

    small, big = validate_gguf(tiny_models["small"]), validate_gguf(tiny_models["big"])
    assert split_cache_ram(1000, [small, big]) == [250.0, 750.0]  # 2 layers x 16 per K and V, 3 x 32
    assert split_cache_ram(0, [small, big]) == [0.0, 0.0]
    monkeypatch.setattr(prompt_cache, "available_ram", lambda: 3 * 2**30)
    assert default_cache_ram(2**30) == 1024  # half of what the weights leave
    monkeypatch.setattr(prompt_cache, "available_ram", lambda: 64 * 2**30)
    assert default_cache_ram(2**30) == 8192  # llama-server's default
    monkeypatch.setattr(prompt_cache, "available_ram", lambda: None)
    assert default_cache_ram() == 8192


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), "8192", None, True])
def test_bad_budgets_are_refused(tiny_models, bad):
    with pytest.raises(InvalidParameterError, match="cache_ram must be a number of MiB >= 0"):
        check_cache_ram(bad)
    if bad is not None:  # None is from_paths' default
        with pytest.raises(InvalidParameterError, match="cache_ram"):
            load(tiny_models, cache_ram=bad)
    with pytest.raises(InvalidParameterError, match="cache_ram"):
        MemberOptions(cache_ram=bad).validate()  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- a member
def test_a_restored_state_gives_the_logits_of_a_re_read(tiny_models):
    rng = np.random.default_rng(0)
    conversation, side = tokens(rng, 120), tokens(rng, 60)
    nxt = [*conversation, *(int(t) for t in rng.integers(3, 500, 10))]  # the next turn extends it
    cached = Member(tiny_models["big"], MemberOptions(n_ctx=512, kv_f32=True, n_threads=1, cache_ram=16))
    fresh = Member(tiny_models["big"], MemberOptions(n_ctx=512, kv_f32=True, n_threads=1))
    try:
        assert cached.prefill(conversation) == 0
        cached.evaluate_rows([conversation[-1], 7, 8], [])  # the reply: the cache holds more than the prompt
        assert cached.prefill(side) == 1  # shares only the BOS: the conversation is saved first
        assert cached.prompt_cache_stats.entries == 1
        assert cached.prefill(nxt) == len(conversation)  # restored; the rest read
        assert cached.tokens == nxt[:-1] and cached.prompt_cache_stats.restores == 1
        # the same reads without the side request: batch sizes change float noise (docs/design.md §4)
        fresh.prefill(conversation)
        fresh.evaluate_rows([conversation[-1], 7, 8], [])
        assert fresh.prefill(nxt) == len(conversation)
        want = [0, 1, 2]
        a = cached.evaluate([nxt[-1], 9, 10], want)
        b = fresh.evaluate([nxt[-1], 9, 10], want)
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        assert [int(np.argmax(r)) for r in a] == [int(np.argmax(r)) for r in b]
    finally:
        cached.close()
        fresh.close()


def test_lru_eviction_in_a_member_under_a_tiny_budget(tiny_models):
    rng = np.random.default_rng(1)
    prompts = [tokens(rng, 100) for _ in range(3)]
    probe = Member(tiny_models["big"], MemberOptions(n_ctx=512, kv_f32=True, n_threads=1))
    probe.prefill(prompts[0])
    one = probe._lib.llama_state_seq_get_size(probe.ctx, 0)  # what one 99-token state takes
    probe.close()
    m = Member(tiny_models["big"], MemberOptions(n_ctx=512, kv_f32=True, n_threads=1, cache_ram=1.5 * one / MIB))
    try:
        for p in prompts:
            m.prefill(p)
        s = m.prompt_cache_stats
        assert (s.entries, s.saves, s.evictions) == (1, 2, 1) and s.bytes <= s.budget  # room for one: prompt 1
        assert m.prefill([*prompts[0], 5]) <= 1  # the oldest went; saving prompt 2 (live) evicts prompt 1
        # prompt 2 comes back; saving the live prompt 0 evicts it, but it is the live state now
        assert m.prefill([*prompts[2], 5]) == len(prompts[2]) - 1
        assert m.prefill([*prompts[1], 5]) <= 1  # evicted long ago; saving prompt 2 evicts prompt 0
        assert m.prefill([*prompts[2], 5, 6]) == len(prompts[2])  # the one saved last
        s = m.prompt_cache_stats
        assert (s.entries, s.saves, s.restores, s.evictions) == (1, 6, 2, 5) and s.bytes <= s.budget
    finally:
        m.close()


def test_short_tails_are_not_saved_and_a_refused_state_reads_again(tiny_models, monkeypatch):
    rng = np.random.default_rng(2)
    p = tokens(rng, 80)
    m = Member(tiny_models["big"], MemberOptions(n_ctx=512, kv_f32=True, n_threads=1, cache_ram=16))
    try:
        m.prefill(p)
        m.evaluate_rows([p[-1], *range(10, 10 + MIN_SAVE_TOKENS - 2)], [])
        assert m.prefill([*p, 5]) == len(p) and m.prompt_cache_stats.entries == 0  # a chat turn: < 32 dropped
        m.prefill(tokens(rng, 50))  # another prompt: now the first one is saved
        assert m.prompt_cache_stats.entries == 1
        monkeypatch.setattr(m._lib, "llama_state_seq_set_data", lambda *a: 0)  # llama.cpp refuses the state
        assert m.prefill([*p, 6]) == 0 and m.tokens == [*p, 6][:-1]  # read again, from an empty cache
        assert m.prompt_cache_stats.entries == 1  # the refused state went; the 50-token prompt was saved
    finally:
        m.close()


# ---------------------------------------------------------------------------- an ensemble
def conversation(ens, **kw):
    """turn 1, the side request, turn 2: the first and last results, turn 2's prompt and its tokens."""
    r1 = ens.create_chat_completion(TURN1, max_tokens=24, temperature=0, **kw)
    ens.create_chat_completion(SIDE, max_tokens=8, temperature=0, **kw)
    messages = turn2(r1["choices"][0]["message"]["content"])
    r3 = ens.create_chat_completion(messages, max_tokens=24, temperature=0, **kw)
    return r1, r3, ens.chat_template.tokens(messages), ens.last_result.tokens


@pytest.mark.parametrize(
    "vocab, strategy, parallel",
    [("auto", "standard", False), ("auto", "se", True), ("bridge", "se", False)],  # bridge: a follower
)
def test_a_side_request_keeps_the_conversation(tiny_models, vocab, strategy, parallel):
    from noise_rule import check

    with load(tiny_models, vocab=vocab, cache_ram=64) as on, load(tiny_models, vocab=vocab, cache_ram=0) as off:
        a1, a3, prompt, a_tokens = conversation(on, strategy=strategy, parallel=parallel)
        b1, b3, _, b_tokens = conversation(off, strategy=strategy, parallel=parallel)
        assert a1["choices"][0]["message"]["content"] == b1["choices"][0]["message"]["content"]
        cached, prompt1 = a3["usage"]["prompt_tokens_details"]["cached_tokens"], a1["usage"]["prompt_tokens"]
        assert cached >= prompt1 and cached == on.last_result.stats.reused_tokens  # all of turn 1
        assert b3["usage"]["prompt_tokens_details"]["cached_tokens"] < 20  # what it shares with the title request
        check(off, prompt, b_tokens, a_tokens)  # the same greedy tokens (up to a near-tie's float noise)
        assert all(m.prompt_cache_stats.restores == 1 for m in on.members)
        assert all(m.prompt_cache_stats is None for m in off.members)


# ---------------------------------------------------------------------------- the server
def test_server_reports_cached_tokens(tiny_models):
    pytest.importorskip("fastapi")
    openai = pytest.importorskip("openai")
    import httpx
    from tiny_servers import running_app

    from edge_specens.server import create_app

    for cache_ram in (64, 0):
        with load(tiny_models, cache_ram=cache_ram) as ens, running_app(create_app(ens)) as url:
            c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
            first = c.chat.completions.create(model="x", messages=TURN1, max_tokens=24, temperature=0)
            c.chat.completions.create(model="x", messages=SIDE, max_tokens=8, temperature=0)
            chunks = list(
                c.chat.completions.create(
                    model="x",
                    messages=turn2(first.choices[0].message.content),
                    max_tokens=8,
                    temperature=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            usage = chunks[-1].usage
            assert chunks[-1].choices == [] and usage is not None and usage.prompt_tokens_details is not None
            cached = usage.prompt_tokens_details.cached_tokens
            c.completions.create(model="x", prompt="the value " * 12, max_tokens=4, temperature=0)
            again = c.completions.create(model="x", prompt="the value " * 12 + "and more", max_tokens=4, temperature=0)
            assert again.usage.prompt_tokens_details.cached_tokens >= again.usage.prompt_tokens - 8
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            props = httpx.get(f"{url}/props", timeout=10).json()["prompt_cache"]
            if cache_ram:
                assert cached >= first.usage.prompt_tokens, (cached, first.usage.prompt_tokens)
                assert props["cache_ram_mib"] == 64 and min(props["entries"]) >= 1 and props["bytes"] > 0
                assert 'edge_specens_prompt_cache_restores_total{member="small.gguf"} 1' in metrics
            else:
                assert cached < 20, cached
                assert props == {"cache_ram_mib": 0.0, "entries": [0, 0], "bytes": 0}
                assert 'edge_specens_prompt_cache_entries{member="small.gguf"} 0' in metrics


# ---------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("command", ["serve", "chat", "generate"])
@pytest.mark.parametrize("value", ["-5", "abc", "nan", ""])
def test_cli_bad_cache_ram_is_one_line(tiny_models, command, value):
    from test_cli import run

    args = [command, *(["hi"] if command == "generate" else []), "-m", str(tiny_models["small"])]
    rc, _, err = run([*args, "--cache-ram", value])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "--cache-ram" in lines[0] and "MiB >= 0" in lines[0], err
    assert "Traceback" not in err


def test_cli_cache_ram_reaches_the_ensemble(tiny_models):
    from edge_specens.cli.options import load_ensemble

    opts = {"models": [str(tiny_models["small"]), str(tiny_models["big"])], "n_ctx": 256, "cache_ram": 0.0}
    with load_ensemble(opts, progress=False) as ens:
        assert ens.cache_ram == 0 and all(m.prompt_cache is None for m in ens.members)
    with load_ensemble({**opts, "cache_ram": 100.0}, progress=False) as ens:
        assert ens.cache_ram == 100 and [m.prompt_cache.budget for m in ens.members] == [25 * MIB, 75 * MIB]
    with load_ensemble({**opts, "cache_ram": None}, progress=False) as ens:
        assert 0 <= ens.cache_ram <= 8192


# ---------------------------------------------------------------------------- a remote member
def test_a_remote_member_keeps_its_saved_prompts_in_its_helper(tiny_models):
    from noise_rule import check
    from test_remote import RpcServer

    from edge_specens.remote.backend import supports_rpc

    if not supports_rpc():
        pytest.skip("llama-cpp-python built without RPC (make install builds it with RPC)")
    server = RpcServer().start()
    try:
        rpc_on = [None, server.endpoint]
        with load(tiny_models, cache_ram=64, rpc=rpc_on) as there, load(tiny_models, cache_ram=0) as here:
            a1, a3, prompt, a_tokens = conversation(there, strategy="se")
            b1, b3, _, b_tokens = conversation(here, strategy="se")
            assert a1["choices"][0]["message"]["content"] == b1["choices"][0]["message"]["content"]
            assert a3["usage"]["prompt_tokens_details"]["cached_tokens"] >= a1["usage"]["prompt_tokens"]
            remote = there.members[1]
            assert remote.device.startswith("rpc:") and remote.prompt_cache_stats.restores == 1
            check(here, prompt, b_tokens, a_tokens)
    finally:
        server.kill()
