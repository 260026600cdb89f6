"""Fake members: logits are a fixed function of the token prefix, so strategies can be tested
without llama.cpp and without float noise (batched == single-token, exactly).

FakeMember implements member.DecodeMember, the protocol the facade and the strategies use."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from edge_specens.ensemble import Ensemble
from edge_specens.member import DecodeMember, MemberStats, prefill_in_chunks, reusable_prefix
from edge_specens.params import EnsembleSpec


class FakeMember:
    EOS = 0

    def __init__(
        self,
        seed: int,
        n_vocab: int = 16,
        scale: float = 2.0,
        n_ctx: int = 4096,
        n_params: int = 1000,
        eos_bias: float = -3.0,
        context: int | None = None,
    ):
        self.seed, self.n_vocab, self.scale, self.n_ctx = seed, n_vocab, scale, n_ctx
        self.context = context  # logits depend on the last `context` tokens only (None: the whole prefix)
        self._n_params = n_params
        self.eos_bias = eos_bias
        self.tokens: list[int] = []
        self.stats = MemberStats()
        self.can_rollback = True
        self.name = f"fake{seed}"
        self.n_batch = 512

    @property
    def n_params(self) -> int:
        return self._n_params

    def logits(self, prefix) -> np.ndarray:
        if self.context:
            prefix = prefix[-self.context :]
        h = zlib.crc32(np.asarray(prefix, dtype=np.int64).tobytes(), self.seed)
        out = np.random.default_rng(h).normal(size=self.n_vocab) * self.scale
        out[self.EOS] += self.eos_bias  # keep generations going most of the time
        return out.astype(np.float32)

    def evaluate_rows(self, tokens: Sequence[int], want: Sequence[int]) -> list[np.ndarray]:
        """One "llama_decode" per call."""
        start = len(self.tokens)
        self.tokens.extend(tokens)
        self.stats.calls += 1
        self.stats.tokens += len(tokens)
        return [self.logits(self.tokens[: start + i + 1]) for i in want]

    def evaluate(self, tokens: Sequence[int], want: Sequence[int]) -> np.ndarray:
        return np.stack(self.evaluate_rows(tokens, want)) if want else np.empty((0, self.n_vocab), np.float32)

    def truncate(self, n: int) -> None:
        del self.tokens[n:]

    def reuse_prefix(self, sequence: Sequence[int]) -> int:
        n = reusable_prefix(self.tokens, sequence, self.can_rollback)
        self.truncate(n)
        return n

    def prefill(self, prompt: Sequence[int], should_stop=None) -> int:
        return prefill_in_chunks(self, prompt, should_stop)

    def piece(self, token: int) -> bytes:
        return b"<%d>" % token

    def tokenize(self, text, add_bos=None, special=True):
        return [1 + (b % 15) for b in text.encode()]

    def is_eog(self, token: int) -> bool:
        return token == self.EOS

    def pin_threads(self, n: int | None) -> None:
        self.pinned = n

    @property
    def threads(self) -> int:
        return getattr(self, "pinned", None) or 1

    @property
    def device(self) -> str:
        return "cpu"

    def close(self):
        pass


def fake_ensemble(
    seeds=(1, 2), method="we", weights=None, mu=0.1, n_vocab=16, scale=2.0, eos_bias=-3.0, context: int | None = None
) -> Ensemble:
    """context=N: n-gram members (logits from the last N tokens), whose greedy text soon repeats."""
    members: list[DecodeMember] = [
        FakeMember(s, n_vocab, scale, n_params=1000 * (i + 1), eos_bias=eos_bias, context=context)
        for i, s in enumerate(seeds)
    ]
    spec = EnsembleSpec.build(len(members), method, weights, mu)
    return Ensemble(members, spec, n_vocab)
