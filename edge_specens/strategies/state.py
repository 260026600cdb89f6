"""Shared bookkeeping of every exact decoding strategy: committed tokens, pending drafts, scores.

Letters as in the paper: q = the distribution a draft was drawn from (its origin),
r = the ensemble target. A *row* is one member's logits at one absolute position
(the logits predicting the token at that position). A member "has scored" a
pending position once it holds a row there.

Three moves are all the strategies need:
  score(k)   member k evaluates, in one batch, every token it has not seen;
  settle()   verify pending drafts front to back while every member r depends on
             has scored the first one (or, with nothing pending, sample from r);
  draft(k,n) member k appends up to n tokens drawn from its own distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..distributions import greedy_token
from ..member import MAX_OUTPUTS
from ..params import EnsembleSpec, SamplingParams, proposal
from ..verify import sample, verify, verify_greedy, verify_one_hot
from .lookup import lookup_continuation

LOOKUP = -1  # Draft.member of a prompt-lookup draft (no member proposed it)
# Lookup drafts stop while this many tokens are pending, so a member scores them with one
# llama_decode (pending + 1 rows <= MAX_OUTPUTS) and the rows alive at once stay few: without
# it, members leapfrog each other's lookups and score 30-60 rows a batch (65 MB of rows held).
LOOKUP_PENDING_MAX = MAX_OUTPUTS - 1


def screener(spec: EnsembleSpec, members: Sequence) -> int:
    """The member that screens lookup drafts before the others pay for them: the cheapest one
    whose own preference predicts r's (a positive weight; CD: the expert, not the amateur)."""
    return min((k for k in range(len(members)) if spec.weights[k] > 0), key=lambda k: (members[k].n_params, k))


@dataclass(frozen=True, slots=True)
class Step:
    """One committed token. member: the proposer of an accepted draft, None when r itself chose it.

    how: "accepted" (a draft), "bonus" (a member's extra-position draft), "resampled"
    (a rejection's replacement from the residual) or "sampled" (drawn from r directly).
    """

    token: int
    member: int | None
    how: str


@dataclass(slots=True)
class Draft:
    token: int
    member: int
    q: np.ndarray | None  # origin distribution (V,); None when greedy
    bonus: bool


