"""What the server tells clients about its model, gathered once: names, files, sizes, template, FIM.

/props, /api/tags, /api/show and /api/ps all describe the same ensemble; the facts come from the GGUF
headers (gguf_header.py, already read when the members loaded) and the first member's vocabulary,
once per ensemble, on first use.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import EdgeSpecensError
from ..fim import FimTokens, fim_tokens


@dataclass(frozen=True)
class MemberFacts:
    name: str
    path: str
    size: int  # bytes of the GGUF file (0: unknown)
    architecture: str
    n_params: int
    quantization: str
    trained_context: int | None
    device: str


@dataclass(frozen=True)
class Facts:
    name: str
    members: tuple[MemberFacts, ...]
    method: str
    weights: tuple[float, ...]
    n_ctx: int
    chat_template: str | None  # the GGUF's Jinja template (None: the ChatML fallback of chat.py)
    eos_text: str
    fim: FimTokens | None
    fim_text: tuple[str, str, str] | None  # the prefix, suffix and middle tokens' text
    modified_at: datetime  # the newest member file's modification time
    digest: str  # sha256 over the members' paths, sizes and times (not their contents: gigabytes)

    @property
    def size(self) -> int:
        return sum(m.size for m in self.members)

    @property
    def n_params(self) -> int:
        return sum(m.n_params for m in self.members)

    @property
    def architecture(self) -> str:
        return self.members[0].architecture if self.members else "unknown"

    @property
    def quantization(self) -> str:
        return "+".join(dict.fromkeys(m.quantization for m in self.members))


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def facts(ens, name: str) -> Facts:
    """The facts of `ens` served as `name` (gathered on the first call)."""
    with _LOCK:
        served = _CACHE.setdefault(ens, {})
        if name not in served:
            served[name] = _gather(ens, name)
        return served[name]


def _gather(ens, name: str) -> Facts:
    members = tuple(_member(m) for m in ens.members)
    first = ens.members[0]
    template, eos_text = None, ""
    try:
        template = (first.metadata() or {}).get("tokenizer.chat_template")
        eos = first.eos_token
        eos_text = first.token_text(eos).decode("utf-8", "replace") if eos >= 0 else ""
    except (AttributeError, EdgeSpecensError):  # a member without llama.cpp metadata (tests' fakes)
        pass
    try:
        fim: FimTokens | None = fim_tokens(ens)
    except (AttributeError, EdgeSpecensError):
        fim = None
    fim_text = None
    if fim is not None:
        try:
            fim_text = tuple(
                first.token_text(t).decode("utf-8", "replace") for t in (fim.prefix, fim.suffix, fim.middle)
            )
        except (AttributeError, EdgeSpecensError):
            fim_text = ("<FIM_PRE>", "<FIM_SUF>", "<FIM_MID>")
    times, h = [], hashlib.sha256(name.encode())
    for m in members:
        h.update(f"\0{m.path}\0{m.size}".encode())
        try:
            times.append(Path(m.path).stat().st_mtime)
        except OSError:
            pass
    modified = datetime.fromtimestamp(max(times), timezone.utc) if times else datetime.now(timezone.utc)
    h.update(str(modified.timestamp()).encode())
    return Facts(
        name,
        members,
        ens.spec.method,
        tuple(ens.spec.weights),
        ens.n_ctx,
        template if isinstance(template, str) else None,
        eos_text,
        fim,
        fim_text,
        modified,
        h.hexdigest(),
    )


def _member(m) -> MemberFacts:
    info = getattr(m, "info", None)
    path = getattr(m, "path", None)
    if info is None and path is not None:
        from ..gguf_header import validate_gguf

        try:
            info = validate_gguf(path)
        except EdgeSpecensError:
            info = None
    size = info.file_size if info is not None else 0
    return MemberFacts(
        name=m.name,
        path=str(path) if path is not None else "",
        size=size,
        architecture=info.architecture if info is not None else "unknown",
        n_params=int(getattr(m, "n_params", 0) or 0),
        quantization=info.quantization if info is not None else "unknown",
        trained_context=info.context_length if info is not None else None,
        device=getattr(m, "device", "cpu"),
    )


def iso(t: datetime) -> str:
    """RFC 3339 with a Z, as Ollama writes times."""
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parameter_size(n: int) -> str:
    """Ollama's spelling of a parameter count: 494M, 1.5B."""
    if n >= 10**9:
        return f"{n / 1e9:.1f}B"
    if n >= 10**6:
        return f"{n / 1e6:.0f}M"
    return f"{n / 1e3:.0f}K" if n >= 10**3 else str(n)
