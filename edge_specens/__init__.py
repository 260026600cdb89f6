"""edge_specens: fast, exact ensembles of local GGUF models via Speculative Ensemble."""

from .ensemble import Ensemble
from .errors import (ContextOverflowError, EdgeSpecensError, FetchError, InvalidParameterError, ModelLoadError,
                     PresetError, UnsupportedModelError, VocabularyMismatchError)
from .params import EnsembleSpec, SamplingParams
from .result import GenerationResult, GenerationStats

__version__ = "0.1.0"
__all__ = ["Ensemble", "EnsembleSpec", "SamplingParams", "GenerationResult", "GenerationStats",
           "EdgeSpecensError", "InvalidParameterError", "ModelLoadError", "VocabularyMismatchError",
           "UnsupportedModelError", "ContextOverflowError", "PresetError", "FetchError"]
