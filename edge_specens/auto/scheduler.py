"""`auto`: pick the strategy and gammas that are fastest on this machine, never slower than standard.

Inputs: each member's measured batch-cost curve (calibrate.py) and each member's
acceptance rate, learned from every generation (from verified drafts, or, while
running `standard`, from what each member's draft would have been accepted with).
Prompt lookup's rates (how often a try finds a continuation, how much of it is
accepted) are learned the same way from every run that used it. The cost model
(costmodel.py) predicts seconds per token for each candidate schedule, with and without
lookup; auto runs the best one only if it beats `standard` by a margin, else `standard`.
Schedules with the members side by side (docs/design.md §10) are weighed the same way, from
curves measured with the members decoding at once on each candidate thread split.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

from ..decode.lookup import LookupRates, LookupStats
from ..decode.plan import Plan, make_plan, side_by_side
from ..decode.state import screener
from ..member import default_threads
from ..params import SamplingParams
from ..threads import even_split, placement_sizes
from .calibrate import CONTEXT, SHORT_CONTEXT, blend, controller_costs, cost_curve, side_by_side_curves
from .costmodel import simulate

PRIOR_ACCEPTANCE = 0.85  # greedy, before anything is observed: members sharing a tokenizer are close kin
# Sampled WE: how much of r's mass beyond the w_k floor a kin member's q overlaps (see prior_alphas).
# Measured on the duo at T = 0.8 with llama.cpp's filters over 6 chat answers of 128 tokens: the
# 0.5B's overlap was 0.745 at weight 0.15 (0.70 beyond the floor), the 1.5B's 0.963 at 0.85 (0.75).
# The old prior, 0.85 here too, predicted 0.87 for the 0.5B: auto then expected 1.5x and got 1.1x.
PRIOR_OVERLAP_SAMPLED = 0.70
# A member that follows through a vocabulary bridge (vocabulary/): another family, often another
# training; it agrees with the primary far less than a sibling does, until it shows otherwise
PRIOR_FOLLOWER = 0.5
PRIOR_WEIGHT = 8.0  # pseudo-observations behind the prior
DECAY = 0.98  # older observations fade, so the estimate follows the current workload
MARGIN = 1.05  # speculate only if predicted to be at least 5% faster than standard
# ...and if still faster than standard when every member's acceptance is PESSIMISM standard errors
# lower than estimated: 24 observed tokens of one answer say little (the duo's first 24 tokens read
# 0.52-0.87 where the rest of the same answers read 0.64-0.78), so weak evidence keeps `standard`
PESSIMISM = 1.0
# The busy-machine warning: when the members' llama_decode calls took SLOW_WARNING times what this
# machine's calibration says calls of those sizes cost, over at least SLOW_MIN_SECONDS of decoding
# (shorter runs are at the mercy of one context switch), say so once per process.
SLOW_WARNING = 3.0
SLOW_MIN_SECONDS = 0.5
_said_slow = False  # once per process: a laptop that is never idle would hear it after every reply
# while auto runs `standard` it scores would-be drafts at every OBSERVE_EVERY-th position: scoring
# costs ~1.5% of a sampled token, and a generation's acceptance changes slowly along it
OBSERVE_EVERY = 4
WARMUP = 24  # seeded sampled runs: tokens of observed `standard` before auto decides (see _warm_up_plan)
GAMMAS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)
PIPELINE_AHEAD = (1, 2, 3, 4, 6, 8, 12, 16)  # side by side: drafts the proposer makes per round
SIM_TOKENS = 1500  # simulated tokens behind a prediction
# Members beyond which auto runs `standard` without planning. A simulated token costs a step per
# member for each member that must score it (every member verifies every token), so planning grows
# with the square of the member count: ~0.3 s for 8 members, 29 s for 100 (reliability probe N16).
# Past a handful of members, every rejected draft costs every member, and speculation gains little.
AUTO_MAX_MEMBERS = 8
SCREEN_TOKENS = 300  # choose(): every candidate is first simulated this far...
FINALISTS = 4  # ...and the best few again with SIM_TOKENS
# prompt-lookup drafts per round when auto uses them (the cap adapts below this): with the row
# after them, one llama_decode of member.MAX_OUTPUTS rows
LOOKUP = 15
# Prompt lookup before anything is observed, per decoding mode: (find rate after a miss, after
# a find, accepted drafts per find, rejections per find, drafts in a rejected tail). The duo on
# 20 HumanEval answers showed T = 0: 0.06, 0.85, 10.7, 0.21, 15 and T = 1: 0.07, 0.70, 5.8, 0.36,
# 13; the greedy prior is a little worse, and greedy runs learn from every request. A seeded sampled
# run cannot learn (it decides from the prior and its own warm-up), so its prior is chat's: 6 chat
# answers at T = 0.8 showed 0.03, 0.07, 1.0, 0.94, 15 (a find is mostly a rejected tail; 4 HumanEval
# answers: 0.09, 0.66, 11.0, 0.34, 12). A HumanEval-like prior made auto expect 1.4-1.5x on chat and
# run schedules that lost (issue 30); code that echoes its prompt shows it within the warm-up.
# A try that finds nothing costs ~0.1 ms.
LOOKUP_PRIOR = {True: LookupRates(0.05, 0.8, 8.0, 0.25, 12.0), False: LookupRates(0.03, 0.2, 2.0, 0.7, 12.0)}
LOOKUP_PRIOR_TRIES = 40.0  # pseudo-observations behind it


# A server runs for weeks: everything kept per request key is bounded (least recently used goes).
MEMO_SIZE = 4096  # simulations (~40 candidates x a few rounded estimates per mode)
CORRECTIONS_SIZE = 256  # measured/predicted ratios per schedule


log = logging.getLogger("edge_specens")


class LRU(OrderedDict):
    """A dict that keeps only its `size` most recently used entries."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get(self, key, default=None):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.size:
            self.popitem(last=False)


