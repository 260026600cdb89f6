"""Saved prompts: more than one conversation kept per member, so a side request costs no re-read.

A member's live KV cache holds one token sequence; a request that shares only a short prefix with it
truncates the rest. Chat front-ends send side requests between turns (Open WebUI's title, tags and
follow-up prompts), and each one used to cost the next turn a full re-read of the conversation. So,
as llama-server's `--cache-ram` does, a member copies its live state (llama.cpp's per-sequence state:
the KV cells, a few tens of kB per token) into RAM before a request with another prefix overwrites it,
and a request picks the saved state with the longest common prefix, restores it and reads only the
rest. Restoring puts back the same bytes a kept prefix would hold: the logits are those of the cache
that was saved (exactness is untouched; tests/test_prompt_cache.py).

The budget (`cache_ram`, MiB) is the ensemble's; each member gets a share in proportion to what one
token of its KV cache costs, so every member can keep about as many tokens (a conversation is only
useful when every member still has it). Within a member the least recently used state goes first.
A member keeps its states where its llama.cpp context is: a remote member's live in its helper process.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidParameterError

MIB = 2**20
DEFAULT_CACHE_RAM_MIB = 8192  # llama-server's --cache-ram default; bounded by the RAM there is (default_cache_ram)
# A state is saved only when the next request would lose at least this many of its tokens: re-reading
# fewer costs less than copying them out (and a normal next chat turn drops only a few tokens of the last).
MIN_SAVE_TOKENS = 32


@dataclass(frozen=True)
class PromptCacheStats:
    """What one member keeps (for /metrics and /props)."""

    entries: int = 0
    bytes: int = 0
    budget: int = 0
    saves: int = 0
    restores: int = 0
    evictions: int = 0


@dataclass(eq=False)
class SavedPrompt:
    """One saved state: the tokens its KV cells hold, and llama.cpp's bytes of them."""

    tokens: tuple[int, ...]
    data: Any  # a ctypes uint8 array: what llama_state_seq_set_data reads back
    nbytes: int

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.tokens, dtype=np.int64)  # for common_prefix against every request


def common_prefix(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> int:
    """How many leading tokens a and b share (NumPy: a request is compared with every saved state, and
    conversations run to thousands of tokens)."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n], dtype=np.int64) != np.asarray(b[:n], dtype=np.int64))
    return int(differ[0]) if differ.size else n


class PromptCache:
    """A member's saved states under a byte budget, least recently used evicted first. Used only
    inside the member's own lock (one thread at a time); the counters are read from any thread."""

    def __init__(self, budget_bytes: int):
        self.budget = max(0, int(budget_bytes))
        self._entries: OrderedDict[int, SavedPrompt] = OrderedDict()  # oldest first
        self._bytes = 0
        self.saves = self.restores = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> PromptCacheStats:
        return PromptCacheStats(len(self._entries), self._bytes, self.budget, self.saves, self.restores, self.evictions)

    def best(self, sequence: Sequence[int], can_rollback: bool = True) -> tuple[SavedPrompt | None, int]:
        """The saved state that lets `sequence` reuse the most, and how much (member.reusable_prefix:
        at least one token of `sequence` left to evaluate; without rollback only a whole-prefix state)."""
        from .member import reusable_prefix

        found: SavedPrompt | None = None
        most = 0
        ids = np.asarray(sequence, dtype=np.int64)
        for e in self._entries.values():
            n = reusable_prefix(e.ids, ids, can_rollback)
            if n > most:
                found, most = e, n
        return found, most

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether a saved state already starts with all of `tokens` (saving them would add nothing)."""
        n = len(tokens)
        ids = np.asarray(tokens, dtype=np.int64)
        return any(len(e.tokens) >= n and common_prefix(e.ids, ids) == n for e in self._entries.values())

    def fits(self, nbytes: int) -> bool:
        return 0 < nbytes <= self.budget

    def add(self, tokens: Sequence[int], data: Any, nbytes: int) -> SavedPrompt | None:
        """Keep a state; states it extends go (any request reuses at least as much of this one),
        then the least recently used ones until it fits. None when it is larger than the budget."""
        if not self.fits(nbytes):
            return None
        key = tuple(int(t) for t in tokens)
        for k, e in list(self._entries.items()):
            if len(e.tokens) <= len(key) and key[: len(e.tokens)] == e.tokens:
                self._drop(k)
        while self._bytes + nbytes > self.budget and self._entries:
            self._drop(next(iter(self._entries)))
            self.evictions += 1
        entry = SavedPrompt(key, data, nbytes)
        self._entries[id(entry)] = entry
        self._bytes += nbytes
        self.saves += 1
        return entry

    def touch(self, entry: SavedPrompt) -> None:
        """`entry` was just restored: the most recently used now."""
        if id(entry) in self._entries:
            self._entries.move_to_end(id(entry))
        self.restores += 1

    def discard(self, entry: SavedPrompt) -> None:
        if id(entry) in self._entries:
            self._drop(id(entry))

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: int) -> None:
        e = self._entries.pop(key)
        self._bytes -= e.nbytes


# ---------------------------------------------------------------------------- the budget
def check_cache_ram(value: Any, name: str = "cache_ram") -> float:
    """A budget in MiB: a finite number >= 0 (0 turns saved prompts off)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidParameterError(f"{name} must be a number of MiB >= 0 (0 turns saved prompts off), got {value!r}")
    return float(value)


def parse_cache_ram(text: str) -> float:
    """--cache-ram's text as MiB (a number; the same rule as check_cache_ram)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"--cache-ram must be a number of MiB >= 0 (0 turns saved prompts off), got {text!r}"
        ) from None
    return check_cache_ram(value, "--cache-ram")


def available_ram() -> int | None:
    """Bytes of RAM the system can give without swapping (Linux MemAvailable; else free pages), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def default_cache_ram(weights_bytes: int = 0) -> float:
    """The default budget in MiB: llama-server's 8192, but at most half of the RAM left once the
    weights (about to load) are in: saved prompts must never push the models into swap."""
    avail = available_ram()
    if avail is None:
        return float(DEFAULT_CACHE_RAM_MIB)
    spare = max(0, avail - weights_bytes) / 2 / MIB
    return float(min(DEFAULT_CACHE_RAM_MIB, math.floor(spare)))


def kv_values_per_token(info) -> int | None:
    """Numbers one token adds to a model's KV cache (all layers, K and V), from the shapes of its key and
    value projections in the GGUF header (gguf_header.GGUFInfo); None where it has none we know."""
    total = 0
    for name, (shape, _) in getattr(info, "tensors", {}).items():
        if name.startswith("blk.") and name.endswith((".attn_k.weight", ".attn_v.weight")) and len(shape) >= 2:
            total += int(shape[1])
    return total or None


def split_cache_ram(total_mib: float, infos: Sequence[Any]) -> list[float]:
    """Each member's share of the budget, in proportion to its KV bytes per token (so each can keep
    about as many tokens); by file size where a header does not tell."""
    if not infos:
        return []
    if total_mib <= 0:
        return [0.0] * len(infos)
    per_token = [kv_values_per_token(i) for i in infos]
    if all(p is not None for p in per_token):
        weights = [float(p or 0) for p in per_token]
    else:
        weights = [float(max(getattr(i, "file_size", 0), 1)) for i in infos]
    whole = sum(weights)
    return [total_mib * w / whole for w in weights]


def member_cache_stats(member) -> PromptCacheStats | None:
    """What a member keeps (None: no saved prompts, e.g. a test's fake member)."""
    stats = getattr(member, "prompt_cache_stats", None)
    return stats if isinstance(stats, PromptCacheStats) else None
