"""`auto`: pick the strategy and gammas that are fastest on this machine, never slower than standard.

Inputs: each member's measured batch-cost curve (calibrate.py) and each member's
acceptance rate, learned from every generation (from verified drafts, or, while
running `standard`, from what each member's draft would have been accepted with).
The cost model (costmodel.py) predicts seconds per token for each candidate; auto
runs the best one only if it beats `standard` by a margin, else `standard`.
"""

from __future__ import annotations

from dataclasses import replace

from .calibrate import cost_curve
from .costmodel import simulate
from .params import SamplingParams
from .plan import Plan, make_plan

PRIOR_ACCEPTANCE = 0.85  # before anything is observed: members must share a tokenizer, so they are close kin
PRIOR_WEIGHT = 8.0  # pseudo-observations behind the prior
DECAY = 0.98  # older observations fade, so the estimate follows the current workload
MARGIN = 1.05  # speculate only if predicted to be at least 5% faster than standard
GAMMAS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)
LOOKUP = 16  # prompt-lookup drafts per round when auto uses them (the cap adapts below this)
# Free prompt-lookup drafts are not in the cost model. Until its speed is measured, a schedule
# with lookup is assumed 10% faster than predicted (it costs nothing when nothing matches, and
# echoed code makes it far faster); measurements then replace this guess.
LOOKUP_PRIOR_CORRECTION = 0.9


class Scheduler:
    def __init__(self, ens):
        self.ens = ens
        self.curves = None
        # acceptance per member, separately for greedy and sampled decoding: [accepted, verified]
        self.counts = {g: [[PRIOR_ACCEPTANCE * PRIOR_WEIGHT, PRIOR_WEIGHT] for _ in ens.members] for g in (True, False)}
        self._memo: dict = {}
        # measured / predicted seconds per token, per schedule: corrects what the model misses
        self.correction: dict = {}

    # ------------------------------------------------------------------ inputs
    def calibrate(self, force: bool = False):
        if self.curves is None or force:
            self.curves = [cost_curve(m, force=force) for m in self.ens.members]
        return self.curves

    def alphas(self, greedy: bool, learned: bool = True) -> list[float]:
        if not learned:
            return [PRIOR_ACCEPTANCE] * len(self.ens.members)
        return [min(0.999, a / v) if v else PRIOR_ACCEPTANCE for a, v in self.counts[greedy]]

    def observe(self, stats, greedy: bool, plan: Plan | None = None) -> None:
        """Fold one generation's per-member acceptance (and measured speed) into the estimates."""
        if plan is not None:
            self._observe_speed(stats, greedy, plan)
        for k, (acc, ver) in enumerate(zip(stats.accepted_by, stats.verified_by)):
            if ver:
                c = self.counts[greedy][k]
                decay = DECAY ** ver
                c[0] = c[0] * decay + acc
                c[1] = c[1] * decay + ver

    def _observe_speed(self, stats, greedy: bool, plan: Plan) -> None:
        if (plan.algorithm not in ("se", "sd", "standard") or len(plan.members) != len(self.ens.members)
                or stats.new_tokens < 8 or self.curves is None):
            return
        gammas = tuple(plan.gamma) if plan.gamma else None
        measured = (stats.seconds - stats.prompt_seconds) / stats.new_tokens
        ratio = measured / self.predict(plan.algorithm, gammas, greedy, plan.proposer)
        key = (plan.algorithm, gammas, plan.lookup)
        old = self.correction.get(key)
        self.correction[key] = ratio if old is None else 0.7 * old + 0.3 * ratio

    def _corrected(self, algorithm: str, gammas, greedy: bool, learned: bool = True, lookup: int = 0) -> float:
        """Prediction times the measured correction for this schedule (or the mean one of its kind)."""
        if not learned:
            return self.predict(algorithm, gammas, greedy, learned=False)
        key = (algorithm, gammas, lookup)
        if key in self.correction:
            c = self.correction[key]
        else:
            same = [v for (a, _, lk), v in self.correction.items() if a == algorithm and lk == lookup]
            c = sum(same) / len(same) if same else (LOOKUP_PRIOR_CORRECTION if lookup else 1.0)
        return self.predict(algorithm, gammas, greedy) * c

    # ------------------------------------------------------------------ decisions
    def candidates(self):
        n = len(self.ens.members)
        default = self.ens.default_proposer()
        yield ("standard", None)
        for g in GAMMAS:
            yield ("sd", tuple(g if k == default else 1 for k in range(n)))
            yield ("se", tuple(g if k == default else 1 for k in range(n)))
        for g in (2, 3):  # let the other members propose more than a bonus token too
            for h in (4, 8):
                yield ("se", tuple(h if k == default else g for k in range(n)))

    def predict(self, algorithm: str, gammas, greedy: bool, proposer: int | None = None,
                learned: bool = True) -> float:
        """Predicted seconds per token."""
        curves = self.calibrate()
        alphas = self.alphas(greedy, learned)
        if proposer is None:
            proposer = max(range(len(curves)), key=lambda k: (gammas[k], -self.ens.members[k].n_params)) if gammas else 0
        needed = [k for k in range(len(curves)) if self.ens.spec.needs(k)]
        key = (algorithm, gammas, proposer, tuple(round(a, 2) for a in alphas))
        if key not in self._memo:
            self._memo[key] = simulate(algorithm, curves, alphas, gammas, proposer, needed)
        return self._memo[key]

    def choose(self, greedy: bool, learned: bool = True) -> tuple[str, tuple | None, float, int]:
        """Best (algorithm, gammas, predicted speed-up over standard, prompt-lookup drafts).

        learned=False decides from the calibration and the prior alone, so that a seeded
        sampled run picks the same schedule (hence the same tokens) every time. Prompt lookup
        is offered for greedy decoding, where echoed text is verified exactly as it repeats.
        """
        base = self._corrected("standard", None, greedy, learned)
        best = ("standard", None, 1.0, 0)
        lookups = (LOOKUP, 0) if greedy and learned else (0,)
        for algorithm, gammas in self.candidates():
            if algorithm == "standard":
                continue
            for lookup in lookups if algorithm == "se" else (0,):
                speedup = base / self._corrected(algorithm, gammas, greedy, learned, lookup)
                if speedup > best[2] * (MARGIN if best[0] == "standard" else 1.0):
                    best = (algorithm, gammas, speedup, lookup)
        return best


