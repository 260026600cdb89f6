"""`auto`: choose the strategy and gammas. Placeholder until calibration lands (issue 4):
speculate with the default schedule when every member can roll back, else `standard`."""

from __future__ import annotations

from .params import SamplingParams
from .plan import Plan, make_plan


def auto_plan(ens, gamma, sampling: SamplingParams) -> Plan:
    if len(ens.members) == 1:
        return make_plan(ens, "single", None)
    if not all(m.can_rollback for m in ens.members):
        return make_plan(ens, "standard", None)
    p = make_plan(ens, "se", gamma)
    return Plan("auto", p.members, p.spec, p.gamma, p.proposer, True, algorithm="se")


def predict_speedup(ens, plan: Plan, sampling: SamplingParams) -> float | None:
    """Predicted tokens/s of `plan` relative to `standard` on this machine (None if unknown).

    Placeholder until calibration lands; the bench shows it next to the measured ratio.
    """
    return None
