"""The one grammar of a model reference: every way a member can be named, parsed without any I/O
beyond "does this path exist" (docs/design.md §8, "References").

    PATH                                a GGUF file (a path that exists always wins)
    owner/repo:file.gguf                a file on Hugging Face (llama.cpp's -hf style)
    hf://owner/repo/file.gguf           the same
    ollama:NAME[:TAG]                   a model Ollama has pulled: NAME is model, namespace/model or
                                        host/namespace/model, TAG defaults to `latest`
    lmstudio:[PUBLISHER/]MODEL[/FILE]   a model folder (or one file in it) of LM Studio's store
    PUBLISHER/MODEL or MODEL            a bare name: a path if it exists, else LM Studio's folder of
                                        that name (resolved in lmstudio.py)
    any of these + "@HOST:PORT"         the member runs on an `edge-specens rpc-server` there

Parsing refuses malformed names at once (InvalidParameterError, exit 2); whether a named model is
actually there is the resolvers' question (ollama.py, lmstudio.py, huggingface.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import InvalidParameterError
from ..remote.endpoint import Endpoint, parse_endpoint

__all__ = [
    "HF_REF",
    "HubFile",
    "LMStudioName",
    "OllamaName",
    "Reference",
    "hub_reference",
    "parse_reference",
    "split_placement",
]

Kind = Literal["path", "hf", "ollama", "lmstudio"]
OLLAMA_PREFIX = "ollama:"
LMSTUDIO_PREFIX = "lmstudio:"

HF_REF = re.compile(r"^(?:hf://)?(?P<repo>[\w.-]+/[\w.-]+)(?::|/)(?P<file>[^:]+\.gguf)$")


@dataclass(frozen=True)
class HubFile:
    """A GGUF on Hugging Face: repository and file (a path inside the repository)."""

    repo: str
    file: str

    def __str__(self) -> str:
        return f"{self.repo}:{self.file}"


# Ollama's name parts and their rules, from types/model/name.go (ollama/ollama, ParseNameBare,
# isValidPart, DefaultName): host, namespace, model, tag; defaults registry.ollama.ai, library, latest.
OLLAMA_HOST, OLLAMA_NAMESPACE, OLLAMA_TAG = "registry.ollama.ai", "library", "latest"
_OLLAMA_PART = {
    "host": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*"), 350),
    "namespace": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*"), 80),
    "model": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), 80),
    "tag": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), 80),
}


@dataclass(frozen=True)
class OllamaName:
    """A fully qualified Ollama model name; its manifest is manifests/<host>/<namespace>/<model>/<tag>."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.model, self.tag

    def __str__(self) -> str:
        """The shortest form Ollama itself displays (Name.DisplayShortest)."""
        if self.host.lower() != OLLAMA_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != OLLAMA_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @classmethod
    def parse(cls, text: str) -> OllamaName:
        """NAME[:TAG] as Ollama parses it: the tag after the last ':' that follows the last '/', then
        model, namespace and host from the right; missing parts take Ollama's defaults."""
        usage = "e.g. ollama:llama3.2, ollama:llama3.2:1b or ollama:namespace/model:tag"
        if not text:
            raise InvalidParameterError(f"'{OLLAMA_PREFIX}' needs a model name ({usage})")
        if "@" in text:
            raise InvalidParameterError(f"{OLLAMA_PREFIX}{text}: name a tag, not a digest ({usage})")
        s, tag = text, OLLAMA_TAG
        if s.rfind(":") > s.rfind("/"):
            s, _, tag = s.rpartition(":")
        host, namespace = OLLAMA_HOST, OLLAMA_NAMESPACE
        rest, sep, model = s.rpartition("/")
        if sep:
            before, sep, last = rest.rpartition("/")
            namespace = last if sep else rest
            if sep:
                host = before.split("://", 1)[-1]  # a scheme (https://) is not part of the folder
        name = cls(host, namespace, model, tag)
        for field, value in zip(("host", "namespace", "model", "tag"), name.parts):
            pattern, longest = _OLLAMA_PART[field]
            if not value or len(value) > longest or not pattern.fullmatch(value):
                also = {"host": "'-', '.', ':'", "namespace": "'-'"}.get(field, "'-', '.'")
                raise InvalidParameterError(
                    f"{OLLAMA_PREFIX}{text}: {value!r} is not a valid Ollama {field} (at most {longest} "
                    f"letters, digits and '_', then also {also}; {usage})"
                )
        return name


