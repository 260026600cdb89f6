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

NGRAMS = (4, 3)  # suffix lengths tried, longest first; shorter matches are mostly noise


def lookup_continuation(tokens: Sequence[int], n_draft: int, ngrams: Sequence[int] = NGRAMS) -> list[int]:
    """Up to n_draft tokens that followed the most recent earlier occurrence of the context's suffix."""
    arr = np.asarray(tokens, dtype=np.int64)
    L = arr.size
    for n in ngrams:
        if L <= n:
            continue
        suffix = arr[L - n:]
        # candidate starts i with arr[i:i+n] == suffix and i + n < L (something follows)
        hits = np.ones(L - n, dtype=bool)
        for j in range(n):
            hits &= arr[j:L - n + j] == suffix[j]
        starts = np.flatnonzero(hits)
        if starts.size:
            i = int(starts[-1]) + n  # the most recent earlier occurrence
            return arr[i:i + n_draft].tolist()
    return []
