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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from ..constrain import Constraint, mask
from ..distributions import greedy_token, softmax
from ..logprobs import TokenLogprob, token_logprob
from ..member import MAX_OUTPUTS, DecodeMember
from ..params import EnsembleSpec, SamplingParams, proposal
from ..verify import sample, verify, verify_greedy, verify_one_hot
from ..workers import Inline, MemberWorkers
from .lookup import LookupProposer, ShadowLookup
from .observe import AcceptanceObserver

LOOKUP = -1  # Draft.member of a prompt-lookup draft (no member proposed it)
# Lookup drafts stop while this many tokens are pending, so a member scores them with one
# llama_decode (pending + 1 rows <= MAX_OUTPUTS) and the rows alive at once stay few: without
# it, members leapfrog each other's lookups and score 30-60 rows a batch (65 MB of rows held).
LOOKUP_PENDING_MAX = MAX_OUTPUTS - 1


def screener(spec: EnsembleSpec, members: Sequence[DecodeMember]) -> int:
    """The member that screens lookup drafts before the others pay for them: the cheapest one
    whose own preference predicts r's (a positive weight; CD: the expert, not the amateur)."""
    return min((k for k in range(len(members)) if spec.weights[k] > 0), key=lambda k: (members[k].n_params, k))


@dataclass(frozen=True, slots=True)
class Step:
    """One committed token. member: the proposer of an accepted draft, None when r itself chose it.

    how: "accepted" (a member's draft), "bonus" (a member's extra-position draft), "lookup"
    (a prompt-lookup draft), "resampled" (a rejection's replacement from the residual),
    "sampled" (drawn from r directly) or "flush" (generation.py: held-back text, no token).
    logprob: the token's log-probability under r and r's likeliest tokens, when asked for (logprobs.py).
    """

    token: int
    member: int | None
    how: Literal["accepted", "bonus", "lookup", "resampled", "sampled", "flush"]
    logprob: TokenLogprob | None = None


@dataclass(slots=True)
class Draft:
    token: int
    member: int
    q: np.ndarray | None  # origin distribution (V,); None when greedy
    bonus: bool


