"""How long a remote member waits for its RPC server before it calls the server lost.

A server that answers the hello and then goes silent (stuck, or a proxy that stalls) must not hang
the caller, but a slow link or a slow machine must not be taken for a dead one. So the waits follow
progress rather than the clock alone:

- **At load** the weights cross the network. The load goes on as long as bytes move on the RPC
  connection (the helper counts them: remote/helper.py's pulse). No byte for `stall_s()` seconds
  (30 s; `$EDGE_SPECENS_RPC_STALL_S`) is `MemberLostError`. Where the helper cannot count bytes
  (no TCP_INFO: not Linux), the whole load may take `stall_s() + weight bytes / MIN_LOAD_BYTES_PER_S`.
- **Per llama_decode** the server computes, and no byte moves while it does, so the wait is what the
  call should cost: `max(stall_s(), CALL_FACTOR x expected + NETWORK_ALLOWANCE_S)` without a byte,
  where `expected` is the member's cost for that many tokens: the larger of its calibrated curve
  (auto/calibrate.py's cache, read at connect) and its slowest measured seconds per token so far,
  times the tokens. Before either exists: `max(stall_s(), UNCALIBRATED_TOKEN_S x tokens +
  NETWORK_ALLOWANCE_S)`. Bytes moving (rows coming back over a slow link) restart the wait.
"""

from __future__ import annotations

import os

from ..errors import InvalidParameterError

STALL_ENV = "EDGE_SPECENS_RPC_STALL_S"
DEFAULT_STALL_S = 30.0
MIN_LOAD_BYTES_PER_S = 1e6  # 8 Mbit/s: slower than any link worth using for a member
CALL_FACTOR = 10.0  # a decode may take 10x its usual cost (a longer context, a busy server) before it is lost
NETWORK_ALLOWANCE_S = 5.0  # a round trip over a bad link, a retransmission or two
UNCALIBRATED_TOKEN_S = 0.5  # a 7B decoding on a Raspberry Pi's CPU: ~2 tokens/s


def stall_s() -> float:
    """The longest silence tolerated: $EDGE_SPECENS_RPC_STALL_S, default 30 s."""
    text = os.environ.get(STALL_ENV, "").strip()
    if not text:
        return DEFAULT_STALL_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise InvalidParameterError(f"${STALL_ENV}={text!r}: must be a number of seconds above 0")
    return value


def load_silence_s(weight_bytes: int, can_count: bool) -> float:
    """Seconds without progress that end a load: since the last byte moved, or since the load began
    when the helper cannot count bytes."""
    if can_count:
        return stall_s()
    return stall_s() + weight_bytes / MIN_LOAD_BYTES_PER_S


def call_silence_s(n_tokens: int, expected_s: float | None) -> float:
    """Seconds without a byte that end one llama_decode of n_tokens (expected_s: what it should cost)."""
    if expected_s is None:
        return max(stall_s(), UNCALIBRATED_TOKEN_S * max(n_tokens, 1) + NETWORK_ALLOWANCE_S)
    return max(stall_s(), CALL_FACTOR * expected_s + NETWORK_ALLOWANCE_S)
