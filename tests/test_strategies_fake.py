"""Strategies on fake members: exact agreement at T=0 and the exact distribution at T>0.

No llama.cpp and no float noise here, so greedy outputs must be identical, and the
distribution of sampled sequences can be compared with r computed analytically.
"""

import numpy as np
import pytest
from fakes import FakeMember, fake_ensemble
from fit import chi_square_p

from edge_specens import Ensemble
from edge_specens.params import EnsembleSpec, SamplingParams

GREEDY_CASES = [
    ("sd", 3),
    ("sd", 1),
    ("se", [1, 1]),
    ("se", [4, 1]),
    ("se", [1, 5]),
    ("se", [8, 2]),
]


@pytest.mark.parametrize("method", ["we", "cd"])
@pytest.mark.parametrize("strategy,gamma", GREEDY_CASES)
def test_greedy_identical_to_standard(method, strategy, gamma):
    ens = fake_ensemble(method=method, weights=[0.3, 0.7] if method == "we" else None)
    for p in range(10):
        prompt = [1, 2 + p % 13, 3 + (2 * p) % 12]
        ref = ens.generate(prompt, max_tokens=48, temperature=0, strategy="standard")
        out = ens.generate(prompt, max_tokens=48, temperature=0, strategy=strategy, gamma=gamma)
        assert out.tokens == ref.tokens
        assert out.finish_reason == ref.finish_reason


@pytest.mark.parametrize("gamma", [[1, 1, 1], [3, 1, 1], [1, 2, 4], [5, 1, 2]])
def test_greedy_three_members(gamma):
    ens = fake_ensemble(seeds=(1, 2, 3), weights=[0.2, 0.5, 0.3])
    for p in range(10):
        prompt = [1, 5, 2 + p]
        ref = ens.generate(prompt, max_tokens=48, temperature=0, strategy="standard")
        assert ens.generate(prompt, max_tokens=48, temperature=0, strategy="se", gamma=gamma).tokens == ref.tokens
        assert ens.generate(prompt, max_tokens=48, temperature=0, strategy="sd", gamma=3).tokens == ref.tokens


def _as_kw(sampling: SamplingParams) -> dict:
    """The sampling settings the exact distribution was computed for, as generate's keywords."""
    skip = ("max_tokens", "seed", "stop")
    return {k: getattr(sampling, k) for k in SamplingParams.__dataclass_fields__ if k not in skip}


def _exact_two_token_distribution(ens, prompt, sampling):
    """P(x1, x2) under r, from the fakes' logits directly."""
    out = {}
    r1 = ens.spec.target([m.logits(prompt).astype(np.float64) for m in ens.members], sampling, prompt)
    for x1 in np.nonzero(r1)[0]:
        if ens.is_eog(int(x1)):
            out[(int(x1), -1)] = r1[x1]
            continue
        ctx = prompt + [int(x1)]
        r2 = ens.spec.target([m.logits(ctx).astype(np.float64) for m in ens.members], sampling, ctx)
        for x2 in np.nonzero(r2)[0]:
            out[(int(x1), int(x2))] = r1[x1] * r2[x2]
    return out


