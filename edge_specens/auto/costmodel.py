"""Predict seconds per token of a schedule from measured batch costs and acceptance rates.

The paper's closed form, (1 - a^gq)(1 + c) / ((1 - a)(1 + c*gq - a^gp*c)), assumes a
k-token batch costs one call. We instead replay the strategy's own moves (score,
settle, draft: the rules of decode/state.py) on abstract tokens, charging
cost_k(batch size) per llama_decode and accepting member k's drafts with
probability alpha_k. A few thousand simulated tokens take milliseconds.

Prompt lookup (decode/lookup.py) enters as measured rates: how often a try finds
a continuation (after a try that found, and after one that did not: finds come in
streaks while text is echoed), how many of a find's drafts are accepted, and how often
a find ends in a rejection, and how many drafts such a find put into the batch from
the rejected one on (evaluated by every member, then thrown away). Echoed text is
right for a stretch and then wrong, so a find is replayed as a run of accepted drafts
plus, sometimes, a rejected tail, not as independent coin flips. Like the real loop, a
member tries lookup before each draft of its own and stops drafting when it finds
something or LOOKUP_PENDING_MAX tokens are pending; lookup costs nothing until verified.
The screener scores new lookup drafts first and cuts them after the rejected one (it is
taken to disagree exactly where r rejects), so only it pays for a rejected tail.

Side by side (parallel=True, docs/design.md §10), the loop is decode/pipeline.py's for `se` and
`sd` (or every member at once for `standard`), and a round costs its slowest member, not the sum:
the curves are then the ones measured with the members decoding side by side.

The controller's own work enters as `overhead` = (seconds per committed token, seconds per member
draft): every strategy computes r once per committed token, but only drafts need their proposal
distribution q (a softmax and the truncation filters over the whole vocabulary at T > 0, ~1 ms for
151k tokens). Left out, sampled speculation looked 2-3 % cheaper than it is (issue 30).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..decode.lookup import LookupRates
from ..decode.state import LOOKUP_PENDING_MAX


def simulate(
    algorithm: str,
    costs: Sequence[Callable[[int], float]],
    alphas: Sequence[float],
    gammas: Sequence[int] | None = None,
    proposer: int = 0,
    needed: Sequence[int] | None = None,
    n_tokens: int = 1500,
    seed: int = 0,
    lookup: LookupRates | None = None,
    screener: int | None = None,
    parallel: bool = False,
    overhead: tuple[float, float] = (0.0, 0.0),
) -> float:
    """Expected seconds per committed token of `algorithm` ("standard" | "sd" | "se").

    lookup: prompt lookup's rates, for `se` only; screener: the member
    that screens lookup drafts (DecodeState.screener; sequential only).
    parallel: members side by side, each round costing its slowest member.
    overhead: the controller's (seconds per committed token, seconds per member draft).
    """
    n = len(costs)
    alphas = list(alphas) + [1.0, 0.0]  # "proposers" n and n + 1: a lookup draft that will be accepted / rejected
    needed = list(range(n)) if needed is None else list(needed)
    rng = np.random.default_rng(seed)
    coins = _coins(rng)
    P = 0  # committed tokens (after the prompt)
    pending: list[int] = []  # proposer of each pending token
    cache = [-1] * n  # last position each member has a row for (rows cover P..cache[k])
    seconds = 0.0
    spent = [0.0] * n  # this round's seconds per member
    found = False  # did the last lookup try find something
    if parallel:
        screener = None  # pipeline.py does not screen: every member scores the drafts at once
    cut = False  # the screener just cut the lookup drafts
    per_token, per_draft = overhead
    drafted = 0  # member drafts made (each paid per_draft of controller work)

    def score(k):
        nonlocal cut
        length = P + len(pending)
        b = length - cache[k] if cache[k] >= 0 else 1
        spent[k] += costs[k](max(b, 1))
        cache[k] = length
        if k == screener and n + 1 in pending:
            del pending[pending.index(n + 1) + 1 :]
            cache[k] = P + len(pending)
            cut = True

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
        nonlocal found, drafted
        for i in range(m):
            end = P + len(pending)
            if cache[k] < end and i == 0 and not catch_up:
                return
            if lookup:
                room = LOOKUP_PENDING_MAX - len(pending)
                if room <= 0:
                    return
                found = next(coins) < (lookup.find_after_find if found else lookup.find_after_miss)
                if found:
                    per_find = lookup.accepted_per_find
                    accepted = min(room, int(per_find) + (next(coins) < per_find % 1))
                    pending.extend([n] * accepted)
                    if accepted < room and next(coins) < lookup.rejections_per_find:
                        pending.extend([n + 1] * min(room - accepted, max(1, round(lookup.rejected_tail))))
                    return
            if cache[k] < end:
                score(k)
            pending.append(k)
            drafted += 1

    def run(k, m, catch_up=False):
        nonlocal cut
        cut = False
        score(k)
        settle()
        if not (cut and pending):
            draft(k, m, catch_up)

    gam: Sequence[int] = gammas if gammas is not None else ()  # sd and se have them
    while P < n_tokens:
        if parallel and algorithm != "standard":  # pipeline.py: one round
            for k in needed:
                if k != proposer and cache[k] < P + len(pending):
                    score(k)
            if cache[proposer] < P + len(pending):
                score(proposer)
            draft(proposer, gam[proposer], catch_up=True)
            settle()
        elif algorithm == "standard":
            for k in needed:
                score(k)
            settle()
        elif algorithm == "sd":
            run(proposer, gam[proposer], catch_up=True)
            for k in needed:
                if k != proposer:
                    score(k)
            settle()
        else:
            cands = sorted(set(needed) | {proposer})
            if not pending:
                k = proposer
            elif screener is not None and cache[screener] < P + len(pending) and (n in pending or n + 1 in pending):
                k = screener  # unscreened lookup drafts
            else:
                # the member with the fewest pending tokens scored: rows cover P..cache[j], so that is
                # how many of the pending positions P..P+len-1 it has (O(1), not a scan of pending)
                k = min(cands, key=lambda j: min(len(pending), max(0, cache[j] - P + 1)))
            run(k, gam[k])
        seconds += max(spent) if parallel else sum(spent)
        spent = [0.0] * n
    return (seconds + P * per_token + drafted * per_draft) / P


def _coins(rng: np.random.Generator, block: int = 4096):
    """Uniform draws without end, generated in blocks (one per call would be slow)."""
    while True:
        yield from rng.random(block).tolist()
