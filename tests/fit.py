"""Goodness of fit of sampled sequences to an exact distribution (the T > 0 exactness tests)."""

from __future__ import annotations

import numpy as np
from scipy.stats import chisquare


def chi_square_p(exact: dict, counts: dict, n: int, min_cells: int = 0) -> float:
    """p-value of a chi-square goodness-of-fit test of `counts` (n samples) against `exact`
    probabilities; cells expecting fewer than 5 are pooled into one."""
    keys = sorted(exact)
    exp = np.array([exact[k] * n for k in keys])
    obs = np.array([counts[k] for k in keys], dtype=float)
    big = exp >= 5
    exp_b, obs_b = np.append(exp[big], exp[~big].sum()), np.append(obs[big], obs[~big].sum())
    if exp_b[-1] == 0:
        exp_b, obs_b = exp_b[:-1], obs_b[:-1]
    assert len(exp_b) >= min_cells, "too few cells for a meaningful test"
    return float(chisquare(obs_b, exp_b * obs_b.sum() / exp_b.sum()).pvalue)
