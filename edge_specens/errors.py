"""Typed errors: every failure a user can cause maps to one of these.

The CLI turns them into one line on stderr and an exit status (2 for bad usage,
1 for everything else); the server turns them into HTTP 4xx/5xx. Nothing the
user does should reach llama.cpp in a state that would abort the process.
"""


class EdgeSpecensError(Exception):
    """Base class of every error edge_specens raises on purpose."""

    exit_code = 1


class InvalidParameterError(EdgeSpecensError, ValueError):
    """A parameter is out of range or of the wrong kind (bad usage)."""

    exit_code = 2


class ModelLoadError(EdgeSpecensError):
    """A model file is missing, unreadable, not GGUF, truncated or rejected by llama.cpp."""


class ModelNotFoundError(ModelLoadError):
    """A model reference names a store, model or file that is not there: no Ollama or LM Studio folder,
    an Ollama name that was never pulled, an LM Studio folder without that model (sources/)."""


class VocabularyMismatchError(ModelLoadError):
    """Members do not share one vocabulary (docs/design.md §2)."""


class UnsupportedModelError(ModelLoadError):
    """The model cannot do what was asked (e.g. a recurrent model cannot roll back its cache)."""


class ContextOverflowError(EdgeSpecensError):
    """The prompt does not fit in the context window."""

    exit_code = 2


class PresetError(EdgeSpecensError):
    """Unknown or malformed preset."""

    exit_code = 2


class FetchError(EdgeSpecensError):
    """A model file could not be fetched or failed verification."""


class EnsembleClosedError(EdgeSpecensError):
    """The ensemble (or model) was closed; its llama.cpp memory is freed, so nothing can run on it."""


class EnsembleBusyError(EdgeSpecensError):
    """Another thread is generating on this ensemble and the caller asked not to wait (wait=False)."""


class GenerationSupersededError(EdgeSpecensError):
    """A newer generation started on the ensemble (from the same thread) before this one finished;
    this one cannot resume, since the members' caches now hold the newer one's tokens."""


class GenerationCancelledError(EdgeSpecensError):
    """Work stopped because the caller cancelled it (raised inside the runtime, e.g. between the
    chunks of a long prompt; a generation that is cancelled ends normally with the note "cancelled")."""


class RpcUnavailableError(EdgeSpecensError):
    """A member was placed on another machine, but this llama-cpp-python was built without RPC."""


class EndpointError(EdgeSpecensError):
    """An RPC endpoint cannot serve a member: nothing listens there, it speaks another protocol, or
    its llama.cpp is too new or too old. Checked before llama.cpp sees the endpoint, since a failed
    connection inside llama.cpp aborts the whole process."""

    def __init__(self, message: str, endpoint: str = ""):
        super().__init__(message)
        self.endpoint = endpoint


class MemberLostError(EdgeSpecensError):
    """A member on another machine stopped answering mid-generation (its RPC server died or the
    network went away). The tokens generated so far are kept (`result`, when the facade has one),
    and the next request reconnects."""

    def __init__(self, message: str, endpoint: str = "", member: str = ""):
        super().__init__(message)
        self.endpoint = endpoint
        self.member = member
        self.result: object = None  # the partial GenerationResult, set by the generation


class TooManyMembersError(InvalidParameterError):
    """More members than one ensemble takes (ensemble.MAX_MEMBERS); refused before any file is read,
    since every member costs its own memory, load time and a decode per token."""


class SandboxUnavailableError(EdgeSpecensError):
    """Model-written code would run without OS isolation (no bubblewrap on Linux, no sandbox-exec on
    macOS, another platform) and the caller did not pass unsafe=True (`--unsafe-no-sandbox`)."""

    exit_code = 2
