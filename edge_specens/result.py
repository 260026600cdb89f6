"""What a generation returns: text, tokens, why it stopped, and measured statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .decode.lookup import LookupStats
from .logprobs import TokenLogprob


@dataclass
class GenerationStats:
    """Statistics of one generation (the `stats` object of docs/design.md §9, plus extras)."""

    strategy: str
    new_tokens: int = 0
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    acceptance_rate: float | None = None
    member_calls: list[int] = field(default_factory=list)
    member_tokens: list[int] = field(default_factory=list)
    parallel: bool = False  # members ran side by side, each on its own thread (docs/design.md §10)
    member_threads: list[int] = field(default_factory=list)  # llama.cpp threads per member while decoding
    member_devices: list[str] = field(default_factory=list)  # "cpu", "gpu" (all layers) or "cpu+gpu" per member
    # extras, not in `generate --json`'s stats (docs/design.md §9)
    algorithm: str | None = None  # the loop that ran: "se" | "sd" | "standard" (what `auto` chose)
    gamma: list[int] | None = None
    seed: int | None = None
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prompt_seconds: float = 0.0  # prefill: reading the prompt (not reused from the cache)
    decode_seconds: float = 0.0  # time inside llama_decode; the rest is controller overhead
    member_seconds: list[float] = field(default_factory=list)  # each member's own time inside llama_decode
    drafts_verified: int = 0
    drafts_accepted: int = 0
    proposed_by: list[int] = field(default_factory=list)  # accepted drafts per member
    verified_by: list[int] = field(default_factory=list)  # drafts (or observed positions) per member
    accepted_by: list[float] = field(default_factory=list)  # accepted (or expected accepted) per member
    lookup_stats: LookupStats = field(default_factory=LookupStats)  # prompt lookup's tries, finds, drafts, ...
    lookup_shadow: LookupStats = field(default_factory=LookupStats)  # the same, had lookup been on (auto)
    note: str | None = None
    # auto: the speed-up over `standard` it predicted for the schedule that ran last, and how many
    # tokens it generated before switching to it (a seeded sampled run's warm-up; 0 without a switch)
    predicted_speedup: float | None = None
    switched_after: int = 0

    JSON_FIELDS = (
        "strategy",
        "new_tokens",
        "seconds",
        "tokens_per_second",
        "acceptance_rate",
        "member_calls",
        "member_tokens",
        "parallel",
        "member_threads",
        "member_devices",
        "algorithm",  # what ran: `auto`'s choice, or the strategy asked for
        "gamma",
    )

    def to_dict(self, extended: bool = False) -> dict:
        d = asdict(self)
        return d if extended else {k: d[k] for k in self.JSON_FIELDS}

    @property
    def ran(self) -> str:
        """What decoded, in words: "se [5,1] + lookup", "standard side by side", "auto → sd [3,1]"."""
        what = self.strategy if self.strategy.startswith("single") else self.algorithm or self.strategy
        if self.gamma:
            what += " [" + ",".join(map(str, self.gamma)) + "]"
        if self.lookup_stats.tries:
            what += " + lookup"
        if self.parallel:
            what += " side by side"
        return f"auto → {what}" if self.strategy == "auto" else what

    @property
    def decode_tokens_per_second(self) -> float:
        """Speed after the prompt was read: what strategies change."""
        t = self.seconds - self.prompt_seconds
        return self.new_tokens / t if t > 0 else 0.0

    @property
    def overhead_fraction(self) -> float:
        return max(0.0, 1.0 - self.decode_seconds / self.seconds) if self.seconds > 0 else 0.0


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    finish_reason: str  # "stop" | "length" | "error" (a remote member was lost: MemberLostError)
    stats: GenerationStats
    # with the logprobs option: one entry per token of `tokens` (logprobs.py says what they measure)
    logprobs: list[TokenLogprob] | None = None

    def to_dict(self, extended: bool = False) -> dict:
        d = {
            "text": self.text,
            "tokens": list(self.tokens),
            "finish_reason": self.finish_reason,
            "stats": self.stats.to_dict(extended),
        }
        if self.logprobs is not None:
            d["logprobs"] = [e.to_dict() for e in self.logprobs]
        return d

    def summary(self) -> str:
        """One line for people (the CLI prints it after a reply): tokens, speed, what ran, how many
        drafts were accepted, and why it stopped when that was not the end of the text or -n."""
        s = self.stats
        acc = f", {100 * s.acceptance_rate:.0f} % of drafts accepted" if s.acceptance_rate is not None else ""
        note = f", {s.note}" if s.note else ", stopped by an error" if self.finish_reason == "error" else ""
        return f"{s.new_tokens} tokens, {s.tokens_per_second:.1f} tok/s, {s.ran}{acc}{note}"

    def details(self) -> str:
        """summary() plus what the members did (chat's /stats -v): llama_decode calls and tokens per
        member, threads and devices, the time to read the prompt, and the finish reason."""
        s = self.stats
        threads = "+".join(map(str, s.member_threads)) if s.member_threads else "-"
        return (
            f"{self.summary()}; {s.new_tokens} tokens in {s.seconds:.2f} s (prompt {s.prompt_tokens} tokens, "
            f"{s.reused_tokens} reused, {s.prompt_seconds:.2f} s); llama_decode calls {s.member_calls}, "
            f"tokens {s.member_tokens}, threads {threads}, devices {s.member_devices}; finish {self.finish_reason}"
        )
