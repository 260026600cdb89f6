"""Decoding: the shared state, the exact strategies (generators of committed Step records), prompt
lookup and the Plan that says which strategy runs with which members."""

from .sd import sd
from .se import se
from .standard import standard
from .state import DecodeState, Draft, Step

__all__ = ["DecodeState", "Draft", "Step", "sd", "se", "standard"]
