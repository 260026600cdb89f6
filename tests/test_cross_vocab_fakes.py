"""Members with different vocabularies on fake members (no llama.cpp, no float noise): every strategy
samples from r defined on the primary's vocabulary, and r is the reference built from scratch per prefix
(tests/cross_fakes.py): greedy outputs are identical token for token and each is argmax of the
reference; sampled pairs follow the reference exactly (chi-square goodness of fit over 3,000 seeds,
alpha = 1e-3, cells expecting fewer than 5 pooled), with lookup, penalties, CD with a mapped amateur,
abstention inside a split character and past the follower's context. A deliberately wrong map is caught.
"""

from __future__ import annotations

import cross_fakes
import numpy as np
import pytest
from cross_fakes import ZHONG, cross_ensemble, exact_two_tokens, primary_table, reference_r, reference_rows
from fit import chi_square_p

from edge_specens.errors import InvalidParameterError
from edge_specens.params import SamplingParams
from edge_specens.vocabulary import Pushforward, TokenTable
from edge_specens.vocabulary.pieces import BYTE

PROMPTS = ["a ab", " ab a", "中 a", "aba ab", "é a", "b"]
GREEDY = [("se", [1, 1]), ("se", [3, 1]), ("se", [1, 4]), ("sd", 3), ("sd", 1)]


GREEDY_R = SamplingParams(temperature=0)


def _greedy_matches_reference(ens, text, tokens, sampling=GREEDY_R) -> None:
    for i, tok in enumerate(tokens):
        r = reference_r(ens, text, list(tokens[:i]), sampling)
        assert tok == int(np.argmax(r)), f"position {i}: {tok} is not argmax r ({int(np.argmax(r))})"


@pytest.mark.parametrize("method", ["we", "cd"])
def test_greedy_identical_for_every_strategy_and_argmax_of_the_reference(method):
    ens = cross_ensemble(method=method, weights=[0.6, 0.4] if method == "we" else None)
    for text in PROMPTS:
        ref = ens.generate(text, max_tokens=40, temperature=0, strategy="standard")
        _greedy_matches_reference(ens, text, ref.tokens)
        for strategy, gamma in GREEDY:
            out = ens.generate(text, max_tokens=40, temperature=0, strategy=strategy, gamma=gamma)
            assert out.tokens == ref.tokens, (text, strategy, gamma)
        assert ens.generate(text, max_tokens=40, temperature=0, strategy="se", lookup=4).tokens == ref.tokens
    assert ens.members[1].abstained > 0  # the follower sat positions out (split characters, <|im_start|>)


def test_greedy_side_by_side_and_with_penalties():
    ens = cross_ensemble()
    kw = dict(max_tokens=40, temperature=0, repeat_penalty=1.3, presence_penalty=0.3, logit_bias={3: 1.0})
    for text in PROMPTS[:3]:
        ref = ens.generate(text, strategy="standard", **kw)
        _greedy_matches_reference(ens, text, ref.tokens, SamplingParams(**{**kw, "max_tokens": 1}))
        for strategy, gamma in (("se", [2, 1]), ("sd", 3)):
            assert ens.generate(text, strategy=strategy, gamma=gamma, parallel=True, **kw).tokens == ref.tokens


def _counts(ens, text, exact, n, **kw):
    """(x1, x2) of n seeded generations; an end of generation (not returned) counts as the primary's eot."""
    eot = primary_table().eot
    counts = dict.fromkeys(exact, 0)
    for seed in range(n):
        toks = ens.generate(text, max_tokens=2, seed=seed, **kw).tokens
        key = (eot, -1) if not toks else (toks[0], eot) if len(toks) == 1 else (toks[0], toks[1])
        assert key in counts, f"{key} has probability 0 under the reference r"
        counts[key] += 1
    return counts


SAMPLED = [
    ("we", [0.5, 0.5], dict(strategy="se", gamma=[1, 3])),  # the follower proposes
    ("we", [0.7, 0.3], dict(strategy="sd", gamma=3, top_k=6)),
    ("we", [0.5, 0.5], dict(strategy="se", gamma=[1, 1], lookup=4, repeat_penalty=1.4, logit_bias={11: 1.5})),
    ("cd", None, dict(strategy="se", gamma=[1, 2], top_p=0.9)),  # a mapped amateur
    ("we", [0.5, 0.5], dict(strategy="standard", min_p=0.05, temperature=0.7)),
]


