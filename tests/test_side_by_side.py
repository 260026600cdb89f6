"""Members side by side (workers.py, decode/pipeline.py): exact, reproducible, and safe.

Fakes: greedy outputs identical to sequential standard, and the exact distribution of three
sampled tokens (goodness of fit against r computed from the fakes' logits, alpha = 1e-3 over
fixed seeds). Tiny llama.cpp models: greedy agreement under the float-noise rule, two-sample
chi-square against sequential standard, seeded runs that reproduce token for token with a CPU
hog running, and the faults: a failing member, Ctrl-C, cancellation, close.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from fakes import FakeMember, fake_ensemble
from fit import chi_square_p
from test_exactness_models import _greedy_agreement, _homogeneous

from edge_specens import Ensemble, EnsembleClosedError, InvalidParameterError
from edge_specens.errors import ContextOverflowError
from edge_specens.params import SamplingParams
from edge_specens.workers import Inline

SIDE_BY_SIDE = [  # (strategy, gamma, lookup): with parallel=True, se and sd run pipeline.py
    ("standard", None, None),
    ("sd", 1, None),
    ("sd", 4, None),
    ("se", [1, 1], None),
    ("se", [3, 1], None),
    ("se", [6, 1], None),
    ("se", [2, 1], 8),
    ("se", [4, 1], 15),
]


def _worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("edge-specens-")]


# ---------------------------------------------------------------------------- fakes: exact
@pytest.mark.parametrize("method", ["we", "cd"])
@pytest.mark.parametrize("strategy,gamma,lookup", SIDE_BY_SIDE)
def test_side_by_side_greedy_is_identical_to_sequential_standard(method, strategy, gamma, lookup):
    ens = fake_ensemble(method=method, context=3)  # n-gram members: text repeats, lookup finds it
    try:
        for p in range(6):
            prompt = [1, 5, 2 + p]
            ref = ens.generate(prompt, max_tokens=48, temperature=0, strategy="standard", parallel=False)
            out = ens.generate(
                prompt, max_tokens=48, temperature=0, strategy=strategy, gamma=gamma, lookup=lookup, parallel=True
            )
            assert out.tokens == ref.tokens
            assert out.stats.parallel and out.stats.member_threads == [1, 1]
    finally:
        ens.close()


def test_three_members_side_by_side():
    ens = fake_ensemble(seeds=(1, 2, 3))
    try:
        for p in range(5):
            prompt = [1, 4, 2 + p]
            ref = ens.generate(prompt, max_tokens=40, temperature=0, strategy="standard").tokens
            for strategy, gamma in (("standard", None), ("se", [3, 1, 1]), ("sd", 2)):
                out = ens.generate(prompt, max_tokens=40, temperature=0, strategy=strategy, gamma=gamma, parallel=True)
                assert out.tokens == ref
    finally:
        ens.close()


def _exact_distribution(ens, prompt, sampling, n):
    """P(x1..xn) under r from the fakes' logits; a sequence ended by end-of-generation is cut there."""
    out: dict[tuple, float] = {}

    def walk(prefix, seq, p):
        if len(seq) == n:
            out[tuple(seq)] = out.get(tuple(seq), 0.0) + p
            return
        r = ens.spec.target([m.logits(prefix).astype(np.float64) for m in ens.members], sampling)
        for x in np.nonzero(r)[0]:
            x = int(x)
            if ens.is_eog(x):
                out[tuple(seq)] = out.get(tuple(seq), 0.0) + p * r[x]
            else:
                walk(prefix + [x], seq + [x], p * r[x])

    walk(list(prompt), [], 1.0)
    return out