@pytest.mark.parametrize(
    "method,strategy,gamma,seeds,kw",
    [
        ("we", "se", [3, 1], (1, 2), {}),
        ("we", "se", [2, 1, 3], (1, 2, 3), {}),
        ("we", "sd", 3, (1, 2), {"temperature": 0.8, "top_k": 6}),
        ("cd", "se", [2, 2], (4, 5), {"top_p": 0.9}),
        ("we", "standard", None, (1, 2), {"min_p": 0.05}),
        # repetition penalties and logit bias act on r: speculation stays exact
        ("we", "se", [3, 1], (1, 2), {"repeat_penalty": 1.5, "frequency_penalty": 0.4, "logit_bias": {2: 1.5}}),
        ("cd", "sd", 2, (4, 5), {"presence_penalty": 0.7, "top_k": 5}),
    ],
)
def test_sampled_pairs_follow_r(method, strategy, gamma, seeds, kw):
    """Goodness of fit of (x1, x2) over 3000 seeds against exact r; cells with expectation < 5 pooled.

    Significance level 1e-3 with fixed seeds: deterministic, and a wrong rule (e.g. accepting
    without the ratio) fails it by orders of magnitude.
    """
    ens = fake_ensemble(seeds=seeds, method=method, n_vocab=8, scale=1.5)
    prompt = [1, 2, 3]
    sampling = SamplingParams(**{"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, **kw})
    exact = _exact_two_token_distribution(ens, prompt, sampling)
    n = 3000
    counts = dict.fromkeys(exact, 0)
    for seed in range(n):
        toks = ens.generate(prompt, max_tokens=2, seed=seed, strategy=strategy, gamma=gamma, **_as_kw(sampling)).tokens
        if len(toks) == 2:
            key = (toks[0], toks[1])
        elif toks:  # the second token was end-of-generation, which is not returned
            key = (toks[0], 0)
        else:
            key = (0, -1)
        assert key in counts, f"{key} has probability 0 under r"
        counts[key] += 1
    p = chi_square_p(exact, counts, n)
    assert p > 1e-3, f"chi-square p = {p:.2e}"


def test_se_makes_fewer_calls_when_members_agree():
    ens = fake_ensemble(seeds=(7, 7))  # identical members: every draft is accepted
    std = ens.generate([1, 2], max_tokens=40, temperature=0, strategy="standard").stats
    se = ens.generate([1, 2], max_tokens=40, temperature=0, strategy="se", gamma=[5, 1]).stats
    assert se.acceptance_rate == 1.0
    assert sum(se.member_calls) / se.new_tokens < 0.6 * sum(std.member_calls) / std.new_tokens


def test_break_in_stream_leaves_ensemble_consistent():
    ens = fake_ensemble()
    ref = ens.generate([1, 2, 3], max_tokens=30, seed=11, strategy="se", gamma=[4, 1])
    for i, _ in enumerate(ens.stream([1, 2, 3], max_tokens=30, seed=3, strategy="se", gamma=[4, 1])):
        if i == 5:
            break
    again = ens.generate([1, 2, 3], max_tokens=30, seed=11, strategy="se", gamma=[4, 1])
    assert again.tokens == ref.tokens


def test_lookup_continuation():
    from edge_specens.decode.lookup import lookup_continuation

    assert lookup_continuation([1, 2, 3, 9, 8, 7, 5, 1, 2, 3], 3) == [9, 8, 7]
    assert lookup_continuation([1, 2, 3, 9, 1, 2, 3, 4, 1, 2, 3], 5) == [4, 1, 2, 3]  # the latest occurrence
    assert lookup_continuation([5, 6, 7, 8], 4) == []


REPEAT = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3]


@pytest.mark.parametrize("gamma", [[1, 1], [3, 1], [1, 4]])
def test_greedy_with_prompt_lookup_identical_to_standard(gamma):
    ens = fake_ensemble(seeds=(7, 7), eos_bias=-100.0)  # agreeing members: lookups get far
    ens2 = fake_ensemble(seeds=(1, 2))
    for e in (ens, ens2):
        for p in range(6):
            prompt = REPEAT + [1 + p]
            ref = e.generate(prompt, max_tokens=40, temperature=0, strategy="standard")
            out = e.generate(prompt, max_tokens=40, temperature=0, strategy="se", gamma=gamma, lookup=8)
            assert out.tokens == ref.tokens


class _CycleMember(FakeMember):
    """Greedily walks tokens 4..63 STEP at a time (0, EOS, never wins): with STEP 5 its answer
    repeats every 12 tokens, so prompt lookup finds long, right continuations."""

    STEP = 5

    def logits(self, prefix):
        out = super().logits(prefix)
        out[(prefix[-1] - 4 + self.STEP) % 60 + 4] += 50.0
        return out


def test_prompt_lookup_drafts_are_used_and_save_calls():
    """Members that walk a cycle the prompt already holds: lookups are accepted in long runs."""
    members = [_CycleMember(s, n_vocab=64, n_params=1000 * (s + 1)) for s in (1, 2)]
    ens = Ensemble(members, EnsembleSpec.build(2, "we"), 64)
    prompt = [i % 60 + 4 for i in range(70)]
    plain = ens.generate(prompt, max_tokens=120, temperature=0, strategy="se", gamma=[1, 1])
    out = ens.generate(prompt, max_tokens=120, temperature=0, strategy="se", gamma=[1, 1], lookup=16)
    assert out.tokens == plain.tokens
    assert out.stats.lookup_stats.accepted >= 90
    assert sum(out.stats.member_calls) * 2 < sum(plain.stats.member_calls)


class _WalkMember(_CycleMember):
    """Greedily counts up through tokens 4..63 (a 60-token cycle)."""

    STEP = 1


def test_the_cheapest_member_screens_lookup_drafts():
    """The prompt counts twice with some tokens replaced by 2, which no member ever picks, so
    lookups copied from it go wrong there. The cheaper member scores new lookup drafts first and
    cuts them after the first one it would not pick: the dearer member never scores a token
    after a 2 in the same batch, and the output is still exactly standard's."""
    members = [_WalkMember(s, n_vocab=64, n_params=1000 * (s + 1)) for s in (1, 2)]
    ens = Ensemble(members, EnsembleSpec.build(2, "we"), 64)
    dear_batches = []
    real = members[1].evaluate_rows

    def spy(tokens, want):
        dear_batches.append(list(tokens))
        return real(tokens, want)

    members[1].evaluate_rows = spy
    prompt = [2 if i % 30 in (14, 16, 29) else i % 60 + 4 for i in range(118)]
    ref = ens.generate(prompt, max_tokens=40, temperature=0, strategy="standard")
    dear_batches.clear()
    out = ens.generate(prompt, max_tokens=40, temperature=0, strategy="se", gamma=[1, 1], lookup=15)
    assert out.tokens == ref.tokens
    assert 2 not in out.tokens
    wrong = [b for b in dear_batches if 2 in b]
    assert len(wrong) >= 3  # wrong lookups reached the dearer member to be rejected...
    assert all(b.index(2) == len(b) - 1 for b in wrong), wrong  # ...but nothing drafted after them


def test_prompt_lookup_scores_at_most_one_decode_of_rows():
    """Members used to leapfrog each other's lookups: a member that had not scored them could
    verify one, then drafted a new lookup on top, so batches of 30-60 rows were scored (65 MB of
    rows alive at a 152k vocabulary). Pending lookups now stop at LOOKUP_PENDING_MAX: every score
    fits one llama_decode of MAX_OUTPUTS rows, and each row is its own array, freed once used."""
    from edge_specens.decode.state import LOOKUP_PENDING_MAX
    from edge_specens.member import MAX_OUTPUTS

    members = [_CycleMember(s, n_vocab=64, n_params=1000 * (s + 1)) for s in (1, 2)]
    ens = Ensemble(members, EnsembleSpec.build(2, "we"), 64)
    sizes = []
    for m in ens.members:
        real = m.evaluate_rows

        def spy(tokens, want, _real=real):
            rows = _real(tokens, want)
            sizes.append(len(rows))
            assert all(r.base is None for r in rows)
            return rows

        m.evaluate_rows = spy
    prompt = [i % 60 + 4 for i in range(70)]  # the cycle once and a bit: lookup has 60 tokens to copy
    plain = ens.generate(prompt, max_tokens=150, temperature=0, strategy="se", gamma=[1, 1])
    sizes.clear()
    out = ens.generate(prompt, max_tokens=150, temperature=0, strategy="se", gamma=[1, 1], lookup=64)
    assert out.tokens == plain.tokens
    assert out.stats.drafts_accepted > 100  # long lookup runs happened...
    assert max(sizes) == LOOKUP_PENDING_MAX + 1 <= MAX_OUTPUTS  # ...and no score exceeded one decode


@pytest.mark.parametrize("method", ["we", "cd"])
def test_sampled_pairs_with_prompt_lookup_follow_r(method):
    """Lookup drafts are one-hot proposals: accept with r(x), else r without x. Goodness of fit as above."""
    ens = fake_ensemble(seeds=(4, 5), method=method, n_vocab=8, scale=1.5)
    prompt = [1, 2, 3, 1, 2, 3, 1, 2]
    sampling = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    exact = _exact_two_token_distribution(ens, prompt, sampling)
    n = 3000
    counts = dict.fromkeys(exact, 0)
    lookups = 0
    for seed in range(n):
        res = ens.generate(prompt, max_tokens=2, seed=seed, strategy="se", gamma=[1, 1], lookup=4, **_as_kw(sampling))
        toks = res.tokens
        key = (toks[0], toks[1]) if len(toks) == 2 else ((toks[0], 0) if toks else (0, -1))
        counts[key] += 1
        lookups += res.stats.drafts_verified
    assert lookups > n  # lookup drafts really were verified
    assert chi_square_p(exact, counts, n) > 1e-3
