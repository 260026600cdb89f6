"""Speculative verification: accept a proposal or resample from the leftover mass.

Letters as in the paper: q = the proposal (origin) distribution a draft token x
was drawn from, r = the ensemble target at that position. Accepting x with
probability min(1, r(x)/q(x)) and otherwise drawing from norm(max(0, r - q))
yields a token distributed exactly as r, whatever q is (q may be one-hot, or
zero where r is positive). Pure NumPy; `rng` is the request's Generator.
"""

from __future__ import annotations

import numpy as np

from .distributions import greedy_token

_BLOCK = 1024


def sample(p: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token id from probability vector p (V,) by inverse CDF, in float64.

    Two levels (block sums, then one block) instead of a float64 cumsum over the whole
    152k vocabulary: the same draw for the same u, about 4x less time per token.
    """
    n = p.size
    if n <= 4 * _BLOCK:
        cdf = np.cumsum(p, dtype=np.float64)
        return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), n - 1))
    full = n - n % _BLOCK
    sums = p[:full].reshape(-1, _BLOCK).sum(axis=1, dtype=np.float64)
    if full < n:
        sums = np.append(sums, p[full:].sum(dtype=np.float64))
    cum = np.cumsum(sums)
    u = rng.random() * cum[-1]
    b = int(min(np.searchsorted(cum, u, side="right"), cum.size - 1))
    while sums[b] <= 0.0:  # u fell on a float boundary next to an empty block: step back
        b -= 1
    u -= cum[b] - sums[b]
    part = p[b * _BLOCK : (b + 1) * _BLOCK]
    i = int(min(np.searchsorted(np.cumsum(part, dtype=np.float64), u, side="right"), part.size - 1))
    if part[i] <= 0.0:  # float rounding at a block edge: never return a zero-probability token
        nz = np.flatnonzero(part > 0.0)
        i = int(nz[min(int(np.searchsorted(nz, i)), nz.size - 1)])
    return b * _BLOCK + i


def residual(r: np.ndarray, q: np.ndarray) -> np.ndarray:
    """norm(max(0, r - q)): where to sample after a rejection.

    If r == q the residual is empty, but then a rejection has probability 0;
    we return r so the function stays total under float noise.
    """
    d = np.maximum(r - q, 0.0)
    s = d.sum(dtype=np.float64)
    return d / s if s > 0.0 else r


def accept_probability(x: int, q: np.ndarray, r: np.ndarray) -> float:
    """min(1, r(x)/q(x)); a token q could not have produced (q(x) = 0) is accepted iff r(x) > 0."""
    qx = q[x]
    if qx <= 0.0:
        return 1.0 if r[x] > 0.0 else 0.0
    return min(1.0, r[x] / qx)


def verify(x: int, q: np.ndarray, r: np.ndarray, rng: np.random.Generator) -> tuple[bool, int]:
    """Stochastic verification of draft x. Returns (accepted, committed token)."""
    if rng.random() < accept_probability(x, q, r):
        return True, x
    return False, sample(residual(r, q), rng)


def verify_one_hot(x: int, r: np.ndarray, rng: np.random.Generator) -> tuple[bool, int]:
    """Verification of a deterministic draft (q = one-hot at x): accept with probability r(x),
    else sample r with x removed and renormalised. Same as verify(x, onehot(x), r, rng)."""
    if rng.random() < r[x]:
        return True, x
    rest = r.copy()
    rest[x] = 0.0
    return False, sample(rest, rng)


def verify_greedy(x: int, r: np.ndarray) -> tuple[bool, int]:
    """T = 0: x is accepted iff it is argmax r; otherwise argmax r is committed."""
    best = greedy_token(r)
    return best == x, best


def output_distribution(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Analytic distribution of verify()'s output when x ~ q: used by tests to prove exactness.

    P(out = y) = q(y) min(1, r(y)/q(y)) + (1 - sum_x q(x) min(1, r(x)/q(x))) * residual(r, q)(y)
    """
    accept = np.minimum(q, r)  # q(y) * min(1, r(y)/q(y)), also right where q(y) = 0
    return accept + (1.0 - accept.sum()) * residual(r, q)
