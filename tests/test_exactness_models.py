"""Exactness on real llama.cpp members (tiny random-weight GGUF models built by the tests).

T = 0: every strategy gives standard's tokens under docs/design.md §4's float-noise rule.
T = 1: the first two tokens have the same distribution under se/sd as under standard
(two-sample chi-square over 2,000 fixed seeds each, alpha = 1e-3, rare cells pooled).
"""

import noise_rule
import numpy as np
import pytest
from scipy.stats import chi2_contingency

from edge_specens import Ensemble

PROMPTS = [
    "hello world",
    "def f",
    "the value",
    "print hello",
    "return self",
    "a b c",
    "world hello world",
    "result",
    "self value return",
    "1 2 3",
]


@pytest.fixture(scope="module")
def trio(tiny_models):
    ens = Ensemble.from_paths(
        [tiny_models["small"], tiny_models["big"], tiny_models["third"]],
        weights=[0.2, 0.5, 0.3],
        n_ctx=512,
        kv_f32=True,
    )
    yield ens
    ens.close()


@pytest.fixture(scope="module")
def cd_duo(tiny_models):
    ens = Ensemble.from_paths([tiny_models["big"], tiny_models["small"]], method="cd", mu=0.1, n_ctx=512, kv_f32=True)
    yield ens
    ens.close()


def _greedy_agreement(ens, configs, parallel: bool | None = None):
    noise_rule.greedy_agreement(ens, PROMPTS, configs, parallel, max_tokens=48)


def test_greedy_duo_we(duo):
    _greedy_agreement(duo, [("se", [1, 1]), ("se", [4, 1]), ("se", [8, 1]), ("se", [2, 3]), ("sd", 1), ("sd", 5)])


def test_greedy_duo_with_prompt_lookup(duo):
    _greedy_agreement(duo, [("se", [1, 1], 8), ("se", [3, 1], 16)])


def test_greedy_duo_cd(cd_duo):
    _greedy_agreement(cd_duo, [("se", [1, 1]), ("se", [1, 5]), ("sd", 4)])


def test_greedy_trio(trio):
    _greedy_agreement(trio, [("se", [1, 1, 1]), ("se", [4, 1, 1]), ("se", [2, 1, 3]), ("sd", 3)])


def _pairs(ens, strategy, gamma, seeds):
    prompt = ens.tokenize("hello world")
    out = []
    for s in seeds:
        toks = ens.generate(prompt, max_tokens=2, temperature=1.0, seed=s, strategy=strategy, gamma=gamma).tokens
        out.append(tuple(toks) + (-1,) * (2 - len(toks)))
    return out


def _homogeneous(a, b, alpha=1e-3):
    keys = sorted(set(a) | set(b))
    ca = np.array([a.count(k) for k in keys], float)
    cb = np.array([b.count(k) for k in keys], float)
    big = (ca + cb) >= 10  # expected >= 5 in each sample: pool the rest into one cell
    table = np.array([np.append(ca[big], ca[~big].sum()), np.append(cb[big], cb[~big].sum())])
    table = table[:, table.sum(0) > 0]
    p = chi2_contingency(table)[1]
    assert table.shape[1] >= 5, "too few cells for a meaningful test"
    assert p > alpha, f"distributions differ: chi-square p = {p:.2e}"


N = 2000


@pytest.fixture(scope="module")
def standard_pairs(duo):
    return _pairs(duo, "standard", None, range(N))


def test_se_distribution_matches_standard(duo, standard_pairs):
    _homogeneous(standard_pairs, _pairs(duo, "se", [3, 1], range(10_000, 10_000 + N)))


def test_sd_distribution_matches_standard(duo, standard_pairs):
    _homogeneous(standard_pairs, _pairs(duo, "sd", 3, range(20_000, 20_000 + N)))


def test_cd_se_distribution_matches_standard(cd_duo):
    _homogeneous(_pairs(cd_duo, "standard", None, range(N)), _pairs(cd_duo, "se", [2, 2], range(30_000, 30_000 + N)))


def test_se_fewer_calls_than_standard_when_acceptance_is_high(tiny_models):
    """Two copies of one model accept every draft: se needs far fewer llama_decode calls per token."""
    ens = Ensemble.from_paths([tiny_models["small"], tiny_models["small"]], n_ctx=512)
    try:
        std = ens.generate("hello world", max_tokens=40, temperature=0, strategy="standard").stats
        se = ens.generate("hello world", max_tokens=40, temperature=0, strategy="se", gamma=[6, 1]).stats
        assert se.acceptance_rate > 0.9
        assert sum(se.member_calls) / se.new_tokens < 0.6 * sum(std.member_calls) / std.new_tokens
    finally:
        ens.close()


def test_same_seed_reproduces_and_stream_matches_generate(duo):
    a = duo.generate("hello", max_tokens=20, seed=42, strategy="se", gamma=[3, 1])
    b = duo.generate("hello", max_tokens=20, seed=42, strategy="se", gamma=[3, 1])
    assert a.tokens == b.tokens
    text = "".join(duo.stream("hello", max_tokens=20, seed=42, strategy="se", gamma=[3, 1]))
    assert text == a.text and duo.last_result.tokens == a.tokens
