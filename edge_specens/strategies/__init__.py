"""Exact decoding strategies: generators of committed tokens (Step records)."""

from .sd import sd
from .se import se
from .standard import standard
from .state import DecodeState, Draft, Step

__all__ = ["DecodeState", "Draft", "Step", "sd", "se", "standard"]
