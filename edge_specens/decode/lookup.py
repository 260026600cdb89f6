"""Prompt lookup: a proposer that costs nothing (docs/design.md §7).

If the last few tokens occurred earlier in the context, propose what followed them
then. Code models echo signatures, docstrings and identifiers, so long stretches
can be drafted for free and verified by every member in one batch. The proposal is
a deterministic function of the context (a one-hot q), so verification stays exact:
accept with probability r(x), else sample r with x removed (verify.verify_one_hot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

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
        hits &= arr[j : L - n + j] == arr[L - n + j]
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
    return arr[i : i + n_draft].tolist()


class LookupRates(NamedTuple):
    """What the cost model needs to know of prompt lookup (auto/costmodel.simulate's `lookup`)."""

    find_after_miss: float  # share of tries that find a continuation, after a try that did not
    find_after_find: float  # the same right after a try that found one (finds come in streaks)
    accepted_per_find: float  # drafts of a find that r accepts
    rejections_per_find: float  # share of finds that end in a rejected draft
    rejected_tail: float  # drafts a find put in the batch from the rejected one on (scored for nothing)


@dataclass(slots=True)
class LookupStats:
    """Prompt lookup's record in one generation (or, decayed and summed, over many: `auto`).

    Floats, because `auto` decays old observations and seeds them with prior pseudo-counts.
    """

    tries: float = 0
    finds: float = 0  # tries that found a continuation
    drafted: float = 0  # drafts appended
    verified: float = 0  # drafts verified
    accepted: float = 0  # drafts accepted
    tries_after_find: float = 0  # tries right after a try that found something
    finds_after_find: float = 0  # finds among those

    def record_try(self, after_find: bool, drafted: int) -> bool:
        """Count one try that appended `drafted` drafts; returns whether it found something."""
        self.tries += 1
        self.finds += bool(drafted)
        self.drafted += drafted
        if after_find:
            self.tries_after_find += 1
            self.finds_after_find += bool(drafted)
        return bool(drafted)

    def record_verdict(self, accepted: bool) -> None:
        self.verified += 1
        self.accepted += accepted

    def __add__(self, other: LookupStats) -> LookupStats:
        return LookupStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def decayed(self, decay: float, other: LookupStats) -> LookupStats:
        """Self with older observations faded, plus `other`: counts of tries fade by decay per try
        of `other`, counts of verified drafts by decay per verified draft."""
        per_try, per_verdict = decay**other.tries, decay**other.verified
        return LookupStats(
            tries=self.tries * per_try + other.tries,
            finds=self.finds * per_try + other.finds,
            drafted=self.drafted * per_try + other.drafted,
            verified=self.verified * per_verdict + other.verified,
            accepted=self.accepted * per_verdict + other.accepted,
            tries_after_find=self.tries_after_find * per_try + other.tries_after_find,
            finds_after_find=self.finds_after_find * per_try + other.finds_after_find,
        )

    def rates(self) -> LookupRates:
        per = max(self.finds, 1e-9)
        rejections = self.verified - self.accepted
        return LookupRates(
            find_after_miss=(self.finds - self.finds_after_find) / max(self.tries - self.tries_after_find, 1e-9),
            find_after_find=self.finds_after_find / max(self.tries_after_find, 1e-9),
            accepted_per_find=self.accepted / per,
            rejections_per_find=min(1.0, rejections / per),
            rejected_tail=(self.drafted - self.accepted) / max(rejections, 1e-9) if rejections else 1.0,
        )

    @classmethod
    def from_rates(cls, rates: LookupRates, tries: float) -> LookupStats:
        """Pseudo-counts of `tries` tries that give `rates` (a prior)."""
        share = rates.find_after_miss / (1 - rates.find_after_find + rates.find_after_miss)  # tries after a find
        after_find, after_miss = tries * share, tries * (1 - share)
        finds = after_find * rates.find_after_find + after_miss * rates.find_after_miss
        return cls(
            tries=tries,
            finds=finds,
            drafted=finds * (rates.accepted_per_find + rates.rejections_per_find * rates.rejected_tail),
            verified=finds * (rates.accepted_per_find + rates.rejections_per_find),
            accepted=finds * rates.accepted_per_find,
            tries_after_find=after_find,
            finds_after_find=after_find * rates.find_after_find,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class LookupProposer:
    """Live prompt lookup: drafts for `se`, with a cap that follows how far lookups were right.

    A rejected lookup costs a batch of every member, so the cap shrinks to (the accepted run + 1)
    after a rejection and doubles after a clean run, up to `max_drafts` (0 = off).
    """

    def __init__(self, max_drafts: int, is_eog: Callable[[int], bool]):
        self.is_eog = is_eog
        self.stats = LookupStats()
        self._found = False
        self.configure(max_drafts)

    def configure(self, max_drafts: int) -> None:
        self.max_drafts = self.cap = max_drafts
        self._run = 0

    @property
    def enabled(self) -> bool:
        return self.max_drafts > 0

    def propose(self, context: Sequence[int], room: int) -> list[int]:
        """Up to min(cap, room) drafts continuing `context` (cut after an end-of-generation token)."""
        n = min(self.cap, room)
        if n <= 0:
            return []
        found = lookup_continuation(context, n)
        for i, tok in enumerate(found):
            if self.is_eog(tok):
                del found[i + 1 :]
                break
        self._found = self.stats.record_try(self._found, len(found))
        return found

    def verdict(self, accepted: bool) -> None:
        """One of its drafts was verified: record it and adapt the cap."""
        self.stats.record_verdict(accepted)
        if accepted:
            self._run += 1
            if self._run >= self.cap:
                self.cap = min(self.max_drafts, 2 * self.cap)
        else:
            self.cap = max(2, self._run + 1)
            self._run = 0


class ShadowLookup:
    """What lookup of `n_drafts` drafts a try would have done, while it is off (`auto` learns from it).

    A shadow draft counts as accepted when the committed token equals it, which at T > 0 happens
    with probability r(x): the one-hot acceptance. 0 drafts = off.
    """

    def __init__(self, n_drafts: int):
        self.n_drafts = n_drafts
        self.stats = LookupStats()
        self._drafts: list[int] = []
        self._found = False

    def committed(self, tok: int, context: Sequence[int]) -> None:
        """`tok` was just committed; `context` is every committed token (tok last)."""
        if not self.n_drafts:
            return
        if self._drafts:
            ok = self._drafts.pop(0) == tok
            self.stats.record_verdict(ok)
            if ok and self._drafts:
                return
            if not ok:
                self._drafts = []
        found = lookup_continuation(context, self.n_drafts)
        self._found = self.stats.record_try(self._found, len(found))
        self._drafts = found
