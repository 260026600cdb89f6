"""Predict seconds per token of a schedule from measured batch costs and acceptance rates.

The paper's closed form, (1 - a^gq)(1 + c) / ((1 - a)(1 + c*gq - a^gp*c)), assumes a
k-token batch costs one call. We instead replay the strategy's own moves (score,
settle, draft: the rules of strategies/state.py) on abstract tokens, charging
cost_k(batch size) per llama_decode and accepting member k's drafts with
probability alpha_k. A few thousand simulated tokens take milliseconds.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def simulate(algorithm: str, costs: Sequence[Callable[[int], float]], alphas: Sequence[float],
             gammas: Sequence[int] | None = None, proposer: int = 0, needed: Sequence[int] | None = None,
             n_tokens: int = 1500, seed: int = 0) -> float:
    """Expected seconds per committed token of `algorithm` ("standard" | "sd" | "se")."""
    n = len(costs)
    needed = list(range(n)) if needed is None else list(needed)
    rng = np.random.default_rng(seed)
    coins = iter(rng.random(n_tokens * 4 + 64))
    P = 0  # committed tokens (after the prompt)
    pending: list[int] = []  # proposer of each pending token
    cache = [-1] * n  # last position each member has a row for (rows cover P..cache[k])
    seconds = 0.0

    def score(k):
        nonlocal seconds
        length = P + len(pending)
        b = length - cache[k] if cache[k] >= 0 else 1
        seconds += costs[k](max(b, 1))
        cache[k] = length

    def settle():
        nonlocal P
        while all(cache[k] >= P for k in needed):
            if not pending:
                P += 1
                continue
            k = pending[0]
            if next(coins) < alphas[k]:
                pending.pop(0)
                P += 1
            else:
                pending.clear()
                for j in range(n):
                    cache[j] = min(cache[j], P)  # rolled back; the row at P is used up
                P += 1

    def draft(k, m, catch_up):
        for i in range(m):
            end = P + len(pending)
            if cache[k] < end:
                if i == 0 and not catch_up:
                    return
                score(k)
            pending.append(k)

    def run(k, m, catch_up=False):
        score(k)
        settle()
        draft(k, m, catch_up)

    while P < n_tokens:
        if algorithm == "standard":
            for k in needed:
                score(k)
            settle()
        elif algorithm == "sd":
            run(proposer, gammas[proposer], catch_up=True)
            for k in needed:
                if k != proposer:
                    score(k)
            settle()
        else:
            cands = sorted(set(needed) | {proposer})
            if not pending:
                k = proposer
            else:
                k = min(cands, key=lambda j: sum(1 for i in range(len(pending)) if cache[j] >= P + i))
            run(k, gammas[k])
    return seconds / P