class Scheduler:
    def __init__(self, ens):
        self.ens = ens
        self.curves = None  # per member, measured CONTEXT tokens in
        self.short_curves: list | None = None  # ...and SHORT_CONTEXT tokens in (None: use `curves`)
        # acceptance per member, separately for greedy and sampled decoding: [accepted, verified]
        self.counts = {g: self._prior_counts(g) for g in (True, False)}
        # prompt lookup per mode, decayed like the acceptance counts
        self.lookup_counts = {g: _lookup_prior(g) for g in (True, False)}
        self._memo: LRU = LRU(MEMO_SIZE)
        # measured / predicted seconds per token, per schedule: corrects what the model misses
        self.correction: LRU = LRU(CORRECTIONS_SIZE)
        self.warned_many = False  # said once per ensemble: "too many members to plan, running standard"
        self.split_curves: dict[tuple[int, ...], list] = {}  # thread split -> side-by-side curves
        self.controller_seconds: dict[bool, tuple[float, float]] = {}  # greedy -> controller(greedy)

    # ------------------------------------------------------------------ inputs
    def calibrate(self, force: bool = False):
        if self.curves is None or force:
            self.curves = [cost_curve(m, force=force) for m in self.ens.members]
            self.short_curves = [cost_curve(m, force=force, context=SHORT_CONTEXT) for m in self.ens.members]
        return self.curves

    def curves_at(self, long_share: float | None):
        """The members' curves for a generation that spends `long_share` of its positions more than
        CONTEXT tokens in (None: the CONTEXT curves), blended from the two measured contexts."""
        curves = self.calibrate()
        if long_share is None or self.short_curves is None:
            return curves
        return [blend(a, b, long_share) for a, b in zip(self.short_curves, curves)]

    def splits(self) -> list[tuple[int, ...]]:
        """Thread splits to weigh for running the members side by side: the per-member threads the
        user gave, else a few splits of this machine's cores (none for fewer cores than members,
        or where members cannot be measured: test fakes without curves)."""
        members = self.ens.members
        if self.split_curves:
            return list(self.split_curves)
        if len(members) < 2 or not all(hasattr(m, "path") for m in members):
            return []
        given = self.ens.side_by_side_threads()
        if all(getattr(m, "options", None) and m.options.n_threads for m in members):
            return [given]
        return candidate_splits(default_threads(), placement_sizes(members))

    def side_by_side(self, threads: tuple[int, ...], force: bool = False):
        """The members' cost curves when they decode side by side on `threads` (measured once)."""
        if threads not in self.split_curves or force:
            self.split_curves[threads] = side_by_side_curves(self.ens.members, threads, self.ens.workers, force=force)
        return self.split_curves[threads]

    def alphas(self, greedy: bool, learned: bool = True, state=None, pessimistic: bool = False) -> list[float]:
        """Acceptance per member: learned (or only the prior), plus what `state`, a running
        generation, has observed so far. pessimistic: PESSIMISM standard errors lower, the error of
        a rate from that many observations (prior pseudo-observations included)."""
        prior = self.prior_alphas(greedy)
        counts = self.counts[greedy] if learned else self._prior_counts(greedy)
        if state is not None:
            seen = state.observer
            counts = [[a + sa, v + sv] for (a, v), sa, sv in zip(counts, seen.accepted_by, seen.verified_by)]
        out = [min(0.999, a / v) if v else p for (a, v), p in zip(counts, prior)]
        if pessimistic:
            out = [max(0.0, x - PESSIMISM * (x * (1.0 - x) / v) ** 0.5) if v else x for x, (_, v) in zip(out, counts)]
        return out

    def controller(self, greedy: bool) -> tuple[float, float]:
        """The controller's (seconds per committed token, per member draft), measured once per mode
        (calibrate.controller_costs; sampled: at llama.cpp's default filters)."""
        if greedy not in self.controller_seconds:
            sampling = SamplingParams(temperature=0.0 if greedy else 0.8)
            self.controller_seconds[greedy] = controller_costs(self.ens.spec, self.ens.n_vocab, sampling)
        return self.controller_seconds[greedy]

    def _prior_counts(self, greedy: bool, weight: float = PRIOR_WEIGHT) -> list[list[float]]:
        """[accepted, verified] pseudo-counts per member that say prior_alphas, worth `weight` observations."""
        return [[p * weight, weight] for p in self.prior_alphas(greedy)]

    def prior_alphas(self, greedy: bool) -> list[float]:
        """Acceptance before anything is observed. Sampled WE drafts have a floor before the truncation
        filters: r >= w_k q_k, so sum_x min(q_k, r) >= w_k; the rest of r overlaps q_k as measured
        (PRIOR_OVERLAP_SAMPLED; the filters, applied to q and r apart, blur the floor). A follower
        (another vocabulary) starts from PRIOR_FOLLOWER instead of a sibling's agreement."""
        from ..vocabulary.follower_member import is_follower

        spec = self.ens.spec
        kin = [PRIOR_FOLLOWER if is_follower(m) else PRIOR_ACCEPTANCE for m in self.ens.members]
        if greedy or spec.method != "we":
            return kin
        sampled = [PRIOR_FOLLOWER if is_follower(m) else PRIOR_OVERLAP_SAMPLED for m in self.ens.members]
        return [w + (1.0 - w) * a for w, a in zip(spec.weights, sampled)]

    def lookup_rates(self, greedy: bool, learned: bool = True, state=None) -> LookupRates:
        """Prompt lookup's rates (costmodel.simulate's `lookup`); `state` as in alphas."""
        counts = self.lookup_counts[greedy] if learned else _lookup_prior(greedy)
        if state is not None:
            counts = counts + _live_or_shadow(state.lookup.stats, state.shadow.stats)
        return counts.rates()

    def observe(self, stats, greedy: bool, plan: Plan | None = None) -> None:
        """Fold one generation's per-member acceptance (and measured speed) into the estimates."""
        if plan is not None:
            self._observe_speed(stats, greedy, plan)
        for k, (acc, ver) in enumerate(zip(stats.accepted_by, stats.verified_by)):
            if ver:
                c = self.counts[greedy][k]
                decay = DECAY**ver
                c[0] = c[0] * decay + acc
                c[1] = c[1] * decay + ver
        new = _live_or_shadow(stats.lookup_stats, stats.lookup_shadow)
        if new.tries:
            self.lookup_counts[greedy] = self.lookup_counts[greedy].decayed(DECAY, new)

    def _observe_speed(self, stats, greedy: bool, plan: Plan) -> None:
        if (
            plan.algorithm not in ("se", "sd", "standard")
            or len(plan.members) != len(self.ens.members)
            or plan.switch is not None
            or stats.new_tokens < 8
            or self.curves is None
            or (stats.note or "").startswith("member lost")  # its time includes waiting for a dead server
        ):
            return
        if plan.parallel and plan.threads not in self.split_curves:
            return
        gammas = tuple(plan.gamma) if plan.gamma else None
        threads = plan.threads if plan.parallel else None
        measured = (stats.seconds - stats.prompt_seconds) / stats.new_tokens
        # against the prediction at the context this run had: a correction learnt on a long run must
        # not read as a slowdown of the calibration (and then be applied to short runs)
        share = long_share(stats.prompt_tokens, stats.new_tokens)
        predicted = self.predict(
            plan.algorithm, gammas, greedy, plan.proposer, lookup=plan.lookup, threads=threads, long_share=share
        )
        ratio = measured / predicted
        key = (plan.algorithm, gammas, plan.lookup, threads)
        old = self.correction.get(key)
        self.correction[key] = ratio if old is None else 0.7 * old + 0.3 * ratio
        self._say_if_slow(stats, plan)

    def _say_if_slow(self, stats, plan: Plan) -> None:
        """Warn (once per process) when llama_decode itself ran far slower than calibrated."""
        global _said_slow
        if _said_slow:
            return
        curves = self.split_curves.get(plan.threads) if plan.parallel and plan.threads else self.curves
        slowdown = calibrated_slowdown(curves, stats) if curves is not None else None
        if slowdown is not None and slowdown > SLOW_WARNING:
            _said_slow = True
            log.warning(
                "warning: the models ran %.1fx slower than this machine's calibration says they run; another "
                "program is probably using the CPU (edge-specens uses fewer threads while it does)",
                slowdown,
            )

    def _corrected(
        self,
        algorithm: str,
        gammas,
        greedy: bool,
        learned: bool = True,
        lookup: int = 0,
        state=None,
        n_tokens: int = SIM_TOKENS,
        threads: tuple[int, ...] | None = None,
        pessimistic: bool = False,
        long_share: float | None = None,
    ) -> float:
        """Prediction times the measured correction for this schedule (or the mean one of its kind)."""
        kw = dict(
            lookup=lookup,
            state=state,
            n_tokens=n_tokens,
            threads=threads,
            pessimistic=pessimistic,
            long_share=long_share,
        )
        if not learned:
            return self.predict(algorithm, gammas, greedy, learned=False, **kw)
        key = (algorithm, gammas, lookup, threads)
        if key in self.correction:
            c = self.correction[key]
        else:
            same = [
                v for (a, _, lk, t), v in self.correction.items() if a == algorithm and lk == lookup and t == threads
            ]
            c = sum(same) / len(same) if same else 1.0
        return self.predict(algorithm, gammas, greedy, **kw) * c

    def say_too_many_to_plan(self) -> None:
        """Why `auto` runs `standard` on this ensemble (once per ensemble, on stderr)."""
        if not self.warned_many:
            self.warned_many = True
            log.warning(
                "note: auto runs standard for %d members (it plans speculation for at most %d: "
                "planning grows with the square of the member count); strategy se (--strategy se) speculates anyway",
                len(self.ens.members),
                AUTO_MAX_MEMBERS,
            )

    # ------------------------------------------------------------------ decisions
    def candidates(self, parallel: bool | None = None):
        """(algorithm, gammas, threads) schedules to weigh; threads None = one after the other,
        else a side-by-side split (parallel: None both kinds, True / False only that kind)."""
        n = len(self.ens.members)
        default = self.ens.default_proposer()
        if parallel is not True:
            yield ("standard", None, None)
            for g in GAMMAS:
                yield ("sd", tuple(g if k == default else 1 for k in range(n)), None)
                yield ("se", tuple(g if k == default else 1 for k in range(n)), None)
            for g in (2, 3):  # let the other members propose more than a bonus token too
                for h in (4, 8):
                    yield ("se", tuple(h if k == default else g for k in range(n)), None)
        if parallel is False:
            return
        for split in self.splits():
            yield ("standard", None, split)
            for g in PIPELINE_AHEAD:  # pipeline.py: the proposer's drafts per round; the others verify
                yield ("se", tuple(g if k == default else 1 for k in range(n)), split)

    def predict(
        self,
        algorithm: str,
        gammas,
        greedy: bool,
        proposer: int | None = None,
        learned: bool = True,
        lookup: int = 0,
        state=None,
        n_tokens: int = SIM_TOKENS,
        threads: tuple[int, ...] | None = None,
        pessimistic: bool = False,
        long_share: float | None = None,
    ) -> float:
        """Predicted seconds per token (lookup > 0: `se` with prompt lookup), from n_tokens simulated;
        threads: side by side on that split (decode/pipeline.py for se and sd); pessimistic: at
        acceptance rates one standard error lower (alphas); long_share: see curves_at."""
        curves = self.curves_at(long_share) if threads is None else self.side_by_side(threads)
        alphas = self.alphas(greedy, learned, state, pessimistic)
        overhead = self.controller(greedy)
        if proposer is None:
            proposer = (
                max(range(len(curves)), key=lambda k: (gammas[k], -self.ens.members[k].n_params)) if gammas else 0
            )
        needed = [k for k in range(len(curves)) if self.ens.spec.needs(k)]
        rates = None
        if lookup and algorithm == "se":
            lr = self.lookup_rates(greedy, learned, state)
            rates = LookupRates(
                round(lr.find_after_miss, 2),
                round(lr.find_after_find, 2),
                round(min(lr.accepted_per_find, lookup), 1),
                round(lr.rejections_per_find, 2),
                round(min(lr.rejected_tail, lookup), 1),
            )
        # simulate the rounded inputs the memo is keyed by: a seeded run's decision must not depend
        # on which nearby estimate happened to be simulated first
        rounded = tuple(round(a, 2) for a in alphas)
        key = (algorithm, gammas, proposer, rounded, rates, n_tokens, threads, overhead, long_share)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        value = simulate(
            algorithm,
            curves,
            rounded,
            gammas,
            proposer,
            needed,
            n_tokens=n_tokens,
            lookup=rates,
            screener=screener(self.ens.spec, self.ens.members) if rates else None,
            parallel=threads is not None,
            overhead=overhead,
        )
        self._memo[key] = value
        return value

    def choose(
        self,
        greedy: bool,
        learned: bool = True,
        state=None,
        parallel: bool | None = None,
        long_share: float | None = None,
    ) -> Choice:
        """The best schedule (algorithm, gammas, predicted speed-up over sequential standard,
        prompt-lookup drafts, side-by-side threads or None).

        learned=False decides from the calibration and the priors alone, so that a seeded
        sampled run picks the same schedule (hence the same tokens) every time; `state`, a
        running generation, adds what it has observed. Every `se` schedule is weighed with
        and without prompt lookup. parallel: None weighs sequential and side-by-side schedules,
        True / False only one kind. Plain sequential standard wins unless another is predicted
        MARGIN faster, and still faster than standard at pessimistic acceptance rates (PESSIMISM).
        """

        def speedup(algorithm, gammas, lookup, threads, n_tokens=SIM_TOKENS, pessimistic=False):
            t = self._corrected(
                algorithm, gammas, greedy, learned, lookup, state, n_tokens, threads, pessimistic, long_share
            )
            return base / t

        def convincing(c: Choice) -> bool:
            """Still faster than standard at acceptance rates one standard error lower (PESSIMISM)."""
            if c.algorithm == "standard":
                return True
            return speedup(c.algorithm, c.gammas, c.lookup, c.threads, pessimistic=True) > 1.0

        base = self._corrected("standard", None, greedy, learned, state=state, long_share=long_share)
        # screen every candidate on a short simulation, then weigh the few best on a full one:
        # the decision is part of a sampled run's time (~0.15 s for full ones of all candidates)
        screened = sorted(
            (
                (speedup(a, g, lk, t, SCREEN_TOKENS), a, g, lk, t)
                for a, g, t in self.candidates(parallel)
                if (a, t) != ("standard", None)
                for lk in ((LOOKUP, 0) if a == "se" else (0,))
            ),
            key=lambda c: -c[0],
        )
        best = Choice("standard", None, 1.0, 0, None)
        for _, algorithm, gammas, lookup, threads in screened[:FINALISTS]:
            s = speedup(algorithm, gammas, lookup, threads)
            if s > best.speedup * (MARGIN if best.algorithm == "standard" and best.threads is None else 1.0):
                c = Choice(algorithm, gammas, s, lookup, threads)
                if convincing(c):
                    best = c
        if parallel and best.threads is None:  # forced side by side: the best of those
            ranked = [(speedup(a, g, lk, t), a, g, lk, t) for _, a, g, lk, t in screened[:FINALISTS]]
            if ranked:
                s, a, g, lk, t = max(ranked, key=lambda c: c[0])
                best = Choice(a, g, s, lk, t)
        return best


