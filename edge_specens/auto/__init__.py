"""`auto`: choose the strategy and proposal lengths that are fastest on this machine.

    auto_plan(ens, gamma, sampling, lookup)   the Plan `auto` runs now (scheduler.py)
    predict_speedup(ens, plan, sampling)      predicted speed relative to `standard`
    Scheduler                                  what is learned per ensemble (acceptance, lookup rates, speed)
The cost model (costmodel.py) replays the decode moves on abstract tokens with the batch costs
measured by calibrate.py. The core imports this package only lazily, from `Ensemble.plan`.
"""

from .scheduler import LOOKUP, Scheduler, auto_plan, predict_speedup

__all__ = ["LOOKUP", "Scheduler", "auto_plan", "predict_speedup"]