class DecodeState:
    """Committed + pending tokens and every member's rows, for one generation.

    What it records besides (set by the plan, see reconfigure): `lookup`, the prompt-lookup
    proposer (max_drafts 0 = off); `shadow`, what lookup would have done while it is off;
    `observer`, acceptance per proposing member (all three are read by `auto`).
    """

    def __init__(
        self,
        members: Sequence[DecodeMember],
        spec: EnsembleSpec,
        sampling: SamplingParams,
        rng: np.random.Generator,
        prompt: Sequence[int],
        n_vocab: int,
        max_len: int,
        *,
        draft_limit: int | None = None,
        lookup: int = 0,
        shadow_lookup: int = 0,
        observe_every: int = 0,
        pool: MemberWorkers | Inline | None = None,
        constraint: Constraint | None = None,
        logprobs: int | None = None,
    ):
        self.members = members
        # where score_all and pipelined speculation run members' jobs (the ensemble's workers)
        self.pool = pool if pool is not None else Inline()
        self.constraint = constraint  # structured output: what a grammar allows (constrain.py)
        self.spec = spec
        self.sampling = sampling
        # logprobs: None = off, N = each committed token's log-probability and r's N likeliest tokens,
        # under r at T = 1 without the truncation filters (logprobs.py); sampled generations compute
        # that r apart, with `belief` (greedy ones choose from it anyway)
        self.logprobs = logprobs
        self.belief = replace(sampling, temperature=0.0) if logprobs is not None and not sampling.greedy else None
        # one random stream per purpose: rng verifies and samples from r, draft_rngs[k] draws member
        # k's drafts. Which numbers each purpose draws then never depends on how the members' work
        # interleaved, so a seeded run gives the same tokens side by side or one after the other.
        self.rng = rng
        self.draft_rngs = rng.spawn(len(members))
        self.n_vocab = n_vocab
        self.max_len = max_len  # no member ever evaluates more tokens than this
        # drafting stops here (the generation's max_tokens ends earlier than the context)
        self.draft_limit = max_len if draft_limit is None else min(draft_limit, max_len)
        self.committed: list[int] = list(prompt)
        self.pending: list[Draft] = []
        self.rows: list[dict[int, np.ndarray | None]] = [{} for _ in members]  # None: abstained (a follower)
        self.needed = [k for k in range(len(members)) if spec.needs(k)]
        self.screener = screener(spec, members)
        self.is_eog = members[0].is_eog
        self.verified = 0
        self.accepted = 0
        self.screen_cuts = 0  # lookup drafts cut short by the screener (_screen)
        self.lookup = LookupProposer(lookup, self.is_eog)
        self.shadow = ShadowLookup(shadow_lookup)
        self.observer = AcceptanceObserver(len(members), sampling, observe_every)
        self.switched_to: Any = None  # the Plan `auto` switched to mid-generation (plan.py), if any
        self.switched_after = 0  # tokens generated before that switch

    def reconfigure(self, *, lookup: int, shadow_lookup: int, observe_every: int) -> None:
        """New settings for the rest of the generation (auto's switch after its warm-up); what
        was recorded so far is kept."""
        self.lookup.configure(lookup)
        self.shadow.n_drafts = shadow_lookup
        self.observer.every = observe_every

    @property
    def length(self) -> int:
        return len(self.committed) + len(self.pending)

    def abstains(self, k: int) -> bool:
        """Has member k scored the end of the sequence and abstained there? (a follower whose vocabulary
        differs, inside a character it has not finished reading: docs/design.md §2). Its row is None,
        r leaves it out, and it cannot propose there."""
        rows = self.rows[k]
        return self.length in rows and rows[self.length] is None

    def scored(self, k: int) -> int:
        """How many pending positions member k has scored."""
        p = len(self.committed)
        return sum(1 for i in range(p, p + len(self.pending)) if i in self.rows[k])

    # ------------------------------------------------------------------ moves
    def sequence(self) -> list[int]:
        """Committed tokens, then pending drafts: what the members evaluate."""
        return self.committed + [d.token for d in self.pending]

    def unseen(self, k: int) -> bool:
        """Has member k tokens of the sequence left to evaluate?"""
        return len(self.members[k].tokens) < self.length

    def score(self, k: int, screen: bool = True) -> None:
        """Member k evaluates every token it has not seen in one batch, keeping its rows from the first
        pending position on (screen: the screener may then cut lookup drafts, see _screen)."""
        self.record(k, self.evaluate(k, self.sequence()), screen)

    def score_all(self, ks: Sequence[int]) -> None:
        """score() for each member in ks, side by side on their workers (one after the other inline)."""
        seq = self.sequence()
        jobs = [self.pool.submit(k, self.evaluate, k, seq) for k in ks]
        for k, result in zip(ks, self.pool.gather(jobs)):
            self.record(k, result)

    def evaluate(self, k: int, seq: Sequence[int]) -> tuple[int, int, Sequence[np.ndarray | None]]:
        """Member k's part of score(): touches member k only, so it may run on k's worker while the
        others run (seq is a snapshot taken by the controller). Returns (start, first, rows)."""
        m = self.members[k]
        start = len(m.tokens)
        first = max(start, len(self.committed) - 1)  # rows before the first pending position are never needed
        return start, first, m.evaluate_rows(seq[start:], range(first - start, len(seq) - start))

    def record(self, k: int, result: tuple[int, int, Sequence[np.ndarray | None]], screen: bool = True) -> None:
        start, first, rows = result
        mine = self.rows[k]
        for i, row in enumerate(rows, start=first + 1):
            mine[i] = row[: self.n_vocab] if row is not None else None  # None: a follower abstains there
        if screen and k == self.screener and self.lookup.enabled:
            self._screen(max(start, len(self.committed)))

    def propose(self, k: int, n: int) -> None:
        """Pipelined speculation's proposer job (pipeline.py): catch up on every token k has not
        seen, then draft n tokens past the end. Touches member k, the pending list and k's rows
        only (the controller waits meanwhile), and never screens: screening truncates members."""
        if self.unseen(k):
            self.score(k, screen=False)
        self.draft(k, n, catch_up=True, screen=False)

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
            d, row = self.pending[i], rows[p + i]
            if d.member == LOOKUP and row is not None and int(np.argmax(row)) != d.token:
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
            allowed = self.constraint.allowed() if self.constraint is not None else None
            rows = [self.rows[k].get(p) for k in range(len(self.members))]
            r = self.spec.target(rows, self.sampling, self.committed, allowed)
            if not self.pending:
                self.observer.position(p, r, self.rows, self.committed)
                tok = greedy_token(r) if greedy else sample(r, self.rng)
                lp = self._logprob(rows, r, allowed, tok)
                self._commit(tok)
                yield Step(tok, None, "sampled", lp)
                continue
            d = self.pending[0]
            if greedy:
                ok, tok = verify_greedy(d.token, r)
            elif d.member == LOOKUP:
                ok, tok = verify_one_hot(d.token, r, self.rng)
            else:
                assert d.q is not None  # sampled drafts keep their origin
                ok, tok = verify(d.token, d.q, r, self.rng)
            lp = self._logprob(rows, r, allowed, tok)
            self.verified += 1
            self.accepted += ok
            if d.member == LOOKUP:
                self.lookup.verdict(ok)
            else:
                self.observer.verdict(d.member, ok)
            if ok:
                self.pending.pop(0)
                self._commit(tok)
                if d.member == LOOKUP:
                    yield Step(tok, None, "lookup", lp)
                else:
                    yield Step(tok, d.member, "bonus" if d.bonus else "accepted", lp)
            else:
                self._reject(tok)
                yield Step(tok, None, "resampled", lp)

    def _logprob(self, rows, r: np.ndarray, allowed, tok: int) -> TokenLogprob | None:
        """What logprobs reports for `tok` at the next position (before it is committed: the penalties
        look at the context before it), or None when not asked for."""
        if self.logprobs is None:
            return None
        belief = r if self.belief is None else self.spec.target(rows, self.belief, self.committed, allowed)
        return token_logprob(belief, tok, self.logprobs)

    def draft(self, k: int, n: int, catch_up: bool, screen: bool = True) -> None:
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
            if self.lookup.enabled:
                if len(self.pending) >= LOOKUP_PENDING_MAX:  # enough to verify in one batch: others score first
                    return
                if self.draft_lookup():  # free drafts beat paid ones
                    return
            if not has_row:
                self.score(k, screen)
            row = self.rows[k][end]
            if row is None:  # a follower inside a character it has not finished reading: it cannot propose
                return
            # the member's own choice under r's penalties and grammar: accepted more often
            allowed = self.constraint.allowed([d.token for d in self.pending]) if self.constraint else None
            if allowed is not None and not allowed.any():
                return  # the drafts so far already leave the grammar: verification will cut them
            if greedy:
                pick = self.sampling.penalized(softmax(row), self.sequence()) if self.sampling.has_penalties else row
                if allowed is not None:
                    pick = np.where(allowed[: pick.size], pick, -np.inf)
                tok, q = int(np.argmax(pick)), None
            else:
                q = proposal(row, self.sampling, self.sequence() if self.sampling.has_penalties else ())
                if allowed is not None:
                    q = mask(q, allowed)
                tok = sample(q, self.draft_rngs[k])
            self.pending.append(Draft(tok, k, q, bonus=(i == 0 and bool(self.pending))))
            if self.is_eog(tok):  # nothing follows an accepted end-of-generation: stop drafting
                return

    def draft_lookup(self) -> int:
        """Append free prompt-lookup drafts continuing the sequence (committed + pending); how many."""
        room = min(self.draft_limit - self.length, LOOKUP_PENDING_MAX - len(self.pending))
        found = self.lookup.propose(self.sequence(), room)
        self.pending.extend(Draft(tok, LOOKUP, None, bonus=False) for tok in found)
        return len(found)

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

    # ------------------------------------------------------------------ commits
    def _commit(self, tok: int) -> None:
        if self.constraint is not None:
            self.constraint.commit(tok)
        p = len(self.committed)
        for rows in self.rows:
            rows.pop(p, None)
        self.committed.append(tok)
        self.shadow.committed(tok, self.committed)

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
