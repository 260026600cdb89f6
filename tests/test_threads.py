"""Threads follow the machine's load: all cores when idle, one fewer per core other programs keep busy."""

from __future__ import annotations

import pytest

from edge_specens import threads as T


def _governor(monkeypatch, cores, samples):
    clock = [0.0]
    monkeypatch.setattr(T.time, "monotonic", lambda: clock[0])
    feed = iter(samples)
    monkeypatch.setattr(T.CpuGovernor, "_sample", staticmethod(lambda: next(feed)))
    g = T.CpuGovernor(cores)
    return g, clock


def test_idle_machine_keeps_every_core(monkeypatch):
    # (machine busy seconds, this process's seconds): all of the busy time is ours
    g, clock = _governor(monkeypatch, 2, [(0.0, 0.0), (0.4, 0.4), (0.8, 0.8)])
    for _ in range(2):
        clock[0] += 0.2
        assert g.threads() == 2


def test_one_busy_core_costs_one_thread_and_comes_back(monkeypatch):
    g, clock = _governor(monkeypatch, 2, [(0.0, 0.0), (0.4, 0.27), (0.8, 0.47), (1.12, 0.79)])
    clock[0] += 0.1
    assert g.threads() == 2  # not yet time to look
    clock[0] += 0.1
    assert g.threads() == 1  # others used 0.13 s of 0.2 s: over half a core
    clock[0] += 0.2
    assert g.threads() == 1  # still one core's worth of others
    clock[0] += 0.2
    assert g.threads() == 2  # the other program stopped


def test_a_stale_window_is_not_trusted(monkeypatch):
    g, clock = _governor(monkeypatch, 4, [(0.0, 0.0), (2.0, 0.0), (2.8, 0.0)])
    clock[0] += 5.0  # nothing decoded for 5 s: the machine's load then says nothing about now
    assert g.threads() == 4
    clock[0] += 0.2
    assert g.threads() == 1  # 4 cores' worth of others in the last 0.2 s: 4 - 4 = 0, floored at 1


def test_members_follow_the_governor_unless_threads_were_chosen(tiny_models, monkeypatch):
    llama_cpp = pytest.importorskip("llama_cpp")
    from edge_specens.member import Member, MemberOptions

    class Fixed:
        target = 1

        def threads(self):
            return self.target

    monkeypatch.setattr("edge_specens.member.governor", lambda: Fixed())
    auto = Member(tiny_models["small"], MemberOptions(n_ctx=64))
    chosen = Member(tiny_models["small"], MemberOptions(n_ctx=64, n_threads=2, n_threads_batch=2))
    try:
        for m in (auto, chosen):
            m.evaluate([5, 6], [1])
        assert llama_cpp.llama_n_threads(auto.ctx) == 1
        assert llama_cpp.llama_n_threads(chosen.ctx) == 2
    finally:
        auto.close()
        chosen.close()
