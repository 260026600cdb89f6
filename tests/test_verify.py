"""The verification rule is exact: accept-or-resample reproduces r for any proposal q."""

import numpy as np
import pytest

from edge_specens import distributions as D
from edge_specens.verify import accept_probability, output_distribution, residual, sample, verify, verify_greedy


def _random_pair(rng, v):
    r = rng.dirichlet(np.full(v, rng.choice([0.05, 0.5, 2.0])))
    q = rng.dirichlet(np.full(v, rng.choice([0.05, 0.5, 2.0])))
    if rng.random() < 0.5:  # q with zeros where r is positive
        q[rng.random(v) < 0.4] = 0.0
        if q.sum() == 0:
            q[rng.integers(v)] = 1.0
        q /= q.sum()
    if rng.random() < 0.3:  # r with zeros too (truncation filters)
        r[rng.random(v) < 0.3] = 0.0
        if r.sum() == 0:
            r[rng.integers(v)] = 1.0
        r /= r.sum()
    return q, r


def test_output_distribution_equals_r_analytically():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        v = int(rng.integers(2, 60))
        q, r = _random_pair(rng, v)
        np.testing.assert_allclose(output_distribution(q, r), r, rtol=0, atol=1e-12)


def test_one_hot_proposal_is_exact():
    """Prompt lookup's q is one-hot: accept with r(x), else r without x renormalised."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        v = int(rng.integers(2, 30))
        r = rng.dirichlet(np.ones(v))
        q = np.zeros(v)
        x = int(rng.integers(v))
        q[x] = 1.0
        assert accept_probability(x, q, r) == pytest.approx(r[x])
        res = residual(r, q)
        expected = r.copy()
        expected[x] = 0
        np.testing.assert_allclose(res, expected / expected.sum(), atol=1e-12)
        np.testing.assert_allclose(output_distribution(q, r), r, atol=1e-12)


def test_sampled_verify_matches_r_empirically():
    """The implementation (not just the formula) draws from r: chi-square at alpha = 1e-4."""
    from scipy.stats import chisquare

    rng = np.random.default_rng(7)
    q = np.array([0.5, 0.3, 0.2, 0.0, 0.0])
    r = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    n = 40_000
    counts = np.zeros(5)
    for _ in range(n):
        x = sample(q, rng)
        _, tok = verify(x, q, r, rng)
        counts[tok] += 1
    assert chisquare(counts, r * n).pvalue > 1e-4


def test_greedy_verify():
    r = np.array([0.1, 0.6, 0.3])
    assert verify_greedy(1, r) == (True, 1)
    assert verify_greedy(2, r) == (False, 1)


def test_same_seed_same_draws():
    p = np.array([0.2, 0.3, 0.5])
    a = [sample(p, np.random.default_rng(5)) for _ in range(3)]
    b = [sample(p, np.random.default_rng(5)) for _ in range(3)]
    assert a == b


def test_weighted_ensemble_and_contrastive():
    rng = np.random.default_rng(2)
    l1, l2 = rng.normal(size=50), rng.normal(size=50)
    r = D.weighted_ensemble([l1, l2], [0.25, 0.75], 0.7)
    np.testing.assert_allclose(r, 0.25 * D.softmax(l1, 0.7) + 0.75 * D.softmax(l2, 0.7), atol=1e-14)
    c = D.contrastive(l1, l2, 0.1, 0.0, 1.3)
    np.testing.assert_allclose(c, D.softmax((l1 - 0.1 * l2) / 1.3), atol=1e-14)
    masked = D.contrastive(l1, l2, 0.1, 0.5)
    pe = D.softmax(l1)
    assert np.all(masked[pe < 0.5 * pe.max()] == 0) and masked.sum() == pytest.approx(1)


def test_weighted_ensemble_skips_zero_weight_rows():
    row = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(D.weighted_ensemble([None, row], [0.0, 1.0]), D.softmax(row))


def test_softmax_handles_minus_inf():
    p = D.softmax(np.array([0.0, -np.inf, 1.0]))
    assert p[1] == 0 and p.sum() == pytest.approx(1)


@pytest.mark.parametrize(
    "top_k,top_p,min_p,keep",
    [
        (2, 1.0, 0.0, [0, 1]),
        (0, 0.5, 0.0, [0]),
        (0, 0.75, 0.0, [0, 1]),
        (0, 1.0, 0.5, [0, 1]),
        (1, 0.9, 0.9, [0]),
    ],
)
def test_filters(top_k, top_p, min_p, keep):
    p = np.array([0.5, 0.3, 0.15, 0.05])
    out = D.apply_filters(p, top_k, top_p, min_p)
    assert set(np.nonzero(out)[0]) == set(keep)
    assert out.sum() == pytest.approx(1)
    np.testing.assert_allclose(out[keep], p[keep] / p[keep].sum())


def _nucleus_by_full_sort(p, top_p):
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(p[order], dtype=np.float64)
    n_keep = int(np.searchsorted(cum, top_p * float(p.sum(dtype=np.float64)), side="left")) + 1
    keep = np.zeros(p.shape, dtype=bool)
    keep[order[:n_keep]] = True
    return keep


@pytest.mark.parametrize("vocab", [50, 3000, 40_000])
def test_top_p_sorting_only_the_likeliest_tokens_keeps_the_full_sorts_nucleus(vocab):
    """apply_filters sorts only an upper set of p for top-p (a full sort of 152k ids cost a third of a
    token): on peaked, flat and tied rows, with and without top-k and min-p, it must keep exactly the
    tokens a full stable sort keeps (ties broken by id)."""
    rng = np.random.default_rng(vocab)
    for trial in range(200):
        p = rng.dirichlet(np.full(vocab, rng.choice([0.002, 0.05, 1.0, 30.0]))).astype(np.float32)
        if trial % 3 == 0:  # many exact ties, the cut inside a tie
            p = np.round(p * 40) + (np.arange(vocab) == trial % vocab)
            p = (p / p.sum()).astype(np.float32)
        top_k, top_p = int(rng.choice([0, 1, 40, 2000])), float(rng.choice([0.5, 0.9, 0.95, 0.999]))
        min_p = float(rng.choice([0.0, 0.05]))
        keep = _nucleus_by_full_sort(p, top_p)
        if 0 < top_k < vocab:
            keep &= p >= np.partition(p, -top_k)[-top_k]
        if min_p:
            keep &= p >= min_p * p.max()
        keep[np.argmax(p)] = True
        out = D.apply_filters(p, top_k, top_p, min_p)
        np.testing.assert_array_equal(out > 0, keep & (p > 0), err_msg=f"trial {trial}")


def test_blocked_sampler_on_a_large_vocabulary():
    """sample() takes a two-level path above 4096 ids: it must still draw exactly from p, never a zero."""
    from scipy.stats import chisquare

    rng = np.random.default_rng(3)
    v = 20_000
    p = np.zeros(v, dtype=np.float32)
    support = rng.choice(v, 40, replace=False)
    support[:3] = [0, 1023, 1024]  # block edges
    p[support] = rng.dirichlet(np.ones(40))
    n = 40_000
    counts = np.zeros(v)
    for _ in range(n):
        counts[sample(p, rng)] += 1
    assert counts[p == 0].sum() == 0
    expected = p[support].astype(np.float64) / p.sum(dtype=np.float64) * n
    assert chisquare(counts[support], expected * counts[support].sum() / expected.sum()).pvalue > 1e-4
