"""Acceptance per proposing member: what `auto` learns which member drafts well.

Real drafts count when they are verified. While `auto` runs `standard` (no drafts at all), the
observer also estimates, at every `every`-th position, what each member's draft would have been
accepted with: 1[argmax q = argmax r] at T = 0, else the overlap sum_x min(q(x), r(x)), the
probability that min(1, r/q) accepts a draft from q (docs/design.md §6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..distributions import greedy_token
from ..params import SamplingParams, proposal


class AcceptanceObserver:
    def __init__(self, n_members: int, sampling: SamplingParams, every: int = 0):
        self.sampling = sampling
        self.every = every  # N > 0: estimate at every N-th position while nobody drafts (0 = off)
        self.verified_by = [0] * n_members  # drafts verified (or positions observed) per member
        self.accepted_by = [0.0] * n_members  # accepted (or expected to be accepted) per member

    def verdict(self, member: int, accepted: bool) -> None:
        """A draft of `member` was verified."""
        self.verified_by[member] += 1
        self.accepted_by[member] += accepted

    def position(
        self, p: int, r: np.ndarray, rows: Sequence[Mapping[int, np.ndarray | None]], context: Sequence[int] = ()
    ) -> None:
        """r was sampled at position p with nothing pending: estimate every member's acceptance
        there (every `every`-th position)."""
        if not self.every or p % self.every:
            return
        best = greedy_token(r) if self.sampling.greedy else None
        for k, member_rows in enumerate(rows):
            row = member_rows.get(p)
            if row is None:
                continue
            if best is not None:
                acc = float(int(np.argmax(row)) == best)
            else:
                acc = float(np.minimum(proposal(row, self.sampling, context), r).sum())
            self.verified_by[k] += 1
            self.accepted_by[k] += acc
