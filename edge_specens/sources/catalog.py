"""Every GGUF the stores on this machine hold (`edge-specens models list --all`), from headers alone.

Nothing is copied or loaded: each file's header is read by gguf_header (no weights, no llama.cpp),
so a corrupt file is listed with what is wrong with it instead of stopping the listing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError
from ..gguf_header import validate_gguf
from . import huggingface, lmstudio, ollama


@dataclass(frozen=True)
class Store:
    """One place models live: its name, its folders (those that exist) and the folders it would use."""

    name: str
    folders: tuple[Path, ...]
    default: str  # where it is looked for, for the "no store" line


@dataclass(frozen=True)
class FoundModel:
    """One GGUF in a store: the reference that loads it and what its header says (or why it cannot)."""

    store: str
    reference: str  # e.g. ollama:llama3.2:1b, lmstudio:pub/model/file.gguf, owner/repo:file.gguf
    path: Path | None
    architecture: str = ""
    size: int = 0
    tokenizer: str = ""  # tokenizer.ggml.model (gpt2, llama, ...)
    n_vocab: int = 0
    chat_template: bool = False
    problem: str | None = None  # why it cannot be used; None: it can


def stores() -> list[Store]:
    """The three stores, each with the folders of it that exist on this machine."""
    home = Path.home()
    o, hub = ollama.models_dir(), huggingface.cache_dir()
    return [
        Store("ollama", (o,) if (o / "manifests").is_dir() else (), f"{o} ($OLLAMA_MODELS)"),
        Store(
            "lmstudio",
            tuple(lmstudio.models_dirs()),
            f"{home / '.lmstudio' / 'models'} or {home / '.cache' / 'lm-studio' / 'models'}",
        ),
        Store("huggingface", (hub,) if hub.is_dir() else (), f"{hub} ($HF_HUB_CACHE)"),
    ]


def found_models(store: str) -> Iterator[FoundModel]:
    """Every model of one store ("ollama", "lmstudio" or "huggingface"), each with its header facts."""
    finders = {"ollama": ollama.found, "lmstudio": lmstudio.found, "huggingface": huggingface.found}
    for reference, path, problem in finders[store]():
        if path is None:
            yield FoundModel(store, reference, None, problem=problem)
            continue
        try:
            info = validate_gguf(path)
        except ModelLoadError as e:
            yield FoundModel(store, reference, path, problem=str(e).removeprefix(f"{path}: "))
            continue
        yield FoundModel(
            store,
            reference,
            path,
            architecture=info.architecture,
            size=info.file_size,
            tokenizer=str(info.metadata.get("tokenizer.ggml.model", "-")),
            n_vocab=info.n_vocab,
            chat_template=info.chat_template is not None,
        )