class DecodeState:
    """Committed + pending tokens and every member's rows, for one generation."""

    def __init__(self, members: Sequence, spec: EnsembleSpec, sampling: SamplingParams,
                 rng: np.random.Generator, prompt: Sequence[int], n_vocab: int, max_len: int):
        self.members = members
        self.spec = spec
        self.sampling = sampling
        self.rng = rng
        self.n_vocab = n_vocab
        self.max_len = max_len  # no member ever evaluates more tokens than this
        self.draft_limit = max_len  # drafting stops here (the generation's max_tokens ends earlier)
        self.committed: list[int] = list(prompt)
        self.pending: list[Draft] = []
        self.rows: list[dict[int, np.ndarray]] = [{} for _ in members]
        self.needed = [k for k in range(len(members)) if spec.needs(k)]
        self.screener = screener(spec, members)
        self.is_eog = members[0].is_eog
        self.verified = 0
        self.accepted = 0
        # per proposing member: drafts verified and accepted (expected acceptances when observing)
        self.verified_by = [0] * len(members)
        self.accepted_by = [0.0] * len(members)
        # N > 0: estimate each member's acceptance at every N-th position even when nobody drafts (`auto`)
        self.observe = 0
        self.switched_to = None  # the plan `auto` switched to mid-generation (plan.py), if any
        self.lookup_max = 0  # prompt-lookup drafts per round at most (0 = off)
        self.lookup_cap = 0  # current cap: doubles after a clean run, shrinks to (run accepted + 1) on a rejection
        self._lookup_run = 0
        # prompt lookup's record, for `auto`'s cost model: tries, tries that found something,
        # drafts appended, drafts verified, drafts accepted, tries right after a find, finds among those
        self.lookup_stats = [0] * 7
        self.screen_cuts = 0  # lookup drafts cut short by the screener (_screen)
        self._lookup_found = False
        # shadow lookup (for `auto` while lookup is off): what lookup would have proposed, checked
        # against the tokens committed, recorded like lookup_stats; N drafts a try (0 = off)
        self.shadow_lookup = 0
        self.shadow_stats = [0] * 7
        self._shadow_drafts: list[int] = []
        self._shadow_found = False

    @property
    def length(self) -> int:
        return len(self.committed) + len(self.pending)

    def scored(self, k: int) -> int:
        """How many pending positions member k has scored."""
        p = len(self.committed)
        return sum(1 for i in range(p, p + len(self.pending)) if i in self.rows[k])

    # ------------------------------------------------------------------ moves
    def score(self, k: int) -> None:
        """Member k evaluates every token it has not seen in one batch, keeping rows from the first pending position on."""
        m = self.members[k]
        seq = self.committed + [d.token for d in self.pending]
        start = len(m.tokens)
        first = max(start, len(self.committed) - 1)  # rows before the first pending position are never needed
        rows = m.evaluate_rows(seq[start:], range(first - start, len(seq) - start))
        mine = self.rows[k]
        for i, row in enumerate(rows, start=first + 1):
            mine[i] = row[: self.n_vocab]
        if k == self.screener and self.lookup_max:
            self._screen(max(start, len(self.committed)))

    def unscreened(self) -> bool:
        """Are there lookup drafts the screener has not scored yet?"""
        p = len(self.committed)
        return any(d.member == LOOKUP and p + i not in self.rows[self.screener] for i, d in enumerate(self.pending))

    def _screen(self, first: int) -> None:
        """Cut the pending drafts after the first lookup draft (at position >= first) that the
        screener would not pick itself (its argmax). A lookup continues text from elsewhere in the
        context, and where the screener disagrees r mostly does too: every member but the screener
        would score the rest for nothing. Exact at any temperature: whether a draft is kept depends
        only on the tokens and rows before it, never on a random draw (like stopping a proposal early)."""
        p = len(self.committed)
        rows = self.rows[self.screener]
        for i in range(max(first - p, 0), len(self.pending)):
            d = self.pending[i]
            if d.member == LOOKUP and int(np.argmax(rows[p + i])) != d.token:
                self._drop_pending(i + 1)  # keep this draft: r may still accept it
                self.screen_cuts += 1  # and nobody drafts on top of it (run)
                return

    def settle(self) -> Iterator[Step]:
        """Commit every position that all needed members have scored."""
        greedy = self.sampling.greedy
        while True:
            p = len(self.committed)
            if any(p not in self.rows[k] for k in self.needed):
                return
            r = self.spec.target([self.rows[k].get(p) for k in range(len(self.members))], self.sampling)
            if not self.pending:
                if self.observe and p % self.observe == 0:
                    self._observe(p, r)
                tok = greedy_token(r) if greedy else sample(r, self.rng)
                self._commit(tok)
                yield Step(tok, None, "sampled")
                continue
            d = self.pending[0]
            if greedy:
                ok, tok = verify_greedy(d.token, r)
            elif d.member == LOOKUP:
                ok, tok = verify_one_hot(d.token, r, self.rng)
            else:
                ok, tok = verify(d.token, d.q, r, self.rng)
            self.verified += 1
            if d.member != LOOKUP:
                self.verified_by[d.member] += 1
            else:
                self._adapt_lookup(ok)
                self.lookup_stats[3] += 1
                self.lookup_stats[4] += ok
            if ok:
                self.accepted += 1
                if d.member != LOOKUP:
                    self.accepted_by[d.member] += 1
                self.pending.pop(0)
                self._commit(tok)
                if d.member == LOOKUP:
                    yield Step(tok, None, "lookup")
                else:
                    yield Step(tok, d.member, "bonus" if d.bonus else "accepted")
            else:
                self._reject(tok)
                yield Step(tok, None, "resampled")

    def draft(self, k: int, n: int, catch_up: bool) -> None:
        """Member k appends up to n drafts of its own, one llama_decode each after the first.

        Without catch_up, k drafts only if it already holds a row at the end of the
        sequence (it just scored it); a rejection in between means someone else leads.
        """
        greedy = self.sampling.greedy
        for i in range(n):
            end = self.length
            if end >= self.draft_limit:  # a draft past the last wanted token is wasted work
                return
            has_row = end in self.rows[k]
            if not has_row and i == 0 and not catch_up:
                return
            if self.lookup_max:
                if len(self.pending) >= LOOKUP_PENDING_MAX:  # enough to verify in one batch: others score first
                    return
                if self.draft_lookup():  # free drafts beat paid ones
                    return
            if not has_row:
                self.score(k)
            row = self.rows[k][end]
            if greedy:
                tok, q = int(np.argmax(row)), None
            else:
                q = proposal(row, self.sampling)
                tok = sample(q, self.rng)
            self.pending.append(Draft(tok, k, q, bonus=(i == 0 and bool(self.pending))))
            if self.is_eog(tok):  # nothing follows an accepted end-of-generation: stop drafting
                return

    def draft_lookup(self) -> int:
        """Append free prompt-lookup drafts continuing the sequence (committed + pending); how many."""
        n = min(self.lookup_cap, self.draft_limit - self.length, LOOKUP_PENDING_MAX - len(self.pending))
        if n <= 0:
            return 0
        found = lookup_continuation(self.committed + [d.token for d in self.pending], n)
        appended = 0
        for tok in found:
            self.pending.append(Draft(tok, LOOKUP, None, bonus=False))
            appended += 1
            if self.is_eog(tok):
                break
        self._lookup_found = _record_try(self.lookup_stats, self._lookup_found, appended)
        return appended

    def run(self, k: int, n: int, catch_up: bool = False) -> Iterator[Step]:
        """score(k), settle what that made verifiable, then let k draft n tokens.

        With prompt lookup on, free drafts are tried before each of k's own; when some are
        found k stops, and every member scores them in one batch when its turn comes.
        """
        cuts = self.screen_cuts
        self.score(k)
        yield from self.settle()
        if self.screen_cuts > cuts and self.pending:
            return  # k just cut the drafts at one it disagrees with: drafting on top would be wasted
        self.draft(k, n, catch_up)

    def _adapt_lookup(self, accepted: bool) -> None:
        """Draft as far as lookups have recently been right: a rejected lookup cost a batch of every member."""
        if accepted:
            self._lookup_run += 1
            if self._lookup_run >= self.lookup_cap:
                self.lookup_cap = min(self.lookup_max, 2 * self.lookup_cap)
        else:
            self.lookup_cap = max(2, self._lookup_run + 1)
            self._lookup_run = 0

    def _observe(self, p: int, r: np.ndarray) -> None:
        """What each member's draft here would have been accepted with: 1[argmax q = argmax r] at T = 0,
        else the overlap sum_x min(q(x), r(x)). Lets `auto` learn acceptance while running `standard`."""
        best = greedy_token(r) if self.sampling.greedy else None
        for k, rows in enumerate(self.rows):
            row = rows.get(p)
            if row is None:
                continue
            if best is not None:
                acc = float(int(np.argmax(row)) == best)
            else:
                acc = float(np.minimum(proposal(row, self.sampling), r).sum())
            self.verified_by[k] += 1
            self.accepted_by[k] += acc

    # ------------------------------------------------------------------ commits
    def _commit(self, tok: int) -> None:
        p = len(self.committed)
        for rows in self.rows:
            rows.pop(p, None)
        self.committed.append(tok)
        if self.shadow_lookup:
            self._shadow(tok)

    def _reject(self, tok: int) -> None:
        """Drop every pending token, then commit the replacement."""
        self._drop_pending(0)
        self._commit(tok)

    def _drop_pending(self, keep: int) -> None:
        """Drop the pending drafts from index `keep` on: members that evaluated them roll back,
        and rows past the drafts kept go (a row at the end of what is kept predicts what follows)."""
        end = len(self.committed) + keep
        del self.pending[keep:]
        for m in self.members:
            m.truncate(end)
        for rows in self.rows:
            for j in [j for j in rows if j > end]:
                del rows[j]

    def _shadow(self, tok: int) -> None:
        """Score a lookup nobody drafted: a shadow draft is "accepted" when the committed token
        equals it, which at T > 0 happens with probability r(x), the one-hot acceptance."""
        st = self.shadow_stats
        if self._shadow_drafts:
            st[3] += 1
            if self._shadow_drafts.pop(0) == tok:
                st[4] += 1
                if self._shadow_drafts:
                    return
            else:
                self._shadow_drafts = []
        found = lookup_continuation(self.committed, self.shadow_lookup)
        self._shadow_found = _record_try(st, self._shadow_found, len(found))
        self._shadow_drafts = found


def _record_try(stats: list[int], after_find: bool, drafted: int) -> bool:
    """Count one lookup try in `stats` (lookup_stats' layout); returns whether it found something.
    Finds come in streaks (echoed text), so tries right after a find are counted apart too."""
    stats[0] += 1
    stats[1] += bool(drafted)
    stats[2] += drafted
    if after_find:
        stats[5] += 1
        stats[6] += bool(drafted)
    return bool(drafted)
