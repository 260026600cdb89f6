"""The llama.cpp boundary: logits per requested position, chunking, rollback, context limits."""

import numpy as np
import pytest

from edge_specens.errors import ContextOverflowError
from edge_specens.member import Member, MemberOptions


@pytest.fixture(scope="module")
def member(tiny_models):
    m = Member(tiny_models["big"], MemberOptions(n_ctx=256, kv_f32=True))
    yield m
    m.close()


def test_rows_only_for_requested_positions(member):
    member.truncate(0)
    toks = member.tokenize("hello world the value")
    rows = member.evaluate(toks, [len(toks) - 1])
    assert rows.shape == (1, member.n_vocab) and np.isfinite(rows).all()
    assert member.tokens == toks
    assert member.evaluate([5, 6], []).shape == (0, member.n_vocab)


def test_logits_after_rollback_equal_a_fresh_context(member, tiny_models):
    a = member.tokenize("hello world")
    b, c = [300, 301, 302, 303], [310, 311, 312]
    member.truncate(0)
    member.evaluate(a, [])
    member.evaluate(b, [0, 1, 2, 3])
    member.truncate(len(a))
    assert member.tokens == a
    after = member.evaluate(c, [0, 1, 2])
    fresh = Member(tiny_models["big"], MemberOptions(n_ctx=256, kv_f32=True))
    try:
        fresh.evaluate(a, [])
        ref = fresh.evaluate(c, [0, 1, 2])
    finally:
        fresh.close()
    np.testing.assert_allclose(after, ref, atol=1e-4)


def test_chunks_larger_than_n_batch(tiny_models):
    """A batch above n_batch would abort llama.cpp: evaluate() must chunk it."""
    small = Member(tiny_models["small"], MemberOptions(n_ctx=256, n_batch=8, kv_f32=True))
    big = Member(tiny_models["small"], MemberOptions(n_ctx=256, kv_f32=True))
    try:
        toks = list(range(3, 3 + 60))
        want = [0, 7, 8, 30, 59]
        got = small.evaluate(toks, want)
        ref = big.evaluate(toks, want)
        assert small.stats.calls == 8  # ceil(60 / 8)
        np.testing.assert_allclose(got, ref, atol=1e-3)
    finally:
        small.close()
        big.close()


def test_at_most_max_outputs_rows_per_decode(member, monkeypatch):
    """llama.cpp keeps memory for the most rows one decode asked for: evaluate() splits after
    MAX_OUTPUTS rows, and the rows are those of one big batch."""
    from edge_specens.member import MAX_OUTPUTS, _chunks

    assert list(_chunks(40, set(range(40)), 128)) == [(0, 16), (16, 32), (32, 40)]
    assert list(_chunks(40, {39}, 128)) == [(0, 40)]
    assert list(_chunks(20, set(range(20)), 8)) == [(0, 8), (8, 16), (16, 20)]
    member.truncate(0)
    toks = list(range(5, 5 + 2 * MAX_OUTPUTS + 3))
    before = member.stats.calls
    rows = member.evaluate(toks, range(len(toks)))
    assert member.stats.calls - before == 3
    member.truncate(0)
    monkeypatch.setattr("edge_specens.member.MAX_OUTPUTS", 1000)
    whole = member.evaluate(toks, range(len(toks)))
    assert member.stats.calls - before == 4
    member.truncate(0)
    np.testing.assert_allclose(rows, whole, atol=1e-2)  # batch-shape float noise only (docs/design.md §4)


def test_context_is_the_requested_size_even_when_llama_rounds_up(tiny_models):
    m = Member(tiny_models["small"], MemberOptions(n_ctx=64))
    try:
        assert m.n_ctx == 64  # llama.cpp may allocate 256; we never use more than asked
        m.evaluate(list(range(3, 63)), [59])  # 60 tokens: fine
        with pytest.raises(ContextOverflowError):
            m.evaluate(list(range(3, 13)), [0])  # 70 > 64: a clear error, no llama.cpp abort
        assert len(m.tokens) == 60
    finally:
        m.close()


def test_prompt_between_requested_and_rounded_context(tiny_models):
    from edge_specens import Ensemble

    ens = Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=64)
    try:
        with pytest.raises(ContextOverflowError, match="64"):
            ens.generate(list(range(3, 103)), max_tokens=4)  # 100 tokens: between 64 and 256
        res = ens.generate(list(range(3, 58)), max_tokens=50, temperature=0, strategy="se", gamma=[4, 1])
        assert res.finish_reason == "length" and 55 + len(res.tokens) <= 64
        assert res.stats.note and "context" in res.stats.note
        ok = ens.generate("hello", max_tokens=4, temperature=0)  # still usable
        assert len(ok.tokens) == 4
    finally:
        ens.close()


def test_reuse_prefix_keeps_the_shared_part(member):
    member.truncate(0)
    member.evaluate([5, 6, 7, 8], [])
    assert member.reuse_prefix([5, 6, 9, 10]) == 2 and member.tokens == [5, 6]
    member.evaluate([9], [])
    assert member.reuse_prefix([5, 6, 9]) == 2  # the last token is evaluated again for its logits


def test_interrupted_bookkeeping_heals(member):
    member.truncate(0)
    member.evaluate([5, 6, 7], [])
    member._inflight = 1  # as if Ctrl-C arrived between llama_decode and the bookkeeping
    member.evaluate([9], [0])
    assert member.tokens == [5, 9]
