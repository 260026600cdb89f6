"""Resolve a strategy name and gamma into a Plan: which members run and how.

`auto` lives in the auto package; everything else is decided here from the request.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace

from ..errors import InvalidParameterError, UnsupportedModelError
from ..member import pinned
from ..params import STRATEGIES, EnsembleSpec
from ..vocabulary.follower_member import is_follower
from .pipeline import pipelined
from .sd import sd
from .se import se
from .standard import standard
from .state import DecodeState, Step

# Bounds on what a request may ask for: past them nothing gets faster (a proposal is verified in
# batches of at most member.MAX_OUTPUTS rows, and lookup drafts stop at LOOKUP_PENDING_MAX pending),
# but the work a request can cause (drafting, the cost model's simulation) must not grow with it.
MAX_GAMMA = 64
MAX_LOOKUP = 64
DEFAULT_GAMMA = 6  # the default proposer's proposal length until `auto` measures better (docs/design.md §6)


@dataclass(frozen=True)
class Plan:
    name: str
    members: tuple[int, ...]  # indices into the ensemble, in the order the state sees them
    spec: EnsembleSpec  # restricted to `members`
    gamma: tuple[int, ...] | None
    proposer: int | None  # index into `members`
    speculative: bool
    algorithm: str = ""  # the loop that runs: "se" | "sd" | "standard" (name may say "auto")
    observe: int = 0  # N > 0: record every member's would-be acceptance at every N-th position (auto)
    predicted_speedup: float | None = None
    lookup: int = 0  # se: up to this many free prompt-lookup drafts when nothing is pending (0 = off)
    shadow_lookup: int = 0  # record what lookup of this many drafts would have done (auto, lookup off)
    # auto, seeded and sampled: after `warmup` committed tokens, run switch(state)'s plan instead
    # (decided from what this generation observed, so the same seed decides alike)
    warmup: int = 0
    switch: Callable[[DecodeState], Plan] | None = None
    # members side by side, each on its own worker (standard: all at once; se/sd: pipeline.py)
    parallel: bool = False
    # llama.cpp threads per plan member while this plan runs (a side-by-side split); None: as loaded
    threads: tuple[int, ...] | None = None

    def __post_init__(self):
        if not self.algorithm:
            object.__setattr__(self, "algorithm", "standard" if self.name == "single" else self.name)

    def state_options(self) -> dict:
        """What the decode state records and proposes under this plan (DecodeState's keywords)."""
        return dict(lookup=self.lookup, shadow_lookup=self.shadow_lookup, observe_every=self.observe)

    def start(self, state: DecodeState) -> Generator[Step, None, None]:
        """The step generator of this plan on `state` (built with this plan's state_options)."""
        if self.switch is None:
            return self._loop(state)
        return self._switching(state)

    def _switching(self, state: DecodeState) -> Generator[Step, None, None]:
        """This plan's loop for `warmup` tokens, then the loop of the plan switch() picks. Every
        strategy only reads the shared state, so a new loop can take over between tokens."""
        steps = self._loop(state)
        n = 0
        for step in steps:
            yield step
            n += 1
            if n >= self.warmup and not state.pending:
                break
        else:
            return
        steps.close()
        assert self.switch is not None
        state.switched_to = nxt = self.switch(state)
        state.switched_after = n
        state.reconfigure(**nxt.state_options())
        yield from nxt.start(state)

    def _loop(self, state: DecodeState) -> Generator[Step, None, None]:
        if self.threads is not None:
            return _placed(state, self.threads, self._steps(state))
        return self._steps(state)

    def _steps(self, state: DecodeState) -> Generator[Step, None, None]:
        if self.algorithm not in ("se", "sd"):
            return standard(state, side_by_side=self.parallel)
        assert self.gamma is not None and self.proposer is not None  # speculative plans have both
        if self.parallel:
            return pipelined(state, self.proposer, self.gamma[self.proposer])
        if self.algorithm == "se":
            return se(state, self.gamma, self.proposer)
        return sd(state, self.proposer, self.gamma[self.proposer])


def _placed(state: DecodeState, threads: Sequence[int], steps: Generator[Step, None, None]):
    """Run `steps` with each member pinned to its share of the threads, then give the members back
    their own settings (the split is the plan's; the next plan may run them one after the other)."""
    with pinned(state.members, threads):
        try:
            yield from steps
        finally:
            steps.close()


def parse_gamma(gamma, n: int) -> tuple[int, ...] | int | None:
    """gamma: None, an int (the default proposer's length) or one int per member."""
    if gamma is None:
        return None
    if isinstance(gamma, str):
        parts = [p for p in gamma.replace(" ", "").split(",") if p]
        try:
            gamma = [int(p) for p in parts]
        except ValueError:
            raise InvalidParameterError(f"gamma must be integers separated by commas, got {gamma!r}") from None
        if len(gamma) == 1:
            gamma = gamma[0]
    if isinstance(gamma, bool):
        raise InvalidParameterError(f"gamma must be an int or a list of ints, got {gamma!r}")
    if isinstance(gamma, int):
        if not 1 <= gamma <= MAX_GAMMA:
            raise InvalidParameterError(f"gamma must be between 1 and {MAX_GAMMA}, got {gamma}")
        return gamma
    try:
        g = tuple(gamma)
    except TypeError:
        raise InvalidParameterError(f"gamma must be an int or a list of ints, got {gamma!r}") from None
    if len(g) != n:
        raise InvalidParameterError(f"gamma has {len(g)} values for {n} members")
    for v in g:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_GAMMA:
            raise InvalidParameterError(f"every gamma must be an integer between 1 and {MAX_GAMMA}, got {list(g)}")
    return g


def parse_lookup(lookup) -> int:
    if lookup is None:
        return 0
    if isinstance(lookup, bool) or not isinstance(lookup, int) or not 0 <= lookup <= MAX_LOOKUP:
        raise InvalidParameterError(f"lookup must be an integer between 0 (off) and {MAX_LOOKUP}, got {lookup!r}")
    return lookup


def make_plan(ens, strategy: str, gamma=None, lookup: int | None = None, parallel: bool | None = None) -> Plan:
    """Build the plan for `strategy` ('auto' must be resolved by the caller first).

    lookup: prompt-lookup drafts per round for `se` (0 = off); ignored by the other strategies.
    parallel: True runs the members side by side (nothing to do for `single`); None or False, one
    after the other.
    """
    plan = _make_plan(ens, strategy, gamma, lookup)
    if parallel and len(plan.members) > 1:
        return side_by_side(ens, plan)
    return plan


def side_by_side(ens, plan: Plan, threads: Sequence[int] | None = None) -> Plan:
    """`plan` with its members side by side, on `threads` (default: the ensemble's split)."""
    split = tuple(threads) if threads is not None else ens.side_by_side_threads(plan.members)
    return replace(plan, parallel=True, threads=split)


def _make_plan(ens, strategy: str, gamma=None, lookup: int | None = None) -> Plan:
    n = len(ens.members)
    lookup = parse_lookup(lookup)
    if not isinstance(strategy, str):
        raise InvalidParameterError(f"strategy must be a string, got {strategy!r}")
    name, _, arg = strategy.partition(":")
    if name not in STRATEGIES or (arg and name != "single"):
        raise InvalidParameterError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    g = parse_gamma(gamma, n)
    if name == "single" or n == 1:
        k = ens.single_member() if not arg else _member_index(arg, n)
        if is_follower(ens.members[k]):
            raise InvalidParameterError(
                f"single:{k}: member {k} follows the primary's vocabulary (its own differs), and alone it would "
                "sit out the positions inside a character it has not finished reading; run a member that shares "
                "the primary's vocabulary, or load it as the primary (primary=N)"
            )
        one = EnsembleSpec.build(1, "we", [1.0])
        return Plan("single", (k,), one, None, None, False)
    if name == "standard":
        return Plan("standard", tuple(range(n)), ens.spec, None, None, False)
    blocked = [m.name for m in ens.members if not m.can_rollback]
    if blocked:
        raise UnsupportedModelError(
            f"{', '.join(blocked)} cannot roll back its KV cache (recurrent model), so "
            f"'{name}' cannot speculate; use strategy 'standard'"
        )
    gammas = resolve_gammas(ens, g)
    proposer = max(range(n), key=lambda k: (gammas[k], -ens.members[k].n_params))
    return Plan(name, tuple(range(n)), ens.spec, gammas, proposer, True, lookup=lookup if name == "se" else 0)


def resolve_gammas(ens, g) -> tuple[int, ...]:
    n = len(ens.members)
    if isinstance(g, tuple):
        return g
    default = ens.default_proposer()
    length = g if isinstance(g, int) else None
    if length is None:
        if ens.default_gamma is not None:
            return tuple(ens.default_gamma)
        length = DEFAULT_GAMMA
    return tuple(length if k == default else 1 for k in range(n))


def _member_index(arg: str, n: int) -> int:
    try:
        k = int(arg)
    except ValueError:
        raise InvalidParameterError(f"single:N needs a member index, got {arg!r}") from None
    if not 0 <= k < n:
        raise InvalidParameterError(f"member index {k} out of range (0..{n - 1})")
    return k
