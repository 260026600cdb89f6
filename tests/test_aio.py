"""Async calls the caller abandons stop generating (reliability probe N18): a cancelled agenerate, an
asyncio.run that ends with work in flight, and a held stream left after `break` (astream and the
chat stream). Each used to run on to max_tokens (20+ s here) and make the next call wait for it.

The long request is LONG tokens with EOS biased out. Every check counts the tokens the abandoned
generation made (recorded as it ends). So that the count does not depend on how fast this machine is,
each member call takes at least PACE_S here (the tiny models alone ran 1,500 tokens in a second on a
quiet machine, which let a whole generation fit in the 0.3 s a test waits before cancelling)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from gguf_factory import EOS_ID

from edge_specens import Ensemble, GenerationSupersededError

LONG_TOKENS = 1500
LONG = dict(max_tokens=LONG_TOKENS, temperature=0, strategy="standard", logit_bias={EOS_ID: -100})
SHORT = dict(max_tokens=6, temperature=0, strategy="standard")
FEW = 40  # an abandoned generation makes at most this many tokens (the old behaviour: LONG_TOKENS)
CHAT = [{"role": "user", "content": "hi"}]


PACE_S = 0.004  # per member call: at most ~125 tokens/s of `standard` for two members


@pytest.fixture(scope="module")
def ens(tiny_models):
    e = Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=2048)
    for m in e.members:
        real = m.evaluate_rows

        def paced(tokens, want, _real=real):
            time.sleep(PACE_S)
            return _real(tokens, want)

        m.evaluate_rows = paced
    yield e
    e.close()


@pytest.fixture
def ended(ens, monkeypatch):
    """The result of every generation on `ens`, in the order they end."""
    results = []
    real = ens._finished

    def record(gen):
        results.append(gen.result)
        real(gen)

    monkeypatch.setattr(ens, "_finished", record)
    return results


def test_a_cancelled_agenerate_stops_and_the_next_call_does_not_wait(ens, ended):
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ens.agenerate([1, 2, 3], **LONG), 0.3)
        return await ens.agenerate([1, 2], **SHORT)

    t0 = time.perf_counter()
    res = asyncio.run(main())
    assert time.perf_counter() - t0 < 5  # the old behaviour: the whole long generation, 7-25 s
    abandoned = ended[0]
    assert abandoned.stats.note == "cancelled" and abandoned.stats.new_tokens < LONG_TOKENS // 4
    assert ended[-1] is res and res.tokens == ens.generate([1, 2], **SHORT).tokens


def test_task_cancel_stops_the_generation_too(ens, ended):
    async def main():
        task = asyncio.create_task(ens.agenerate([1, 2, 3], **LONG))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ens.agenerate([1, 2], **SHORT)

    asyncio.run(main())
    assert ended[0].stats.note == "cancelled" and ended[0].stats.new_tokens < LONG_TOKENS // 4


def test_asyncio_run_ending_with_agenerate_in_flight_does_not_wait_for_it(ens, ended):
    async def main():
        asyncio.create_task(ens.agenerate([1, 2, 3], **LONG))
        await asyncio.sleep(0.3)  # main returns with the generation running on a worker thread

    t0 = time.perf_counter()
    asyncio.run(main())  # cancels the task, then joins the executor's threads
    assert time.perf_counter() - t0 < 5
    assert len(ended) == 1 and ended[0].stats.note == "cancelled"
    assert ended[0].stats.new_tokens < LONG_TOKENS // 4


def test_a_cancelled_call_waiting_for_the_ensemble_gives_up_without_running(ens, ended):
    """Cancelled while another thread generates: it never takes the ensemble afterwards."""
    started, release = threading.Event(), threading.Event()

    def holder():
        it = ens.stream([1, 2, 3], **SHORT)
        next(it)
        started.set()
        release.wait(10)
        list(it)

    t = threading.Thread(target=holder)
    t.start()
    started.wait(10)

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ens.agenerate([4, 5, 6], **LONG), 0.3)
        release.set()
        await asyncio.sleep(0.3)

    asyncio.run(main())
    t.join(10)
    assert [r.stats.prompt_tokens for r in ended] == [3]  # only the holder's generation ran


@pytest.mark.parametrize("kind", ["astream", "chat"])
def test_a_held_stream_left_after_break_stops_and_the_next_call_supersedes_it(ens, ended, kind):
    async def open_stream():
        if kind == "astream":
            return ens.astream([1, 2, 3], **LONG)
        return await ens.acreate_chat_completion(CHAT, stream=True, **LONG)

    async def main():
        agen = await open_stream()
        async for _ in agen:
            break
        await asyncio.sleep(0.5)  # nobody reads: the worker waits instead of generating
        paused = list(ended)  # nothing has ended yet: the stream is paused, not finished
        t0 = time.perf_counter()
        res = await ens.agenerate([1, 2], **SHORT)  # from the task that read it: supersedes it
        took = time.perf_counter() - t0
        with pytest.raises(GenerationSupersededError):
            async for _ in agen:  # what it had produced ahead, then the error
                pass
        return paused, took, res

    paused, took, res = asyncio.run(main())
    assert paused == [] and took < 5
    abandoned = ended[0]
    assert abandoned.stats.note == "cancelled" and abandoned.stats.new_tokens <= FEW
    assert ended[-1] is res and res.tokens == ens.generate([1, 2], **SHORT).tokens


def test_an_unread_stream_produces_at_most_one_piece_ahead(ens, ended):
    async def main():
        agen = ens.astream([1, 2, 3], **LONG)
        await agen.__anext__()
        await asyncio.sleep(0.5)
        n = ens.members[0].stats.calls
        await asyncio.sleep(0.3)
        idle = ens.members[0].stats.calls - n  # decodes while nobody read
        await agen.aclose()
        return idle

    assert asyncio.run(main()) == 0
    assert ended[-1].stats.note == "cancelled" and ended[-1].stats.new_tokens <= FEW


def test_concurrent_readers_in_other_tasks_are_not_superseded(ens, ended):
    """Two tasks stream at once, each pausing between reads: the second waits for the first and both
    read their whole text (only the reading task's own next call supersedes a stream)."""
    kw = dict(max_tokens=30, temperature=0, strategy="standard", logit_bias={EOS_ID: -100})
    expected = {p: ens.generate([p, 2, 3], **kw).text for p in (1, 4)}

    async def reader(p):
        out = []
        async for piece in ens.astream([p, 2, 3], **kw):
            out.append(piece)
            await asyncio.sleep(0.01)  # e.g. sending it to a client
        return "".join(out)

    async def main():
        return await asyncio.gather(reader(1), reader(4), ens.agenerate([4, 2, 3], **kw))

    a, b, c = asyncio.run(main())
    assert (a, b, c.text) == (expected[1], expected[4], expected[4])


def test_a_sync_call_from_another_thread_releases_an_unread_stream(ens, ended):
    """A stream nobody reads cannot block another thread for ever: it runs on to its end."""
    out = []

    async def main():
        agen = ens.astream([1, 2, 3], max_tokens=60, temperature=0, strategy="standard", logit_bias={EOS_ID: -100})
        await agen.__anext__()
        t = threading.Thread(target=lambda: out.append(ens.generate([1, 2], **SHORT)))
        t.start()
        await asyncio.to_thread(t.join, 30)
        rest = [p async for p in agen]  # still readable: released, not superseded
        return rest

    rest = asyncio.run(main())
    assert out and out[0].tokens == ens.generate([1, 2], **SHORT).tokens
    assert ended[0].stats.new_tokens == 60 and rest
