"""`sd`: speculative decoding with one fixed proposer (the paper's WE-SD / CD-SD baseline).

The proposer drafts gamma tokens from its own q; every other member scores them
in one batch; drafts are accepted with min(1, r/q) and the first rejection is
replaced from norm(max(0, r - q)). When all drafts pass, the verifiers already
hold r's rows at the next position, so the proposer's catch-up makes r
available there and a token is sampled from r directly: the classic bonus token
(weights = [0, 1] is plain speculative decoding).
"""

from __future__ import annotations

from collections.abc import Generator

from .state import DecodeState, Step


def sd(state: DecodeState, proposer: int, gamma: int) -> Generator[Step, None, None]:
    verifiers = [k for k in state.needed if k != proposer]
    while True:
        yield from state.run(proposer, gamma, catch_up=True)
        for k in verifiers:
            state.score(k)
        yield from state.settle()