@dataclass(frozen=True)
class LMStudioName:
    """An LM Studio model: [publisher/]model folder, optionally one file in it (models/<publisher>/<model>/)."""

    publisher: str | None
    model: str
    file: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.publisher, self.model, self.file) if p)

    @classmethod
    def parse(cls, text: str, *, strict: bool = True) -> LMStudioName | None:
        """MODEL, PUBLISHER/MODEL or PUBLISHER/MODEL/FILE; never a path out of the store ('..', '/x').
        strict=False (a bare name that is not a path): None instead of an error."""
        parts = text.split("/")
        ok = 1 <= len(parts) <= 3 and all(p and p not in (".", "..") and "\\" not in p and "\0" not in p for p in parts)
        if not ok:
            if not strict:
                return None
            raise InvalidParameterError(
                f"{LMSTUDIO_PREFIX}{text}: expected MODEL, PUBLISHER/MODEL or PUBLISHER/MODEL/FILE.gguf "
                "(folder names in LM Studio's models folder)"
            )
        if len(parts) == 1:
            return cls(None, parts[0])
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


@dataclass(frozen=True)
class Reference:
    """One member's reference, parsed: what kind of store it names, what in it, and where it runs."""

    text: str  # as given, without "@host:port"
    kind: Kind
    target: Path | HubFile | OllamaName | LMStudioName
    endpoint: Endpoint | None = None  # an rpc-server that runs the member; None: here

    @property
    def label(self) -> str:
        """How messages name the reference: the text as given."""
        return self.text


def _exists(text: str) -> bool:
    try:
        return Path(text).exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a path
        return False


def split_placement(text: str) -> tuple[str, Endpoint | None]:
    """'model.gguf@host:port' -> ('model.gguf', endpoint); anything without '@' -> (text, None). A file
    whose real name contains '@' still loads locally: the text is a path first."""
    if "@" not in text or _exists(text):
        return text, None
    body, _, where = text.rpartition("@")
    if not body:
        return text, None
    return body, parse_endpoint(where)


def hub_reference(ref: str) -> tuple[str, str] | None:
    """(repo, file) when `ref` names a GGUF on Hugging Face: "owner/repo:file.gguf" (llama.cpp's -hf
    style) or "hf://owner/repo/file.gguf"; None for anything else (a local path)."""
    m = HF_REF.match(str(ref))
    if m is None or (not str(ref).startswith("hf://") and ":" not in str(ref)):
        return None
    return m["repo"], m["file"]


def parse_reference(ref: str | os.PathLike) -> Reference:
    """The Reference `ref` spells (module doc). A path that exists is always a path; malformed
    names and endpoints raise InvalidParameterError before anything is read or fetched."""
    text = os.fspath(ref)
    if not isinstance(text, str):
        raise InvalidParameterError(f"a model reference must be text or a path, got {ref!r}")
    if _exists(text):
        return Reference(text, "path", Path(text))
    if text.startswith(OLLAMA_PREFIX) and "@sha256" in text:
        OllamaName.parse(text[len(OLLAMA_PREFIX) :])  # says: name a tag, not a digest
    body, endpoint = split_placement(text)
    if _exists(body):
        return Reference(body, "path", Path(body), endpoint)
    if body.startswith(OLLAMA_PREFIX):
        return Reference(body, "ollama", OllamaName.parse(body[len(OLLAMA_PREFIX) :]), endpoint)
    if body.startswith(LMSTUDIO_PREFIX):
        name = LMStudioName.parse(body[len(LMSTUDIO_PREFIX) :])
        assert name is not None  # strict parsing raises instead
        return Reference(body, "lmstudio", name, endpoint)
    hub = hub_reference(body)
    if hub is not None:
        return Reference(body, "hf", HubFile(*hub), endpoint)
    return Reference(body, "path", Path(body), endpoint)