@pytest.mark.parametrize("method,weights,kw", SAMPLED)
def test_sampled_pairs_follow_the_reference_r(method, weights, kw):
    ens = cross_ensemble(method=method, weights=weights)
    text = "中 ab"  # 中's first bytes are a primary token: the follower holds them back and abstains
    sampling_kw = {k: v for k, v in kw.items() if k not in ("strategy", "gamma", "lookup")}
    sampling = SamplingParams(**{"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, **sampling_kw})
    exact = exact_two_tokens(ens, text, sampling)
    n = 3000
    counts = _counts(ens, text, exact, n, **{"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, **kw})
    p = chi_square_p(exact, counts, n, min_cells=5)
    assert p > 1e-3, f"chi-square p = {p:.2e}"


def test_a_wrong_map_is_caught():
    """The same checks with a follower whose map is off by one token: the reference disagrees."""
    good = cross_ensemble()
    fw = good.members[1].bridge.pushforward
    wrong = Pushforward(np.roll(fw.index, 1), fw.how, fw.n_primary, False)
    bad = cross_ensemble(pushforward=wrong)
    diverged = 0
    for text in PROMPTS:
        tokens = bad.generate(text, max_tokens=30, temperature=0, strategy="se", gamma=[1, 3]).tokens
        for i, tok in enumerate(tokens):
            if tok != int(np.argmax(reference_r(bad, text, list(tokens[:i]), SamplingParams(temperature=0)))):
                diverged += 1
                break
    assert diverged >= 3


def test_the_follower_abstains_inside_a_split_character_and_past_its_context():
    ens = cross_ensemble(follower_ctx=9)
    a = primary_table()
    partial, last = a.by_bytes[ZHONG[:2]], a.by_bytes[ZHONG[2:]]
    f = ens.members[1]
    prompt = ens.tokenize("ab a")
    f.prefill(prompt)
    seq = [prompt[-1], partial, last, a.by_bytes[b" a"], a.controls_by_text[b"<|im_start|>"], a.by_bytes[b"ab"]]
    seq += [a.by_bytes[b" ab"]] * 6
    rows = f.evaluate_rows(seq, range(len(seq)))
    votes = [r is not None for r in rows]
    # after the prompt yes; inside 中 no; after 中 and " a" yes; after <|im_start|> (nothing reached it) no;
    # then yes until its own context (9 tokens) is full, and no from there on
    assert votes[:6] == [True, False, True, True, False, True]
    assert votes[6:] == [True, True, False, False, False, False]
    assert len(f.inner.tokens) <= 9
    for i in range(len(seq)):  # every row is the reference's, built from scratch
        ref = reference_rows(ens, "ab a", seq[1 : i + 1])[1]
        assert (ref is None) == (rows[i] is None) and (ref is None or np.allclose(ref, rows[i], atol=1e-5))
    # a rollback to a primary position restores the follower exactly there
    f.truncate(len(prompt) + 1)
    assert len(f.inner.tokens) == len(f.inner.tokenize("ab a")) + 0 and f.tokens == prompt + [partial]
    again = f.evaluate_rows([a.by_bytes[b"b"]], [0])[0]
    ref = reference_rows(ens, "ab a", [partial, a.by_bytes[b"b"]])[1]
    assert ref is not None and np.allclose(ref, again, atol=1e-5)


def test_single_on_a_follower_and_a_primary_without_weight_are_refused():
    ens = cross_ensemble()
    with pytest.raises(InvalidParameterError, match="follows the primary's vocabulary"):
        ens.generate("a", max_tokens=2, strategy="single:1")
    assert ens.single_member() == 0
    assert len(ens.generate("a", max_tokens=3, strategy="single", temperature=0).tokens) == 3


def test_log_project_is_the_log_of_project():
    a, b = primary_table(), cross_fakes.follower_table()
    fw = Pushforward.build(b, a)
    rng = np.random.default_rng(3)
    for _ in range(20):
        logits = (rng.normal(size=len(b)) * 4).astype(np.float32)
        q = fw.project(logits)
        z = fw.log_project(logits)
        assert q is not None and z is not None and z.dtype == np.float32
        with np.errstate(divide="ignore"):
            assert np.allclose(np.log(q), z, rtol=0, atol=1e-5)
    # a follower that writes only bytes the primary cannot start: nothing to vote with
    ascii_only = TokenTable.build([cross_fakes._bpe(bytes([c])) for c in range(0x80)], model="gpt2", name="p")
    high_only = TokenTable.build([f"<0x{c:02X}>" for c in range(0x80, 0x100)], [BYTE] * 128, model="llama", eog=[])
    nowhere = Pushforward.build(high_only, ascii_only)
    assert nowhere.project(np.zeros(128, np.float32)) is None and nowhere.log_project(np.zeros(128)) is None
