"""How many threads llama.cpp should use right now: all cores, minus those other programs keep busy.

Users' machines are never idle. llama.cpp splits every decode across its threads and waits at a
barrier for the slowest; when another program keeps one of two cores busy, one of our threads gets
half a core, the other spins waiting for it, and generation slows 2.4-4.1x (measured on a 2-core CPU
with a busy loop alongside). With one thread fewer it slowed 1.5-1.9x. So by default members follow
this governor: every INTERVAL_S while decoding it reads how much CPU other processes used since the
last look (cpu_seconds) and sets the thread count to the cores left, never below 1. On an idle
machine that is every core, as before. Threads the user chose (-t) are kept.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Sequence

INTERVAL_S = 0.2  # how often the machine's load is looked at (one small file read, ~20 us)
STALE_S = 1.0  # a longer gap (nothing decoded) says nothing about the load now: start a new window
SPARE_FRACTION = 0.5  # another program using at least half a core costs us one thread


def cpu_seconds() -> tuple[float, float, float] | None:
    """(seconds the whole machine has been busy, seconds stolen by the hypervisor, seconds this
    process has used), from Linux /proc/stat and os.times(); None where there is no /proc/stat.
    What other processes used between two looks is the busy difference minus our own."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tck = os.sysconf("SC_CLK_TCK")
    busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / tck  # user nice system irq softirq
    steal = v[7] / tck if len(v) > 7 else 0.0
    t = os.times()
    return busy, steal, t.user + t.system


class CpuGovernor:
    def __init__(self, cores: int):
        self.cores = cores
        self.target = cores
        self._lock = threading.Lock()
        self._last = self._sample()
        self._t = time.monotonic()

    @staticmethod
    def _sample() -> tuple[float, float] | None:
        """(seconds the whole machine has been busy, seconds this process has used)."""
        s = cpu_seconds()
        return None if s is None else (s[0], s[2])

    def threads(self) -> int:
        """The thread count to use now (re-evaluated at most every INTERVAL_S)."""
        now = time.monotonic()
        if now - self._t < INTERVAL_S or self._last is None:
            return self.target
        with self._lock:
            if now - self._t < INTERVAL_S:
                return self.target
            cur = self._sample()
            if cur is not None and self._last is not None and now - self._t < STALE_S:
                elapsed = now - self._t
                other = ((cur[0] - self._last[0]) - (cur[1] - self._last[1])) / elapsed  # cores others used
                self.target = max(1, min(self.cores, self.cores - int(other + SPARE_FRACTION)))
            self._last, self._t = cur, now
        return self.target


def even_split(cores: int, sizes: Sequence[int | None]) -> tuple[int, ...]:
    """cores split evenly over members (at least one each); the largest members get the rest. A
    size of None marks a member on another machine (remote/): it computes there, so it takes no
    cores here (its one thread only waits for the network)."""
    local = [k for k, s in enumerate(sizes) if s is not None]
    share = [1] * len(sizes)
    for k in local:
        share[k] = max(1, cores // len(local))
    for k in sorted(local, key=lambda k: -(sizes[k] or 0))[: max(0, cores - sum(share[k] for k in local))]:
        share[k] += 1
    return tuple(share)


def placement_sizes(members: Sequence) -> list[int | None]:
    """What even_split weighs: each member's size, None for one on another machine."""
    return [None if m.device.startswith("rpc:") else m.n_params for m in members]


@functools.cache
def governor() -> CpuGovernor:
    """One per process: the load is the machine's, shared by every member."""
    return CpuGovernor(max(1, os.cpu_count() or 1))
