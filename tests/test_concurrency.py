"""Safe to embed: one generation at a time per ensemble, typed errors after close(), a newer
generation supersedes an unfinished one, and cancelling really stops work (issue 17)."""

from __future__ import annotations

import gc
import threading
import time

import pytest
from fakes import fake_ensemble

from edge_specens import Ensemble, EnsembleBusyError, EnsembleClosedError, GenerationSupersededError

KW = dict(max_tokens=30, temperature=1.0, strategy="se", gamma=[3, 1])
FKW = dict(temperature=0, strategy="se", gamma=[2, 1])  # fakes: `auto` would calibrate (a real member's job)


def test_threads_sharing_a_real_ensemble_take_turns(tiny_models):
    """Two threads on one llama.cpp ensemble used to abort the process (GGML_ASSERT); now the second
    waits, and every result is the one a lone caller gets."""
    ens = Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=256)
    try:
        expected = {s: ens.generate("hello world", seed=s, **KW).tokens for s in range(6)}
        got, errors = {}, []

        def work(seeds):
            try:
                for s in seeds:
                    if s % 2:
                        got[s] = ens.generate("hello world", seed=s, **KW).tokens
                    else:  # streams hold the ensemble until they end
                        it = ens.stream("hello world", seed=s, **KW)
                        "".join(it)
                        got[s] = ens.last_result.tokens if ens.last_result else None
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(range(k, 6, 3),)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        for s in range(6):
            if s % 2:  # last_result is shared between threads: only generate's own result is checked
                assert got[s] == expected[s], s
    finally:
        ens.close()


def test_a_caller_that_will_not_wait_gets_a_busy_error():
    ens = fake_ensemble()
    started, release = threading.Event(), threading.Event()

    def holder():
        it = ens.stream([1, 2, 3], max_tokens=200, **FKW)
        next(it)
        started.set()
        release.wait(10)
        it.close()

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert started.wait(10)
        with pytest.raises(EnsembleBusyError):
            ens.generate([1, 2, 3], max_tokens=3, wait=False, **FKW)
        t0 = time.monotonic()
        with pytest.raises(EnsembleBusyError):
            ens.generate([1, 2, 3], max_tokens=3, wait=0.2, **FKW)
        assert 0.15 < time.monotonic() - t0 < 5
        with pytest.raises(EnsembleBusyError):
            ens.events([1, 2, 3], wait=False, strategy="standard")
    finally:
        release.set()
        t.join(10)
    assert len(ens.generate([1, 2, 3], max_tokens=3, wait=False, **FKW).tokens) == 3  # free again


def test_a_waiting_caller_runs_when_the_other_thread_finishes():
    ens = fake_ensemble()
    order = []
    started = threading.Event()

    def holder():
        it = ens.stream([1, 2, 3], max_tokens=20, **FKW)
        next(it)
        started.set()
        time.sleep(0.3)
        for _ in it:
            pass
        order.append("stream done")

    t = threading.Thread(target=holder)
    t.start()
    assert started.wait(10)
    ens.generate([4, 5, 6], max_tokens=3, **FKW)
    order.append("generate done")
    t.join(10)
    assert order == ["stream done", "generate done"]


def test_use_after_close_raises_a_typed_error(tiny_models):
    """Used to segfault (exit 139) in tokenize."""
    with Ensemble.from_paths([tiny_models["small"], tiny_models["big"]], n_ctx=256) as ens:
        it = ens.stream("hello world", max_tokens=20, temperature=0)
        next(it)
    for call in (
        lambda: ens.generate("hello", max_tokens=2),
        lambda: ens.stream("hello", max_tokens=2),
        lambda: ens.tokenize("hello"),
        lambda: ens.detokenize([5, 6]),
        lambda: ens.create_chat_completion([{"role": "user", "content": "hi"}]),
        lambda: ens.members[0].tokenize("hello"),
        lambda: ens.members[0].evaluate([5], [0]),
        lambda: next(it),  # a stream left open by the `with` block
    ):
        with pytest.raises(EnsembleClosedError):
            call()
    ens.close()  # twice: harmless
    assert ens.closed


def test_a_newer_generation_supersedes_an_unfinished_stream():
    """Used to raise KeyError (stream after stream) or hang in the SE loop (stream, generate, resume)."""
    ens = fake_ensemble()
    fresh = fake_ensemble()
    first = ens.stream([1, 2, 3], max_tokens=30, temperature=0, strategy="se", gamma=[3, 1])
    next(first)
    second = ens.stream([7, 8, 9], max_tokens=30, temperature=0, strategy="se", gamma=[3, 1])
    text = "".join(second)
    assert text == "".join(fresh.stream([7, 8, 9], max_tokens=30, temperature=0, strategy="se", gamma=[3, 1]))
    with pytest.raises(GenerationSupersededError):
        next(first)
    # stream, then generate, then resume the stream
    third = ens.stream([1, 2, 3], max_tokens=30, **FKW)
    next(third)
    res = ens.generate([4, 5], max_tokens=20, temperature=0, strategy="se", gamma=[2, 1])
    assert res.tokens == fresh.generate([4, 5], max_tokens=20, temperature=0, strategy="se", gamma=[2, 1]).tokens
    with pytest.raises(GenerationSupersededError):
        next(third)
    assert ens.last_result is res  # the stale stream did not overwrite the newer result
    # the caches stayed consistent: the same request still gives the same tokens
    assert (
        ens.generate([1, 2, 3], max_tokens=30, **FKW).tokens == fresh.generate([1, 2, 3], max_tokens=30, **FKW).tokens
    )


def test_a_dropped_stream_says_it_was_cancelled():
    ens = fake_ensemble()
    it = ens.stream([1, 2, 3], max_tokens=40, **FKW)
    next(it)
    next(it)
    del it
    gc.collect()
    assert ens.last_result is not None and ens.last_result.stats.note == "cancelled"
    assert ens.last_result.finish_reason == "length" and len(ens.last_result.tokens) >= 2
    # a stream that never started holds nothing: another thread is not kept waiting
    unstarted = ens.stream([1, 2, 3], max_tokens=5, **FKW)
    del unstarted
    gc.collect()
    out = []
    t = threading.Thread(target=lambda: out.append(ens.generate([1, 2], max_tokens=2, wait=2.0, **FKW)))
    t.start()
    t.join(10)
    assert out and len(out[0].tokens) == 2


def test_cancel_stops_a_long_prompt_within_one_chunk():
    """A client that left while its long prompt was read used to hold the machine for the whole prompt."""
    ens = fake_ensemble()
    fresh = fake_ensemble()
    for m in ens.members:
        m.n_batch = 16
    cancel = threading.Event()
    chunks = []
    real = ens.members[0].evaluate_rows

    def spy(tokens, want):
        chunks.append(len(tokens))
        if len(chunks) == 3:
            cancel.set()  # as the server does when the client disconnects
        return real(tokens, want)

    ens.members[0].evaluate_rows = spy
    prompt = [1 + i % 15 for i in range(400)]
    gen = ens.events(prompt, cancel=cancel, max_tokens=20, **FKW)
    events = list(gen)
    assert events == [] and gen.result.stats.note == "cancelled"
    assert len(chunks) == 3 and sum(chunks) == 48  # stopped at the next chunk, not after 25 of them
    del ens.members[0].evaluate_rows
    # what was read is kept and the cache is consistent
    assert ens.generate(prompt, max_tokens=10, **FKW).tokens == fresh.generate(prompt, max_tokens=10, **FKW).tokens
