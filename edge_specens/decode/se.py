"""`se`: Speculative Ensemble, the alternate proposal framework (Fu et al. 2025, docs/design.md §3).

The whole algorithm, with the moves from state.py:

  loop:
    nothing pending          -> the default proposer (largest gamma) runs
    unscreened lookup drafts -> the screener runs (the cheapest member whose choice predicts r's):
                                it cuts them after the first one it would not pick itself
    otherwise                -> the member that has scored the fewest pending positions runs
    a member k that runs:
      score(k)   one batch over every pending token it has not seen: its rows at each
                 pending position plus one more
      settle()   verify front to back while every member has scored the first pending
                 token: accept with min(1, r(x)/origin(x)), else commit a sample from
                 norm(max(0, r - origin)), drop all pending tokens, roll back the caches
      draft      from its extra row k samples a bonus token (origin = its own q),
                 then gamma_k - 1 more drafts of its own

Verifying before k drafts (rather than after) is equally exact, since proposals may
depend on anything already decided, and it avoids drafting on top of a rejected token.
With gamma = 1 for every member each call yields at least one verified token.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from .state import DecodeState, Step


def se(state: DecodeState, gammas: Sequence[int], default: int) -> Generator[Step, None, None]:
    """With state.lookup enabled, members first propose free prompt-lookup drafts (lookup.py)."""
    candidates = sorted(set(state.needed) | {default})
    lookup = state.lookup.enabled
    while True:
        if not state.pending:
            k = default
            if state.abstains(k):  # a follower inside a split character: the next member that can proposes
                k = next((j for j in candidates if not state.abstains(j)), default)
        elif lookup and state.unscreened():
            k = state.screener  # it may cut the lookup drafts short before the others score them
        else:
            k = min(candidates, key=state.scored)
        yield from state.run(k, gammas[k])
