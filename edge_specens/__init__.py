"""edge_specens: fast, exact ensembles of local GGUF models via Speculative Ensemble."""

from ._version import __version__
from .ensemble import Ensemble
from .errors import (
    ContextOverflowError,
    EdgeSpecensError,
    EnsembleBusyError,
    EnsembleClosedError,
    FetchError,
    GenerationCancelledError,
    GenerationSupersededError,
    InvalidParameterError,
    ModelLoadError,
    PresetError,
    UnsupportedModelError,
    VocabularyMismatchError,
)
from .params import GENERATION_OPTIONS, EnsembleSpec, GenerationOptions, SamplingParams
from .result import GenerationResult, GenerationStats

__all__ = [
    "__version__",
    "Ensemble",
    "EnsembleSpec",
    "GenerationOptions",
    "GENERATION_OPTIONS",
    "SamplingParams",
    "GenerationResult",
    "GenerationStats",
    "EdgeSpecensError",
    "InvalidParameterError",
    "ModelLoadError",
    "VocabularyMismatchError",
    "UnsupportedModelError",
    "ContextOverflowError",
    "PresetError",
    "FetchError",
    "EnsembleBusyError",
    "EnsembleClosedError",
    "GenerationSupersededError",
    "GenerationCancelledError",
]
