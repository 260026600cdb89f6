"""Prompt lookup: a proposer that costs nothing (SPEC §4).

If the last few tokens occurred earlier in the context, propose what followed them
then. Code models echo signatures, docstrings and identifiers, so long stretches
can be drafted for free and verified by every member in one batch. The proposal is
a deterministic function of the context (a one-hot q), so verification stays exact:
accept with probability r(x), else sample r with x removed (verify.verify_one_hot).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MIN_MATCH = 3  # suffix tokens an earlier occurrence must share; shorter matches are mostly noise
MAX_CONTEXT = 64  # how far back occurrences are compared to pick the best one


def lookup_continuation(tokens: Sequence[int], n_draft: int, min_match: int = MIN_MATCH) -> list[int]:
    """Up to n_draft tokens that followed the earlier occurrence of the context's suffix that
    shares the longest suffix with it (of at least min_match tokens; ties: the most recent).

    Why the longest: code repeats short phrases in many places (`, 2, 3,` in a list, `    return`),
    and the occurrence whose preceding text matches furthest is the one being copied. On HumanEval
    answers this halves the drafts that are scored for nothing (1-in-30 tries find nothing right)
    and drafts a little more text than the most recent 3- or 4-token match.
    """
    arr = np.asarray(tokens, dtype=np.int64)
    L = arr.size
    n = min_match
    if L <= n:
        return []
    # candidate starts i with arr[i:i+n] == the last n tokens and i + n < L (something follows)
    hits = np.ones(L - n, dtype=bool)
    for j in range(n):
        hits &= arr[j:L - n + j] == arr[L - n + j]
    starts = np.flatnonzero(hits)
    # extend the match backwards while some candidates still agree; the last survivors match longest
    for back in range(1, MAX_CONTEXT - n + 1):
        if starts.size <= 1 or L - n - back < 0:
            break
        ok = starts >= back
        ok[ok] = arr[starts[ok] - back] == arr[L - n - back]
        if not ok.any():
            break
        starts = starts[ok]
    if not starts.size:
        return []
    i = int(starts[-1]) + n  # the most recent of the longest matches
    return arr[i:i + n_draft].tolist()