@pytest.mark.parametrize(
    "method,strategy,gamma,lookup,kw",
    [
        ("we", "se", [2, 1], None, {}),
        ("we", "se", [1, 1], None, {"temperature": 0.8, "top_k": 4}),
        ("we", "sd", 3, None, {}),
        ("cd", "se", [2, 2], None, {"top_p": 0.9}),
        ("we", "se", [2, 1], 4, {}),
        ("we", "standard", None, None, {"min_p": 0.05}),
    ],
)
def test_side_by_side_three_tokens_follow_r(method, strategy, gamma, lookup, kw):
    """Three tokens, so that drafts made ahead of unverified ones (and their rollback) are covered:
    goodness of fit over 4000 fixed seeds, cells expecting fewer than 5 pooled, alpha = 1e-3."""
    ens = fake_ensemble(seeds=(4, 7), method=method, n_vocab=5, scale=1.5, context=2)
    prompt = [1, 2, 3]
    kw = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, **kw}  # untruncated unless asked
    sampling = SamplingParams(**kw)
    exact = _exact_distribution(ens, prompt, sampling, 3)
    n = 4000
    counts = dict.fromkeys(exact, 0)
    try:
        for seed in range(n):
            toks = ens.generate(
                prompt, max_tokens=3, seed=seed, strategy=strategy, gamma=gamma, lookup=lookup, parallel=True, **kw
            ).tokens
            assert tuple(toks) in counts, f"{toks} has probability 0 under r"
            counts[tuple(toks)] += 1
    finally:
        ens.close()
    p = chi_square_p(exact, counts, n, min_cells=10)
    assert p > 1e-3, f"chi-square p = {p:.2e}"


def test_a_wrong_pipeline_fails_the_distribution_test(monkeypatch):
    """The test above can fail: accepting every draft (no ratio test) is caught by orders of magnitude."""
    from edge_specens.decode import state as state_mod

    monkeypatch.setattr(state_mod, "verify", lambda tok, q, r, rng: (True, tok))
    with pytest.raises(AssertionError, match="chi-square"):
        test_side_by_side_three_tokens_follow_r("we", "se", [2, 1], None, {})


@pytest.mark.parametrize("strategy,gamma,lookup", [("se", [3, 1], None), ("se", [2, 1], 8), ("standard", None, None)])
def test_seeded_side_by_side_equals_the_same_jobs_run_inline(strategy, gamma, lookup):
    """What is drafted never depends on which worker finished first: the same plan run one job
    after the other on the calling thread (workers.Inline) gives the same tokens."""
    ens = fake_ensemble(context=3)
    try:
        kw = dict(max_tokens=60, seed=17, strategy=strategy, gamma=gamma, lookup=lookup, parallel=True)
        a = ens.generate([1, 2, 3], **kw).tokens
        workers, ens.workers = ens.workers, Inline()
        b = ens.generate([1, 2, 3], **kw).tokens
        ens.workers = workers
        assert a == b == ens.generate([1, 2, 3], **kw).tokens
    finally:
        ens.close()


# ---------------------------------------------------------------------------- faults, on fakes
class _FailingMember(FakeMember):
    """Raises a typed error on its n-th evaluation (on its worker thread)."""

    fail_at: int | None = None

    def evaluate_rows(self, tokens, want):
        if self.fail_at is not None and self.stats.calls + 1 == self.fail_at:
            self.fail_at = None
            raise ContextOverflowError(f"{self.name}: simulated overflow")
        return super().evaluate_rows(tokens, want)


def _failing_ensemble():
    from edge_specens.params import EnsembleSpec

    members = [FakeMember(1, n_params=1000), _FailingMember(2, n_params=2000)]
    return Ensemble(members, EnsembleSpec.build(2, "we", None), 16), members[1]


@pytest.mark.parametrize("strategy,gamma", [("standard", None), ("se", [3, 1])])
def test_an_error_in_a_worker_reaches_the_caller_typed_and_the_ensemble_stays_usable(strategy, gamma):
    ens, bad = _failing_ensemble()
    try:
        ref = ens.generate([1, 2, 3], max_tokens=30, temperature=0, strategy="standard").tokens
        bad.fail_at = bad.stats.calls + 4
        with pytest.raises(ContextOverflowError, match="simulated"):
            ens.generate([1, 2, 3], max_tokens=30, temperature=0, strategy=strategy, gamma=gamma, parallel=True)
        again = ens.generate([1, 2, 3], max_tokens=30, temperature=0, strategy=strategy, gamma=gamma, parallel=True)
        assert again.tokens == ref
    finally:
        ens.close()


