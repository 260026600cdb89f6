"""`standard` (and `single`): every member decodes the last token, then sample from r.

n model calls per token: the slow reference every other strategy must match.
`single` is this loop over a one-member ensemble. Side by side, every member decodes the
last token at once on its own worker (workers.py): a token then costs the slowest member,
not the sum of them.
"""

from __future__ import annotations

from collections.abc import Generator

from .state import DecodeState, Step


def standard(state: DecodeState, side_by_side: bool = False) -> Generator[Step, None, None]:
    while True:
        if side_by_side:
            state.score_all(state.needed)
        else:
            for k in state.needed:
                state.score(k)
        yield from state.settle()