def _scheduler(ens) -> Scheduler:
    if ens._scheduler is None:
        ens._scheduler = Scheduler(ens)
    return ens._scheduler


def auto_plan(ens, gamma, sampling: SamplingParams, lookup: int | None = None) -> Plan:
    """The plan `auto` runs now. An explicit gamma (or lookup) fixes that part of the schedule."""
    if len(ens.members) == 1:
        return make_plan(ens, "single", None)
    if not all(m.can_rollback for m in ens.members):
        return replace(make_plan(ens, "standard", None), name="auto")
    sched = _scheduler(ens)
    if gamma is not None:
        p = make_plan(ens, "se", gamma, lookup)
        return replace(p, name="auto", algorithm="se", observe=False)
    # a seeded sampled run must reproduce: decide without what was learned since loading
    learned = sampling.greedy or sampling.seed is None
    algorithm, gammas, speedup, chosen_lookup = sched.choose(sampling.greedy, learned)
    if lookup is not None and algorithm == "se":
        chosen_lookup = lookup
    p = make_plan(ens, algorithm, gammas, chosen_lookup) if algorithm != "standard" else make_plan(ens, "standard")
    return replace(p, name="auto", algorithm=algorithm, observe=(algorithm == "standard"), predicted_speedup=speedup)


def predict_speedup(ens, plan: Plan, sampling: SamplingParams) -> float | None:
    """Predicted tokens/s of `plan` relative to `standard` on this machine (None for single)."""
    if plan.algorithm == "standard" and plan.name == "single":
        return None
    if plan.predicted_speedup is not None:
        return plan.predicted_speedup
    sched = _scheduler(ens)
    base = sched.predict("standard", None, sampling.greedy)
    if plan.algorithm == "standard":
        return 1.0
    return base / sched.predict(plan.algorithm, tuple(plan.gamma), sampling.greedy, plan.proposer)
