"""The one wrapper around every strategy: tokens in, text pieces and stats out.

Strategies only commit tokens. This module adds what every caller needs once:
end-of-generation tokens, max_tokens, stop strings, the context limit, incremental
text, timing and per-member counts. `Ensemble.generate` collects its events and
`Ensemble.stream` forwards them; a caller's `break` runs the `finally` below.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .constrain import Constraint
from .decode import DecodeState, Step
from .errors import EnsembleClosedError, GenerationCancelledError, GenerationSupersededError, MemberLostError
from .logprobs import TokenLogprob
from .member import pinned
from .params import SamplingParams
from .result import GenerationResult, GenerationStats
from .textstream import TextStream
from .turns import Turn, Turns


@dataclass(slots=True)
class Event:
    """A committed token and the text it released (may be '' while held back)."""

    token: int
    text: str
    step: Step


class Generation:
    """One running generation: iterate it for Events (or text_pieces() for text), then read .result.

    on_finish(generation) runs once the result exists, however the generation ended (the
    facade records it there: `last_result`, and what `auto` learns).
    """

    def __init__(
        self,
        ensemble,
        prompt: Sequence[int],
        sampling: SamplingParams,
        plan,
        seed: int,
        on_finish: Callable[[Generation], None] | None = None,
        turn: Turn | None = None,
        cancel: threading.Event | None = None,
    ):
        self.ens = ensemble
        self.on_finish = on_finish
        # the ensemble's turn (turns.py): llama.cpp work happens only inside turn.step()
        self.turn = turn if turn is not None else Turns().begin()
        self.cancel = cancel  # set by another thread: stop within one prefill chunk or one decode step
        self.constraint: Constraint | None = None  # structured output (constrain.py)
        self.logprobs: int | None = None  # report log-probabilities under r with this many alternatives
        self.token_logprobs: list[TokenLogprob] = []
        self.prompt = list(prompt)
        self.sampling = sampling
        self.plan = plan  # decode.plan.Plan: name, members used, how to build the step generator
        self.seed = seed
        self.tokens: list[int] = []
        self.text = TextStream(sampling.stop)
        self.finish_reason = "length"
        self.result: GenerationResult | None = None

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def __iter__(self) -> Generator[Event, None, None]:
        try:
            yield from self._run()
        except MemberLostError as e:  # what was generated is kept: the caller reads it here
            e.result = self.result
            raise
        finally:
            self.turn.end()

    def _run(self) -> Generator[Event, None, None]:
        ens, plan, turn = self.ens, self.plan, self.turn
        members = [ens.members[k] for k in plan.members]
        before = [m.stats.snapshot() for m in ens.members]
        t0 = time.perf_counter()
        max_len = min(m.n_ctx for m in members)
        # prefill: every member reads the prompt but its last token, timed apart so that
        # decode speed can be compared between strategies
        fits = len(self.prompt) < max_len
        reused = 0
        note = None
        lost: MemberLostError | None = None
        with turn.step():
            try:
                reused = self._prefill(members, fits)
            except GenerationCancelledError:
                note = "cancelled"
            except MemberLostError as e:
                lost = e
        prompt_seconds = time.perf_counter() - t0
        state = DecodeState(
            members,
            plan.spec,
            self.sampling,
            np.random.default_rng(self.seed),
            self.prompt,
            ens.n_vocab,
            max_len,
            draft_limit=len(self.prompt) + self.sampling.max_tokens,
            pool=ens.workers,
            constraint=self.constraint,
            logprobs=self.logprobs,
            **plan.state_options(),
        )
        waited = ens.workers.wait_seconds
        steps = plan.start(state)
        proposed = [0] * len(ens.members)
        try:
            if lost is not None:
                raise lost
            if note is not None:  # cancelled while reading the prompt
                return
            if len(self.prompt) >= max_len:
                note = "context full"
                return
            while True:
                if self._cancelled():
                    note = "cancelled"
                    break
                with turn.step():
                    step = next(steps, None)
                if step is None:
                    break
                tok = step.token
                if ens.is_eog(tok):
                    self.finish_reason = "stop"
                    break
                self.tokens.append(tok)
                if step.logprob is not None:
                    self.token_logprobs.append(step.logprob)
                if step.member is not None:
                    proposed[plan.members[step.member]] += 1
                piece = self.text.push(ens.piece(tok))
                yield Event(tok, piece, step)
                if self.text.stopped:
                    self.finish_reason = "stop"
                    break
                if len(self.tokens) >= self.sampling.max_tokens:
                    break
                if len(self.prompt) + len(self.tokens) >= max_len:
                    note = f"context full ({max_len} tokens)"
                    break
        except GeneratorExit:  # the caller closed or dropped the stream
            note = "cancelled"
            raise
        except KeyboardInterrupt:
            note = "interrupted"
            raise
        except MemberLostError as e:  # a remote member's server went away: keep what we have
            note = f"member lost: {e.member or '?'} on {e.endpoint or '?'}"
            self.finish_reason = "error"
            raise
        except (GenerationSupersededError, EnsembleClosedError):
            note = "closed" if turn.turns.closed else "superseded"
            raise
        finally:
            steps.close()
            failure = self.constraint.failure if self.constraint is not None else None
            if failure is not None:  # the matcher gave up (constrain.py): the text need not satisfy it
                self.finish_reason = "error"
                note = f"constraint failed: {failure}"
            tail = self.text.finish()
            seconds = time.perf_counter() - t0
            after = ens.members
            ran = state.switched_to or plan  # what decoded the last tokens (auto may switch after a warm-up)
            # time inside llama_decode: side by side, the time the controller waited for the members
            decode_seconds = sum(a.stats.seconds - b.seconds for a, b in zip(after, before))
            if ran.parallel:
                decode_seconds = ens.workers.wait_seconds - waited
            stats = GenerationStats(
                strategy=plan.name,
                new_tokens=len(self.tokens),
                seconds=seconds,
                tokens_per_second=len(self.tokens) / seconds if seconds > 0 else 0.0,
                acceptance_rate=(state.accepted / state.verified if state.verified else None)
                if ran.speculative
                else None,
                member_calls=[a.stats.calls - b.calls for a, b in zip(after, before)],
                member_tokens=[a.stats.tokens - b.tokens for a, b in zip(after, before)],
                member_seconds=[a.stats.seconds - b.seconds for a, b in zip(after, before)],
                algorithm=ran.algorithm,
                gamma=list(ran.gamma) if ran.gamma else None,
                seed=self.seed,
                prompt_tokens=len(self.prompt),
                reused_tokens=reused,
                prompt_seconds=prompt_seconds,
                decode_seconds=decode_seconds,
                parallel=ran.parallel,
                member_threads=_spread(ran.threads or [m.threads for m in members], plan.members, len(after)),
                member_devices=[m.device for m in after],
                drafts_verified=state.verified,
                drafts_accepted=state.accepted,
                proposed_by=proposed,
                verified_by=_spread(state.observer.verified_by, plan.members, len(ens.members)),
                accepted_by=_spread(state.observer.accepted_by, plan.members, len(ens.members)),
                lookup_stats=replace(state.lookup.stats),
                lookup_shadow=replace(state.shadow.stats),
                note=note,
                predicted_speedup=ran.predicted_speedup,
                switched_after=state.switched_after,
            )
            self.result = GenerationResult(
                self.text.text,
                list(self.tokens),
                self.finish_reason,
                stats,
                logprobs=list(self.token_logprobs) if self.logprobs is not None else None,
            )
            if self.on_finish is not None and turn.current:  # a superseded one must not overwrite the newer
                self.on_finish(self)
        if tail:
            yield Event(-1, tail, Step(-1, None, "flush"))

    def _prefill(self, members, fits: bool) -> int:
        """Every member reads the prompt but its last token (side by side when the plan runs them so);
        how many tokens all of them reused from their caches."""
        if not fits:
            return min(m.reuse_prefix(self.prompt) for m in members)
        if not self.plan.parallel:
            return min(m.prefill(self.prompt, should_stop=self._cancelled) for m in members)
        interrupted = threading.Event()

        def should_stop() -> bool:
            return interrupted.is_set() or self._cancelled()

        pool = self.ens.workers
        with pinned(members, self.plan.threads):
            jobs = [pool.submit(k, m.prefill, self.prompt, should_stop) for k, m in zip(self.plan.members, members)]
            return min(pool.gather(jobs, on_interrupt=interrupted.set))

    def text_pieces(self) -> Generator[str, None, None]:
        """The text as tokens are accepted; closing this iterator stops the generation."""
        events = iter(self)
        try:
            for ev in events:
                if ev.text:
                    yield ev.text
        finally:
            events.close()

    def text_and_logprobs(self) -> Generator[tuple[str, list[TokenLogprob]], None, None]:
        """text_pieces() with the logprobs of the tokens each piece releases (with the logprobs option);
        tokens whose text never came out (held back by a stop string) come last, with the text ''."""
        events = iter(self)
        held: list[TokenLogprob] = []
        try:
            for ev in events:
                if ev.step.logprob is not None:
                    held.append(ev.step.logprob)
                if ev.text:
                    yield ev.text, held
                    held = []
            if held:
                yield "", held
        finally:
            events.close()


def _spread(values, members, n):
    """Per-plan-member values to per-ensemble-member lists."""
    out = [0] * n
    for k, v in zip(members, values):
        out[k] = v
    return out
