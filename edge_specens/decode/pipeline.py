"""Pipelined speculation: `se` and `sd` with members side by side (docs/design.md §10).

Sequential speculation makes every member wait for the others. Here the roles are fixed and
every round runs all members at once, each on its own worker:

  round:
    every verifier (each member r needs, but the proposer) scores, in one batch, every pending
    token it has not seen;
    meanwhile the proposer catches up on the same tokens and drafts `ahead` more past them,
    as if the pending ones will be accepted (prompt-lookup drafts first, when lookup is on);
    then settle(): verify front to back as far as every member has scored. A rejection drops
    every pending draft, the ones drafted ahead included, and rolls the caches back.

A verifier's batch gives it a row one past the tokens it scored, so the proposer's first draft
of the round is verified in the same settle. Verification is settle(), unchanged, so the output
is exactly r. What is drafted depends only on the state at the start of the round (the
proposer's job sees no verifier result) and on the proposer's own random stream, never on
which worker finished first: a seeded run gives the same tokens on a busy machine, and the same
when the jobs run one after the other (workers.Inline). As in PEARL (Liu et al., ICLR 2025)
and AMUSD, the proposer drafts while the verifiers score; unlike them, the number it drafts
ahead is fixed, not "until the verifier is done", so timing never changes the output.
"""

from __future__ import annotations

from collections.abc import Generator

from .state import DecodeState, Step


def pipelined(state: DecodeState, proposer: int, ahead: int) -> Generator[Step, None, None]:
    verifiers = [k for k in state.needed if k != proposer]
    while True:
        seq = state.sequence()  # the verifiers' snapshot: the proposer appends drafts meanwhile
        scoring = [k for k in verifiers if state.unseen(k)]
        jobs = [state.pool.submit(k, state.evaluate, k, seq) for k in scoring]
        jobs.append(state.pool.submit(proposer, state.propose, proposer, ahead))
        results = state.pool.gather(jobs)
        for k, result in zip(scoring, results):
            state.record(k, result, screen=False)
        yield from state.settle()