def calibrated_slowdown(curves, stats) -> float | None:
    """How many times longer the members' llama_decode calls took than the calibration says calls of
    those sizes cost (None when too little was decoded to tell).

    Both sides count the same thing: each member's own time inside llama_decode, against its curve
    (side by side: the curves measured side by side) for the calls it made, at their average batch
    size. The seconds per token the cost model predicted are no yardstick for this: they leave out
    the controller's own work, which dominates on tiny models (760 tok/s was reported as "5.6x
    slower"), and they assume an acceptance rate the text may not have had."""
    expected = measured = 0.0
    seconds = getattr(stats, "member_seconds", None) or ()
    for curve, calls, tokens, spent in zip(curves, stats.member_calls, stats.member_tokens, seconds):
        if calls and tokens:
            expected += calls * curve.at(tokens / calls)
            measured += spent
    if expected <= 0 or measured < SLOW_MIN_SECONDS:
        return None
    return measured / expected


class Choice(NamedTuple):
    algorithm: str
    gammas: tuple[int, ...] | None
    speedup: float  # predicted, over sequential standard
    lookup: int
    threads: tuple[int, ...] | None  # side by side on this split; None = one after the other


def candidate_splits(cores: int, sizes: Sequence[int | None]) -> list[tuple[int, ...]]:
    """Thread splits of `cores` over members of these sizes (None: on another machine, no cores
    here): the even split, and for two local members a quarter and three quarters each way. None
    when there are fewer cores than local members."""
    local = [k for k, s in enumerate(sizes) if s is not None]
    if cores < len(local):
        return []
    out = [even_split(cores, sizes)]
    if len(local) == 2 and cores >= 4:
        for a in (cores // 4, cores - cores // 4):
            split = [1] * len(sizes)
            split[local[0]], split[local[1]] = a, cores - a
            out.append(tuple(split))
    return list(dict.fromkeys(out))


def _lookup_prior(greedy: bool) -> LookupStats:
    """Pseudo-counts that give LOOKUP_PRIOR's rates."""
    return LookupStats.from_rates(LOOKUP_PRIOR[greedy], LOOKUP_PRIOR_TRIES)


def _live_or_shadow(live: LookupStats, shadow: LookupStats) -> LookupStats:
    """What lookup did, or (when it was off) what it would have done."""
    return live if live.tries else shadow


# the answer length a generation's costs are weighed over (long_share): max_tokens, up to this
ANSWER_SPAN = 256


def long_share(position: int | None, max_tokens: int) -> float | None:
    """The share of a generation's positions more than CONTEXT tokens in, for one starting after
    `position` prompt tokens and answering up to max_tokens (at most ANSWER_SPAN) tokens; rounded to
    tenths (a decision must not hinge on one token of prompt). None: position unknown."""
    if position is None:
        return None
    span = max(1, min(max_tokens, ANSWER_SPAN))
    past = min(span, max(0, position + span - CONTEXT))
    return round(past / span, 1)


def auto_plan(
    ens,
    gamma,
    sampling: SamplingParams,
    lookup: int | None = None,
    parallel: bool | None = None,
    position: int | None = None,
) -> Plan:
    """The plan `auto` runs now, for a generation after `position` prompt tokens (None: unknown). An
    explicit gamma (or lookup, or parallel) fixes that part of the schedule."""
    if len(ens.members) == 1:
        return make_plan(ens, "single", None)
    if not all(m.can_rollback for m in ens.members):
        return replace(make_plan(ens, "standard", None, parallel=parallel), name="auto")
    sched = ens.scheduler
    if gamma is not None:
        p = make_plan(ens, "se", gamma, lookup, parallel)
        return replace(p, name="auto", algorithm="se", observe=0)
    if len(ens.members) > AUTO_MAX_MEMBERS:
        sched.say_too_many_to_plan()
        return replace(make_plan(ens, "standard", None, parallel=parallel), name="auto")
    share = long_share(position, sampling.max_tokens)
    if not sampling.greedy and sampling.seed is not None:
        return _warm_up_plan(ens, sched, lookup, parallel, share)
    _measure_now(sched, parallel)
    c = sched.choose(sampling.greedy, parallel=parallel, long_share=share)
    return _auto(ens, c, lookup if lookup is not None and c.algorithm == "se" else c.lookup)


def _measure_now(sched: Scheduler, parallel: bool | None) -> None:
    """Calibrate before the generation starts: measuring clears the members' caches."""
    sched.calibrate()
    if parallel is not False:
        for split in sched.splits():
            sched.side_by_side(split)


def _auto(ens, c: Choice, lookup: int, observe: int = OBSERVE_EVERY) -> Plan:
    algorithm = c.algorithm
    p = make_plan(ens, algorithm, c.gammas, lookup) if algorithm != "standard" else make_plan(ens, "standard")
    if c.threads is not None:
        p = side_by_side(ens, p, c.threads)
    return replace(
        p,
        name="auto",
        algorithm=algorithm,
        observe=observe if algorithm == "standard" else 0,
        predicted_speedup=c.speedup,
        shadow_lookup=0 if p.lookup else LOOKUP,
    )


def _warm_up_plan(ens, sched: Scheduler, lookup: int | None, parallel: bool | None, share: float | None) -> Plan:
    """A seeded sampled run must reproduce, so it may not use what auto learned since loading
    (the schedule decides which random numbers are drawn). It runs `standard` for WARMUP tokens,
    observing every member's would-be acceptance and what prompt lookup would have found, then
    switches to the schedule those observations and the priors predict fastest: the same seed
    observes the same and so decides the same."""

    def switch(state) -> Plan:
        c = sched.choose(False, learned=False, state=state, parallel=parallel, long_share=share)
        chosen = lookup if lookup is not None and c.algorithm == "se" else c.lookup
        # standard from here on: stop observing, it costs ~1.5% of a sampled token
        return _auto(ens, c, chosen, observe=0)

    _measure_now(sched, parallel)  # now: measuring later would clear the members' caches mid-generation
    return replace(
        make_plan(ens, "standard", parallel=parallel),
        name="auto",
        algorithm="standard",
        observe=1,
        shadow_lookup=LOOKUP,
        warmup=WARMUP,
        switch=switch,
    )


def predict_speedup(ens, plan: Plan, sampling: SamplingParams, position: int | None = None) -> float | None:
    """Predicted tokens/s of `plan` relative to `standard` on this machine, for a generation after
    `position` prompt tokens (None for single, and for a seeded sampled `auto`, which decides only
    after its warm-up, run by run)."""
    if (plan.algorithm == "standard" and plan.name == "single") or plan.switch is not None:
        return None
    if plan.predicted_speedup is not None:
        return plan.predicted_speedup
    sched = ens.scheduler
    share = long_share(position, sampling.max_tokens) if plan.threads is None else None
    base = sched.predict("standard", None, sampling.greedy, long_share=share)
    threads = plan.threads if plan.parallel else None
    if plan.algorithm == "standard" and threads is None:
        return 1.0
    if threads is not None and threads not in sched.split_curves and threads not in sched.splits():
        return None  # a split nobody measured: measuring now would clear the caches mid-generation
    gammas = tuple(plan.gamma) if plan.gamma else None
    return base / sched.predict(
        plan.algorithm, gammas, sampling.greedy, plan.proposer, lookup=plan.lookup, threads=threads, long_share=share
    )
