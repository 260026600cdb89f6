"""Reference → local file → validated header: what a member's source is before llama.cpp sees it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError
from ..gguf_header import GGUFInfo, validate_gguf
from . import huggingface, lmstudio, ollama
from .reference import HubFile, LMStudioName, OllamaName, Reference

log = logging.getLogger("edge_specens")


@dataclass(frozen=True)
class MemberSource:
    """One member's source: its reference, the local GGUF it resolved to (used in place, never copied),
    that file's validated header (with the vocabulary) and where the member runs."""

    reference: Reference
    path: Path
    info: GGUFInfo

    @property
    def endpoint(self) -> str | None:
        """ "host:port" of the rpc-server that runs the member; None: here."""
        return str(self.reference.endpoint) if self.reference.endpoint is not None else None

    @property
    def name(self) -> str:
        """The member's name: its file's name, or for an Ollama blob (sha256-…) the Ollama name."""
        target = self.reference.target
        return str(target) if isinstance(target, OllamaName) else self.path.name


def local_file(ref: Reference) -> Path:
    """The local file `ref` names, from its store (fetched into the Hugging Face cache if need be).
    ModelNotFoundError / FetchError when the store or the model is not there."""
    target = ref.target
    if isinstance(target, OllamaName):
        return ollama.resolve(target)
    if isinstance(target, LMStudioName):
        return lmstudio.resolve(target)
    if isinstance(target, HubFile):
        return huggingface.resolve(target)
    if not target.exists():  # a bare name: LM Studio's model folder of that name, if there is one
        found = lmstudio.lookup(ref.text)
        if found is not None:
            log.info("%s: LM Studio's %s", ref.text, found)
            return found
    return target


def resolve(ref: Reference) -> MemberSource:
    """`ref`'s local file with its header checked (gguf_header, vocabulary read). A header problem is a
    ModelLoadError naming the reference as given as well as the file, when they differ."""
    path = local_file(ref)
    try:
        info = validate_gguf(path, read_tokens=True)
    except ModelLoadError as e:
        if ref.kind == "path" and Path(ref.text) == path:
            raise
        raise type(e)(f"{ref.text}: {e}") from None
    return MemberSource(ref, path, info)


def resolve_all(refs: Sequence[Reference]) -> list[MemberSource]:
    """Every reference resolved and checked, in order: a bad second member fails before the first loads."""
    return [resolve(r) for r in refs]
