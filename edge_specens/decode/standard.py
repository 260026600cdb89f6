"""`standard` (and `single`): every member decodes the last token, then sample from r.

n model calls per token: the slow reference every other strategy must match.
`single` is this loop over a one-member ensemble.
"""

from __future__ import annotations

from collections.abc import Generator

from .state import DecodeState, Step


def standard(state: DecodeState) -> Generator[Step, None, None]:
    while True:
        for k in state.needed:
            state.score(k)
        yield from state.settle()
