"""What the server has done since it started, as Prometheus text (GET /metrics).

The worker adds every finished generation's stats to `Totals` (on its thread; readers get a snapshot
under a lock). Names follow llama-server's `/metrics` where there is one to follow (prompt and
generated tokens and seconds, decode calls, requests processing and waiting), with the
edge_specens_ prefix, plus what only an ensemble has: per-member decode calls, evaluated tokens and
draft acceptance.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

from ..prompt_cache import PromptCacheStats, member_cache_stats


@dataclass
class Totals:
    generations: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0  # of prompt_tokens: read from the members' KV caches, not evaluated again
    generated_tokens: int = 0
    prompt_seconds: float = 0.0
    generation_seconds: float = 0.0
    drafts_verified: int = 0
    drafts_accepted: int = 0
    member_calls: list[int] = field(default_factory=list)
    member_tokens: list[int] = field(default_factory=list)
    verified_by: list[int] = field(default_factory=list)
    accepted_by: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def observe(self, result) -> None:
        """Add one GenerationResult (a cancelled one too: its work was done)."""
        if result is None:
            return
        s = result.stats
        with self._lock:
            self.generations += 1
            self.prompt_tokens += s.prompt_tokens
            self.reused_tokens += s.reused_tokens
            self.generated_tokens += s.new_tokens
            self.prompt_seconds += s.prompt_seconds
            self.generation_seconds += max(s.seconds - s.prompt_seconds, 0.0)
            self.drafts_verified += s.drafts_verified
            self.drafts_accepted += s.drafts_accepted
            for name in ("member_calls", "member_tokens", "verified_by", "accepted_by"):
                _add(getattr(self, name), getattr(s, name))

    def snapshot(self) -> Totals:
        with self._lock:
            return replace(
                self,
                member_calls=list(self.member_calls),
                member_tokens=list(self.member_tokens),
                verified_by=list(self.verified_by),
                accepted_by=list(self.accepted_by),
                _lock=threading.Lock(),
            )


def _add(into: list, values) -> None:
    for k, v in enumerate(values or ()):
        if k < len(into):
            into[k] += v
        else:
            into.append(v)


def _label(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(worker, ens, model: str) -> str:
    """The Prometheus text exposition (version 0.0.4) of the worker's counters and totals."""
    t: Totals = worker.totals.snapshot()
    out: list[str] = []

    def metric(name: str, kind: str, help: str, samples) -> None:
        out.append(f"# HELP edge_specens_{name} {help}")
        out.append(f"# TYPE edge_specens_{name} {kind}")
        for labels, value in samples:
            inner = ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items())
            out.append(
                f"edge_specens_{name}{{{inner}}} {_number(value)}" if inner else f"edge_specens_{name} {_number(value)}"
            )

    members = [m.name for m in ens.members]

    def per_member(values) -> list:
        return [({"member": n}, values[k] if k < len(values) else 0) for k, n in enumerate(members)]

    metric(
        "requests_total",
        "counter",
        "Requests the worker finished, by outcome.",
        [({"outcome": o}, getattr(worker, o)) for o in ("completed", "cancelled", "failed")],
    )
    metric(
        "requests_processing",
        "gauge",
        "Requests generating now (0 or 1: one worker).",
        [({}, int(worker.current is not None))],
    )
    metric("requests_waiting", "gauge", "Requests waiting in the queue.", [({}, worker.waiting)])
    metric("queue_capacity", "gauge", "How many requests may wait (--max-queue).", [({}, worker.max_queue)])
    metric("context_tokens", "gauge", "The context length (n_ctx) of the ensemble.", [({"model": model}, ens.n_ctx)])
    metric("generations_total", "counter", "Generations run (cancelled ones included).", [({}, t.generations)])
    metric("prompt_tokens_total", "counter", "Prompt tokens of all generations.", [({}, t.prompt_tokens)])
    metric(
        "prompt_tokens_reused_total",
        "counter",
        "Prompt tokens found in the members' KV caches (not evaluated again).",
        [({}, t.reused_tokens)],
    )
    metric("tokens_predicted_total", "counter", "Tokens generated.", [({}, t.generated_tokens)])
    metric("prompt_seconds_total", "counter", "Seconds spent reading prompts.", [({}, t.prompt_seconds)])
    metric("tokens_predicted_seconds_total", "counter", "Seconds spent generating.", [({}, t.generation_seconds)])
    metric("n_decode_total", "counter", "llama_decode calls of all members.", [({}, sum(t.member_calls))])
    metric("member_decode_calls_total", "counter", "llama_decode calls per member.", per_member(t.member_calls))
    metric("member_tokens_total", "counter", "Tokens each member evaluated.", per_member(t.member_tokens))
    metric(
        "drafts_verified_total",
        "counter",
        "Draft tokens verified against r (lookup drafts included).",
        [({}, t.drafts_verified)],
    )
    metric(
        "drafts_accepted_total",
        "counter",
        "Draft tokens r accepted (lookup drafts included).",
        [({}, t.drafts_accepted)],
    )
    metric(
        "member_drafts_verified_total",
        "counter",
        "Drafts (or observed positions) per proposing member.",
        per_member(t.verified_by),
    )
    metric(
        "member_drafts_accepted_total",
        "counter",
        "Accepted (or expected accepted) drafts per proposing member.",
        per_member(t.accepted_by),
    )
    caches = [member_cache_stats(m) or PromptCacheStats() for m in ens.members]
    for name, kind, help, key in (
        ("prompt_cache_entries", "gauge", "Saved prompt states each member keeps (--cache-ram).", "entries"),
        ("prompt_cache_bytes", "gauge", "Bytes of RAM the saved prompt states of each member take.", "bytes"),
        ("prompt_cache_restores_total", "counter", "Saved prompt states each member restored.", "restores"),
    ):
        metric(name, kind, help, per_member([getattr(c, key) for c in caches]))
    rates = [a / v if v else 0.0 for a, v in zip(t.accepted_by, t.verified_by)]
    metric(
        "member_acceptance_ratio",
        "gauge",
        "Accepted / verified drafts per member so far (0 before any).",
        per_member(rates),
    )
    return "\n".join(out) + "\n"


def _number(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    return repr(float(v))
