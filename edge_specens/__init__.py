"""edge_specens: fast, exact ensembles of local GGUF models via Speculative Ensemble."""

from ._version import __version__
from .ensemble import Ensemble
from .errors import (
    ContextOverflowError,
    EdgeSpecensError,
    EndpointError,
    EnsembleBusyError,
    EnsembleClosedError,
    FetchError,
    GenerationCancelledError,
    GenerationSupersededError,
    InvalidParameterError,
    MemberLostError,
    ModelLoadError,
    ModelNotFoundError,
    PresetError,
    RpcUnavailableError,
    SandboxUnavailableError,
    TooManyMembersError,
    UnsupportedModelError,
    VocabularyMismatchError,
)
from .openai_format import ChatCompletion, ChatCompletionChunk
from .params import GENERATION_OPTIONS, EnsembleSpec, GenerationOptions, SamplingParams
from .result import GenerationResult, GenerationStats


def preset_paths(name: str, *, progress=True) -> list:
    """The local file of every member of preset `name` (fetched and verified first if needed), e.g.
    for Ensemble.from_paths(preset_paths("qwen2.5-coder-duo"), n_threads=[1, 1]). progress: True,
    False or a callable(what, done, total)."""
    from .fetch import preset_paths as _preset_paths

    return _preset_paths(name, progress=progress)


__all__ = [
    "__version__",
    "preset_paths",
    "Ensemble",
    "EnsembleSpec",
    "GenerationOptions",
    "GENERATION_OPTIONS",
    "SamplingParams",
    "GenerationResult",
    "GenerationStats",
    "ChatCompletion",
    "ChatCompletionChunk",
    "EdgeSpecensError",
    "InvalidParameterError",
    "ModelLoadError",
    "ModelNotFoundError",
    "VocabularyMismatchError",
    "UnsupportedModelError",
    "ContextOverflowError",
    "PresetError",
    "FetchError",
    "EndpointError",
    "MemberLostError",
    "RpcUnavailableError",
    "EnsembleBusyError",
    "EnsembleClosedError",
    "GenerationSupersededError",
    "GenerationCancelledError",
    "TooManyMembersError",
    "SandboxUnavailableError",
]