def test_ctrl_c_in_a_round_waits_for_the_workers_and_leaves_members_consistent():
    """KeyboardInterrupt while members decode side by side: the generation ends "interrupted",
    no worker is left running, and the next generation gives the same tokens as before."""

    class _Interrupting(FakeMember):
        hit = False

        def evaluate_rows(self, tokens, want):
            if self.hit:
                self.hit = False
                raise KeyboardInterrupt
            return super().evaluate_rows(tokens, want)

    from edge_specens.params import EnsembleSpec

    members = [_Interrupting(1, n_params=1000), FakeMember(2, n_params=2000)]
    ens = Ensemble(members, EnsembleSpec.build(2, "we", None), 16)
    try:
        ref = ens.generate([1, 2, 3], max_tokens=30, temperature=0, strategy="se", gamma=[3, 1], parallel=True)
        gen = ens.events([1, 2, 3], max_tokens=30, temperature=0, strategy="se", gamma=[3, 1], parallel=True)
        it = iter(gen)
        next(it)
        members[0].hit = True
        with pytest.raises(KeyboardInterrupt):
            for _ in it:
                pass
        assert gen.result is not None and gen.result.stats.note == "interrupted"
        again = ens.generate([1, 2, 3], max_tokens=30, temperature=0, strategy="se", gamma=[3, 1], parallel=True)
        assert again.tokens == ref.tokens
    finally:
        ens.close()


def test_cancel_stops_a_side_by_side_generation():
    ens = fake_ensemble()
    try:
        cancel = threading.Event()
        gen = ens.events([1, 2, 3], max_tokens=200, temperature=0, strategy="se", gamma=[3, 1], parallel=True)
        gen.cancel = cancel
        n = 0
        for _ in gen:
            n += 1
            if n == 5:
                cancel.set()
        assert gen.result.stats.note == "cancelled" and len(gen.result.tokens) < 20
    finally:
        ens.close()


def test_no_worker_thread_outlives_close():
    before = _worker_threads()
    ens = fake_ensemble(seeds=(1, 2, 3))
    ens.generate([1, 2], max_tokens=20, temperature=0, strategy="standard", parallel=True)
    assert len(_worker_threads()) == len(before) + 3
    ens.close()
    assert _worker_threads() == before
    with pytest.raises(EnsembleClosedError):
        ens.generate([1, 2], max_tokens=5, parallel=True)


def test_parallel_must_be_a_bool():
    ens = fake_ensemble()
    with pytest.raises(InvalidParameterError, match="parallel"):
        ens.generate([1, 2], max_tokens=5, parallel="yes")
    ens.close()


# ---------------------------------------------------------------------------- tiny llama.cpp models
def test_side_by_side_greedy_on_llama_cpp_members(duo):
    _greedy_agreement(duo, SIDE_BY_SIDE, parallel=True)


def _pairs(ens, seeds, **kw):
    prompt = ens.tokenize("hello world")
    out = []
    for s in seeds:
        toks = ens.generate(prompt, max_tokens=2, temperature=1.0, seed=s, **kw).tokens
        out.append(tuple(toks) + (-1,) * (2 - len(toks)))
    return out


N = 2000


@pytest.fixture(scope="module")
def sequential_pairs(duo):
    return _pairs(duo, range(N), strategy="standard", parallel=False)


