"""The target distribution r and its truncation filters: pure NumPy, no llama.cpp.

Every strategy samples from the same r, built here from the members' logits at
one position (docs/design.md §2). Keeping this in one place is what makes `se`, `sd` and
`standard` comparable token for token.

Shapes: a logits row is (V,) float32/float64, V = the members' common vocab size.
Every function returns a probability vector of shape (V,) that sums to 1, in the
precision of its input: float32 rows straight from llama.cpp are combined in float32
(4x faster than float64 over a 152k vocabulary; this is the controller's main cost),
float64 inputs, as in the exactness tests, stay float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _work_dtype(x) -> type[np.floating]:
    return np.float64 if np.asarray(x).dtype == np.float64 else np.float32


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(l / T); -inf logits get probability 0. Always a fresh array."""
    z = np.array(logits, dtype=_work_dtype(logits))
    if temperature != 1.0:
        z /= temperature
    z -= z.max()
    np.exp(z, out=z)
    z *= 1.0 / z.sum(dtype=np.float64)
    return z


def weighted_ensemble(
    rows: Sequence[np.ndarray | None], weights: Sequence[float], temperature: float = 1.0
) -> np.ndarray:
    """WE: r = sum_k w_k * softmax(l_k / T). Members with weight 0 are skipped."""
    r = None
    for row, w in zip(rows, weights):
        if w == 0.0 or row is None:  # a member r does not need holds no row
            continue
        p = softmax(row, temperature)
        if r is None:
            r = p * w if w != 1.0 else p
        else:
            r += w * p
    if r is None:
        raise ValueError("every weight is zero")
    r *= 1.0 / r.sum(dtype=np.float64)  # guards against weights that sum to 1 only up to rounding
    return r


def contrastive(
    expert: np.ndarray, amateur: np.ndarray | None, mu: float, alpha: float = 0.0, temperature: float = 1.0
) -> np.ndarray:
    """CD: r = softmax((l_e - mu * l_a) / T), with Li et al.'s plausibility mask.

    The mask drops tokens the expert itself finds implausible (p_e(x) < alpha * max p_e),
    computed on the expert's untempered distribution; alpha = 0 disables it. amateur None (it
    abstains at this position, docs/design.md §2): no mu term, r = softmax(l_e / T) with the mask.
    """
    if amateur is None:
        le = np.array(expert, dtype=_work_dtype(expert))
        z = le
    else:
        dt = np.promote_types(_work_dtype(expert), _work_dtype(amateur))
        le = np.asarray(expert, dtype=dt)
        la = np.asarray(amateur, dtype=dt)
        finite = np.isfinite(la)
        if not finite.all():  # -inf in the amateur would give +inf/NaN: floor it at its lowest finite logit
            la = np.where(finite, la, la[finite].min() if finite.any() else 0.0)
        z = le - mu * la
    if alpha > 0.0:
        # p_e(x) < alpha * max p_e  <=>  l_e(x) < max l_e + log(alpha)
        z[le < le.max() + np.log(alpha)] = -np.inf
    return softmax(z, temperature)


