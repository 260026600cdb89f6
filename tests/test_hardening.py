"""Interruptions, determinism, long sessions and property tests of the distribution functions."""

import gc
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_specens import Ensemble, InvalidParameterError
from edge_specens import distributions as D
from edge_specens.params import EnsembleSpec, SamplingParams
from edge_specens.verify import output_distribution


def test_invalid_utf8_prompt(duo):
    with pytest.raises(InvalidParameterError, match="UTF-8"):
        duo.generate("bad \udcff text", max_tokens=2)


@pytest.mark.parametrize("strategy,gamma", [("se", [3, 1]), ("sd", 4), ("standard", None)])
def test_interrupt_leaves_the_ensemble_like_a_fresh_one(tiny_models, strategy, gamma):
    """KeyboardInterrupt inside llama_decode bookkeeping, then the same call: same tokens as a fresh object."""
    paths = [tiny_models["small"], tiny_models["big"]]
    fresh = Ensemble.from_paths(paths, n_ctx=512)
    expected = fresh.generate("hello world", max_tokens=30, seed=5, strategy=strategy, gamma=gamma).tokens
    fresh.close()
    ens = Ensemble.from_paths(paths, n_ctx=512)
    try:
        member = ens.members[1]
        calls = {"n": 0}

        def flaky(real):
            def call(self, tokens, want):
                out = real(self, tokens, want)
                calls["n"] += 1
                if calls["n"] == 3:
                    self._inflight = len(self.tokens) - len(tokens)  # as if interrupted before bookkeeping
                    raise KeyboardInterrupt
                return out

            return call.__get__(member)

        for name in ("evaluate", "evaluate_rows"):  # prefill / the strategies' scoring
            setattr(member, name, flaky(getattr(type(member), name)))
        with pytest.raises(KeyboardInterrupt):
            ens.generate("hello world", max_tokens=30, seed=5, strategy=strategy, gamma=gamma)
        assert calls["n"] == 3
        del member.evaluate, member.evaluate_rows
        assert ens.generate("hello world", max_tokens=30, seed=5, strategy=strategy, gamma=gamma).tokens == expected
        # a stream closed early, too
        it = ens.stream("hello world", max_tokens=30, seed=9, strategy=strategy, gamma=gamma)
        next(it)
        it.close()
        assert ens.generate("hello world", max_tokens=30, seed=5, strategy=strategy, gamma=gamma).tokens == expected
    finally:
        ens.close()


def test_soak_200_chat_turns_no_growth(tiny_models):
    """200 chat turns, a new conversation every 5: memory and per-turn latency stay flat."""

    ens = Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=2048)
    try:
        msgs = []
        latencies, rss = [], []
        for turn in range(200):
            if turn % 5 == 0:
                msgs = []
            msgs.append({"role": "user", "content": f"hello world {turn % 7}"})
            t0 = time.perf_counter()
            r = ens.create_chat_completion(msgs, max_tokens=8, seed=turn, strategy="se", gamma=[3, 1])
            latencies.append(time.perf_counter() - t0)
            msgs.append({"role": "assistant", "content": r["choices"][0]["message"]["content"]})
            if turn % 20 == 19:
                gc.collect()
                rss.append(_rss_kb())
        first, last = np.median(latencies[10:60]), np.median(latencies[-50:])
        assert last < 2.0 * first + 0.005, (first, last)
        assert rss[-1] - rss[1] < 30_000, rss  # < 30 MB drift over 160 turns
    finally:
        ens.close()


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- property tests
logit_rows = arrays(
    np.float64, st.integers(2, 40), elements=st.one_of(st.floats(-1e4, 1e4, allow_nan=False), st.just(-np.inf))
)


def _valid(row):
    row = row.copy()
    if not np.isfinite(row).any():
        row[0] = 0.0
    return row


@settings(max_examples=300, deadline=None)
@given(
    logit_rows,
    st.floats(0.01, 100.0),
    st.floats(0.0, 1.0),
    st.integers(0, 50),
    st.floats(0.01, 1.0),
    st.floats(0.0, 1.0),
    st.sampled_from(["we", "cd"]),
    st.floats(0.0, 5.0),
)
def test_r_is_a_probability_vector(row, temp, w, top_k, top_p, min_p, method, mu):
    a = _valid(row)
    b = _valid(np.roll(row, 1))
    spec = EnsembleSpec.build(2, method, [w, 1.0 - w] if w not in (0.0, 1.0) else [0.5, 0.5], mu, 0.1)
    for sampling in (
        SamplingParams(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p),
        SamplingParams(temperature=0),
    ):
        r = spec.target([a, b], sampling)
        assert np.all(np.isfinite(r)) and np.all(r >= 0) and abs(r.sum() - 1) < 1e-9


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 30), st.integers(0, 2**32 - 1), st.floats(0.01, 5.0), st.floats(0.0, 0.9))
def test_accept_or_resample_reproduces_r(v, seed, conc, zero_frac):
    rng = np.random.default_rng(seed)
    r = rng.dirichlet(np.full(v, conc))
    q = rng.dirichlet(np.full(v, conc))
    q[rng.random(v) < zero_frac] = 0.0
    if q.sum() == 0:
        q[0] = 1.0
    q /= q.sum()
    np.testing.assert_allclose(output_distribution(q, r), r, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(logit_rows, st.sampled_from([1e-3, 0.05, 1.0, 20.0, 100.0]))
def test_softmax_extreme_temperatures(row, temp):
    p = D.softmax(_valid(row), temp)
    assert np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-9


def test_closed_stream_is_marked_cancelled(duo):
    it = duo.stream("hello world", max_tokens=40, seed=1, strategy="se", gamma=[3, 1])
    next(it)
    it.close()
    assert duo.last_result is not None and duo.last_result.stats.note == "cancelled"
    assert duo.last_result.finish_reason == "length"  # OpenAI's value; the note says why it stopped
    assert duo.generate("hello", max_tokens=3).stats.note is None