@pytest.mark.parametrize("strategy,gamma", [("standard", None), ("se", [2, 1]), ("sd", 1)])
def test_side_by_side_distribution_matches_sequential_standard(duo, sequential_pairs, strategy, gamma):
    pairs = _pairs(duo, range(40_000, 40_000 + N), strategy=strategy, gamma=gamma, parallel=True)
    _homogeneous(sequential_pairs, pairs)


def test_seeded_side_by_side_reproduces_under_load(duo):
    """Three seeded runs, the last with a CPU hog on every core: the same tokens token for token."""
    kw = dict(max_tokens=40, temperature=1.0, seed=123, strategy="se", gamma=[3, 1], lookup=8, parallel=True)
    runs = [duo.generate("hello world", **kw).tokens for _ in range(2)]
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL)
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        runs.append(duo.generate("hello world", **kw).tokens)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert runs[0] == runs[1] == runs[2]
    # and auto, seeded and sampled, forced side by side
    kw = dict(max_tokens=40, temperature=1.0, seed=7, strategy="auto", parallel=True)
    assert duo.generate("hello world", **kw).tokens == duo.generate("hello world", **kw).tokens


def test_a_member_refuses_a_second_thread(duo):
    member = duo.members[0]
    with member._busy:  # as if another thread were inside
        with pytest.raises(RuntimeError, match="two threads"):
            member.evaluate([1], [0])


# ---------------------------------------------------------------------------- placement
def test_per_member_placement(tiny_models, caplog):
    paths = [tiny_models["small"], tiny_models["big"]]
    with pytest.raises(InvalidParameterError, match="n_threads has 3 values for 2 members"):
        Ensemble.from_paths(paths, n_threads=[1, 1, 1])
    with pytest.raises(InvalidParameterError, match="n_threads must be a positive integer"):
        Ensemble.from_paths(paths, n_threads=[1, 0])
    with pytest.raises(InvalidParameterError, match="n_gpu_layers"):
        Ensemble.from_paths(paths, n_gpu_layers=[0, -2])
    with caplog.at_level(logging.WARNING, logger="edge_specens"):
        ens = Ensemble.from_paths(paths, n_threads=[1, 64 * (os.cpu_count() or 1)], n_ctx=256)
    assert "more than the" in caplog.text
    ens.close()
    ens = Ensemble.from_paths(paths, n_threads=[1, 1], n_threads_batch=[1, 2], n_gpu_layers=[0, 0], n_ctx=256)
    try:
        assert ens.side_by_side_threads() == (1, 1)
        res = ens.generate("hello", max_tokens=8, temperature=0, strategy="standard", parallel=True)
        assert res.stats.parallel and res.stats.member_threads == [1, 1]
        assert res.stats.member_devices == ["cpu", "cpu"]
        seq = ens.generate("hello", max_tokens=8, temperature=0, strategy="standard", parallel=False)
        assert not seq.stats.parallel and seq.stats.member_threads == [1, 1]
    finally:
        ens.close()


def test_auto_weighs_side_by_side_schedules_from_measured_curves():
    """Where members side by side cost little more than alone, auto runs them so; where they slow
    each other down (this 2-core machine: the 1.5B ran 1.5x slower beside the 0.5B), it does not."""
    from test_scheduler import _sched, linear

    ens = fake_ensemble()
    try:
        # a CPU: a b-token batch costs b single decodes, so speculating one after the other cannot pay
        s = _sched(ens, [linear(0.02), linear(0.04)], 0.85)  # sequential, every core: 60 ms per token
        s.split_curves[(1, 1)] = [linear(0.025), linear(0.045)]  # side by side: 45 ms per token
        c = s.choose(True)
        assert c.threads == (1, 1) and c.speedup > 1.2
        s.split_curves[(1, 1)] = [linear(0.05), linear(0.12)]  # the slowest member costs more than both
        s._memo.clear()
        assert s.choose(True).threads is None
        assert s.choose(True, parallel=True).threads == (1, 1)  # forced: the best side-by-side one
        assert s.choose(True, parallel=False).threads is None
    finally:
        ens.close()