def apply_filters(p: np.ndarray, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> np.ndarray:
    """Truncate r with top-k, then top-p (nucleus), then min-p; renormalise.

    Applied to r after combining, so all strategies share the same truncated target.
    The most likely token always survives, so the result is never all-zero.
    """
    if top_k <= 0 and top_p >= 1.0 and min_p <= 0.0:
        return p
    keep = np.ones(p.shape, dtype=bool)
    top = None  # the top-k survivors: an upper set of p, all the nucleus needs to sort
    if 0 < top_k < p.size:
        top = p >= np.partition(p, -top_k)[-top_k]
        keep &= top
    if top_p < 1.0:
        keep &= _nucleus(p, top_p, within=top)
    if min_p > 0.0:
        keep &= p >= min_p * p.max()
    keep[np.argmax(p)] = True
    out = np.where(keep, p, 0.0).astype(p.dtype, copy=False)
    out *= 1.0 / out.sum(dtype=np.float64)
    return out


_NUCLEUS_CANDIDATES = (1024, 16384)  # upper sets tried before sorting every token


def _nucleus(p: np.ndarray, top_p: float, within: np.ndarray | None = None) -> np.ndarray:
    """The top-p nucleus (most likely first, ties by token id) intersected with `within`, an upper set
    of p (every token at least as likely as its least likely member, as top-k leaves).

    Sorting all 152k entries of a Qwen row cost ~15-25 ms a token (a third of the 1.5B's decode), and
    the nucleus nearly always lies among the few hundred likeliest tokens. An upper set sorted alone
    gives exactly the full sort's prefix, so only it is sorted: `within`, else the smallest of the
    likeliest _NUCLEUS_CANDIDATES tokens (all ties at the cut included) that reaches top_p, else all.
    """
    target = top_p * float(p.sum(dtype=np.float64))
    if within is None:
        within = _likeliest_reaching(p, target)
    idx = np.arange(p.size) if within is None else np.flatnonzero(within)
    order = idx[np.argsort(-p[idx], kind="stable")]
    cum = np.cumsum(p[order], dtype=np.float64)
    n_keep = int(np.searchsorted(cum, target, side="left")) + 1
    nucleus = np.zeros(p.shape, dtype=bool)
    nucleus[order[:n_keep]] = True
    return nucleus


def _likeliest_reaching(p: np.ndarray, target: float) -> np.ndarray | None:
    """The smallest upper set of p among its likeliest _NUCLEUS_CANDIDATES tokens (ties at the cut
    included) whose mass reaches target, or None (sort every token) when none does."""
    for m in _NUCLEUS_CANDIDATES:
        if m >= p.size:
            return None
        upper = p >= np.partition(p, -m)[-m]
        if float(p[upper].sum(dtype=np.float64)) >= target:
            return upper
    return None


def penalize(
    p: np.ndarray,
    recent: Sequence[int],
    repeat: float = 1.0,
    frequency: float = 0.0,
    presence: float = 0.0,
    bias: Sequence[tuple[int, float]] = (),
) -> np.ndarray:
    """llama.cpp's repetition penalties and logit bias, applied to log r (the ensemble's own
    log-probabilities) at one position; renormalised.

    recent: the tokens before this position that the penalties look at (the last repeat_last_n).
    A repeated token's log-probability (always <= 0) is multiplied by `repeat` (llama.cpp divides
    a positive logit and multiplies a negative one), then lowered by count x frequency + presence
    (OpenAI's penalties); `bias` adds to chosen tokens. A deterministic function of the context, like
    the truncation filters, so every strategy shares the penalised target and stays exact.
    """
    if repeat == 1.0 and frequency == 0.0 and presence == 0.0 and not bias:
        return p
    with np.errstate(divide="ignore"):
        logp = np.log(p.astype(np.float64))
    if recent and (repeat != 1.0 or frequency or presence):
        ids, counts = np.unique(np.asarray(recent, dtype=np.int64), return_counts=True)
        inside = (ids >= 0) & (ids < p.size)
        ids, counts = ids[inside], counts[inside]
        lp = logp[ids]
        lp = np.where(lp > 0, lp / repeat, lp * repeat) - counts * frequency - presence
        logp[ids] = lp
    for tok, b in bias:
        if 0 <= tok < p.size:
            logp[tok] += b
    top = logp.max()
    e = np.exp(logp - top)
    return (e / e.sum()).astype(p.dtype, copy=False)


def greedy_token(p: np.ndarray) -> int:
    """argmax, lowest id on ties (what np.argmax does), so every strategy breaks ties alike."""
    return int(np.argmax(p))


def top2_margin(p: np.ndarray) -> float:
    """p(first) - p(second): how close a greedy decision was to a tie (docs/design.md §4 float-noise rule)."""
    a, b = np.partition(p, -2)[-2:]
    return float(abs(b - a))
