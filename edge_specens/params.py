"""Settings that validate themselves: how to sample, how to decode, and how members combine into r.

GenerationOptions is the one definition of what a generation can be asked for (SamplingParams'
fields plus strategy, gamma and lookup), with each option's help text and CLI flags in its field
metadata. The CLI flags (cli/options.py), the server's request schema (server/schema.py), the chat
API and the facade's signatures are derived from it or checked against it (tests/test_options.py),
so they cannot drift apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from . import distributions as D
from .errors import InvalidParameterError

STRATEGIES = ("auto", "se", "sd", "standard", "single")
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 512
METHODS = ("we", "cd")
MAX_TOP_LOGPROBS = 20  # alternatives per token a request may ask for (OpenAI's bound on top_logprobs)


def _number(name: str, v, lo: float | None = None, hi: float | None = None, lo_open=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise InvalidParameterError(f"{name} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise InvalidParameterError(f"{name} must be finite, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise InvalidParameterError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise InvalidParameterError(f"{name} must be <= {hi}, got {v}")
    return v


def _int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise InvalidParameterError(f"{name} must be an integer, got {v!r}")
    if v < lo:
        raise InvalidParameterError(f"{name} must be >= {lo}, got {v}")
    return int(v)


def _option(default: Any, help: str, *flags: str, type: Any = None, multiple: bool = False) -> Any:
    """A generation option: its default, and for the CLI its help text, flags and value type
    (flags default to --the-name; type to the default's type)."""
    return field(default=default, metadata={"help": help, "flags": flags, "type": type, "multiple": multiple})


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens from r. temperature 0 means greedy (argmax r)."""

    max_tokens: int = _option(128, "Maximum tokens to generate.", "-n", "--n-predict", "--max-tokens")
    # sampling defaults as llama.cpp and llama-cpp-python use them: untruncated T = 1 lets the
    # long tail of a 152k vocabulary through (CD at T = 1 wrote multilingual garbage)
    temperature: float = _option(0.8, "Temperature (0 = greedy).", "--temp")
    top_k: int = _option(40, "Keep the k most likely tokens of r (0 = off).")
    top_p: float = _option(0.95, "Keep the smallest set of r's tokens with this much mass (1 = off).")
    min_p: float = _option(0.05, "Drop tokens below min_p times r's top probability (0 = off).")
    seed: int | None = _option(None, "Seed (same seed + settings = same output).", type=int)
    stop: tuple[str, ...] = _option((), "Stop string (repeatable).", type=str, multiple=True)
    repeat_penalty: float = _option(1.0, "Penalise tokens among the last repeat_last_n (1 = off; llama.cpp's).")
    repeat_last_n: int = _option(64, "How many recent tokens repeat_penalty and the other penalties look at.")
    frequency_penalty: float = _option(0.0, "Lower a token's log-probability by this much per earlier use.")
    presence_penalty: float = _option(0.0, "Lower the log-probability of every token already used by this much.")
    logit_bias: tuple[tuple[int, float], ...] = _option(
        (), "Add BIAS to token ID's log-probability: ID=BIAS (repeatable; -100 bans it).", type=str, multiple=True
    )

    def __post_init__(self):
        _int("max_tokens", self.max_tokens, 1)
        if self.max_tokens > 1_000_000:
            raise InvalidParameterError(f"max_tokens must be <= 1000000, got {self.max_tokens}")
        _number("temperature", self.temperature, 0.0, 100.0)
        _int("top_k", self.top_k, 0)
        _number("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        _number("min_p", self.min_p, 0.0, 1.0)
        if self.seed is not None:
            _int("seed", self.seed, 0)
            if self.seed >= 2**64:
                raise InvalidParameterError(f"seed must be < 2**64, got {self.seed}")
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if stop is None:
            stop = ()
        if not all(isinstance(s, str) for s in stop):
            raise InvalidParameterError(f"stop must be a string or a list of strings, got {self.stop!r}")
        # every stop string is searched for after each token: bound the work one request can ask for
        if len(stop) > MAX_STOP_STRINGS:
            raise InvalidParameterError(f"stop may hold at most {MAX_STOP_STRINGS} strings, got {len(stop)}")
        if any(len(s) > MAX_STOP_LENGTH for s in stop):
            raise InvalidParameterError(f"each stop string may have at most {MAX_STOP_LENGTH} characters")
        object.__setattr__(self, "stop", tuple(s for s in stop if s))
        _number("repeat_penalty", self.repeat_penalty, 0.0, 10.0, lo_open=True)
        _int("repeat_last_n", self.repeat_last_n, 0)
        _number("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        _number("presence_penalty", self.presence_penalty, -2.0, 2.0)
        object.__setattr__(self, "logit_bias", _logit_bias(self.logit_bias))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def filtered(self, p: np.ndarray) -> np.ndarray:
        return D.apply_filters(p, self.top_k, self.top_p, self.min_p)

    @property
    def has_penalties(self) -> bool:
        return bool(self.repeat_penalty != 1.0 or self.frequency_penalty or self.presence_penalty or self.logit_bias)

    def penalized(self, p: np.ndarray, context: Sequence[int]) -> np.ndarray:
        """p with the repetition penalties and logit bias for a position after `context`."""
        if not self.has_penalties:
            return p
        recent = context[-self.repeat_last_n :] if self.repeat_last_n else ()
        return D.penalize(
            p, recent, self.repeat_penalty, self.frequency_penalty, self.presence_penalty, self.logit_bias
        )


@dataclass(frozen=True)
class GenerationOptions(SamplingParams):
    """Everything a generation can be asked for: sampling, plus which strategy decodes, plus what the
    result reports besides the text (logprobs).

    strategy, gamma, lookup and parallel are checked where they are resolved into a plan (decode/plan.py).
    """

    strategy: str = _option("auto", "auto | se | sd | standard | single (single:N picks member N).")
    gamma: int | Sequence[int] | str | None = _option(
        None, "Proposal length: one int, or one per member (e.g. 8,1).", type=str
    )
    lookup: int | None = _option(
        None, "se: free prompt-lookup drafts per round (0 = off; auto decides by default).", type=int
    )
    json_schema: Any = _option(None, "Constrain the output to this JSON schema (JSON text or a file name).", type=str)
    grammar: str | None = _option(
        None, "Constrain the output to this GBNF or Lark grammar (text or a file name).", type=str
    )
    regex: str | None = _option(None, "Constrain the output to this regular expression.", type=str)
    parallel: bool | None = _option(
        None,
        "Run members side by side, each on its own thread (se/sd: pipelined drafting). "
        "Default: auto decides from measured costs; other strategies run members one after the other.",
        "--parallel/--no-parallel",
        type=bool,
    )
    logprobs: int | None = _option(
        None,
        "Report each token's log-probability under r and its N likeliest alternatives (0 = the token only).",
        type=int,
    )

    def __post_init__(self):
        super().__post_init__()
        if self.logprobs is not None:
            _int("logprobs", self.logprobs, 0)
            if self.logprobs > MAX_TOP_LOGPROBS:
                raise InvalidParameterError(f"logprobs must be at most {MAX_TOP_LOGPROBS}, got {self.logprobs}")

    def sampling(self) -> SamplingParams:
        return SamplingParams(**{f.name: getattr(self, f.name) for f in fields(SamplingParams)})


# the names, in order: Ensemble.generate/stream's keywords, the CLI's flags, the server's fields
GENERATION_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(GenerationOptions))


@dataclass(frozen=True)
class EnsembleSpec:
    """How member logits combine into the target r (docs/design.md §2)."""

    method: str = "we"
    weights: tuple[float, ...] = ()
    mu: float = 0.1
    alpha: float = 0.0

    @classmethod
    def build(
        cls,
        n_members: int,
        method: str = "we",
        weights: Sequence[float] | None = None,
        mu: float = 0.1,
        alpha: float = 0.0,
    ) -> EnsembleSpec:
        if method not in METHODS:
            raise InvalidParameterError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if n_members < 1:
            raise InvalidParameterError("an ensemble needs at least one member")
        if method == "cd":
            if n_members != 2:
                raise InvalidParameterError(
                    f"contrastive decoding needs exactly 2 members (expert, amateur), got {n_members}"
                )
            _number("mu", mu, 0.0, 100.0)
            _number("alpha", alpha, 0.0, 1.0)
            return cls("cd", (1.0, 0.0), float(mu), float(alpha))
        if weights is None:
            weights = [1.0 / n_members] * n_members
        weights = list(weights)
        if len(weights) != n_members:
            raise InvalidParameterError(f"got {len(weights)} weights for {n_members} members")
        for i, w in enumerate(weights):
            _number(f"weight {i}", w, 0.0)
        total = sum(weights)
        if total <= 0.0:
            raise InvalidParameterError("weights must not all be zero")
        return cls("we", tuple(float(w) / total for w in weights), float(mu), float(alpha))

    def target(
        self,
        rows: Sequence[np.ndarray | None],
        sampling: SamplingParams,
        context: Sequence[int] = (),
        allowed: np.ndarray | None = None,
    ) -> np.ndarray:
        """r at one position from every member's logits row there (None: a member r does not need,
        see needs(), or a follower that abstains there), after `context` (the tokens before it: the
        penalties look at them). Greedy uses T = 1 and no truncation filters; penalties and logit bias
        apply at every temperature, and `allowed` (structured output: the tokens a grammar allows here,
        constrain.py) before the filters."""
        t = 1.0 if sampling.greedy else sampling.temperature
        if self.method == "cd":
            expert, amateur = rows
            assert expert is not None  # CD needs both (needs()); an amateur that abstains (a follower
            # inside a split character, docs/design.md §2) is None: r drops the mu term there
            r = D.contrastive(expert, amateur, self.mu, self.alpha, t)
        else:
            r = D.weighted_ensemble(rows, self.weights, t)
        r = sampling.penalized(r, context)
        if allowed is not None:
            from .constrain import mask

            r = mask(r, allowed)
        return r if sampling.greedy else sampling.filtered(r)

    def needs(self, k: int) -> bool:
        """Does r depend on member k? (WE weight 0 members need not score.)"""
        return self.method == "cd" or self.weights[k] > 0.0


def proposal(row: np.ndarray, sampling: SamplingParams, context: Sequence[int] = ()) -> np.ndarray:
    """A member's own proposal distribution q: its softmax at T, with the same penalties and
    truncation as r (any q is exact; one shaped like r is accepted more often)."""
    return sampling.filtered(sampling.penalized(D.softmax(row, sampling.temperature), context))


def _logit_bias(value) -> tuple[tuple[int, float], ...]:
    """logit_bias as (token id, bias) pairs, from a dict (OpenAI: {"15043": -100}), pairs, or the
    CLI's strings: "ID=BIAS", or llama.cpp's "ID+BIAS" / "ID-BIAS"."""
    if not value:
        return ()
    items = value.items() if isinstance(value, dict) else value
    out: list[tuple[int, float]] = []
    try:
        for item in items:
            if isinstance(item, str):
                m = re.fullmatch(r"\s*(\d+)\s*(?:=\s*)?([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*", item)
                if m is None:
                    raise ValueError(item)
                item = m.groups()
            tok, b = item
            out.append((int(tok), float(b)))
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"logit_bias must map token ids to numbers (e.g. 15043=-100), got {value!r}"
        ) from None
    for tok, bias in out:
        if tok < 0 or not -100.0 <= bias <= 100.0:
            raise InvalidParameterError(
                f"logit_bias needs a token id >= 0 and a bias in [-100, 100], got {tok}: {bias}"
            )
    return tuple(out)
