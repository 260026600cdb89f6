"""Models Ollama has already pulled, used in place: name → manifest → model layer → blob.

The layout, as Ollama (github.com/ollama/ollama) writes and reads it:

- the store is ``$OLLAMA_MODELS`` (trimmed of spaces and quotes, like envconfig.Var) or
  ``~/.ollama/models`` (envconfig/config.go, ``Models()``);
- a name is ``host/namespace/model:tag`` with the defaults ``registry.ollama.ai``, ``library`` and
  ``latest`` (types/model/name.go, ``ParseName``/``DefaultName``), and its manifest is the file
  ``manifests/<host>/<namespace>/<model>/<tag>`` (``Name.Filepath``, manifest/paths.go ``PathForName``);
  every manifest is ``manifests/*/*/*/*`` (manifest/manifest.go ``Manifests``);
- a manifest is JSON with ``layers``, each ``{mediaType, digest, size}``; the weights are the layer of
  media type ``application/vnd.ollama.image.model`` (server/images.go, ``GetModel``, which takes the
  last such layer);
- a layer's bytes are ``blobs/sha256-<hex>`` (manifest/paths.go ``BlobsPath``: only
  ``sha256[:-]<64 hex>`` digests, ':' written as '-').

Nothing is copied: the blob itself is the member's GGUF. Its size is checked against the manifest
here and its header by gguf_header before llama.cpp sees it; its sha256 is not recomputed (Ollama
verified it when it pulled, and hashing gigabytes at every load would cost more than the load).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelLoadError, ModelNotFoundError
from .reference import OLLAMA_PREFIX, OllamaName

MODEL_LAYER = "application/vnd.ollama.image.model"
_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
_MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few hundred bytes; anything bigger is not one


def models_dir() -> Path:
    """Ollama's store: $OLLAMA_MODELS as Ollama reads it (spaces and quotes trimmed), else ~/.ollama/models."""
    given = os.environ.get("OLLAMA_MODELS", "").strip().strip("\"'")
    return Path(given) if given else Path.home() / ".ollama" / "models"


def resolve(name: OllamaName) -> Path:
    """The blob holding `name`'s GGUF weights. ModelNotFoundError when there is no store, no such
    name or no blob; ModelLoadError when the manifest is not one or has no GGUF model layer."""
    label = f"{OLLAMA_PREFIX}{name}"
    root = models_dir()
    if not (root / "manifests").is_dir():
        raise ModelNotFoundError(
            f"{label}: no Ollama models at {root} (set OLLAMA_MODELS to the folder Ollama keeps them in)"
        )
    manifest = root / "manifests" / Path(*name.parts)
    if not manifest.is_file():
        tags = sorted(p.name for p in manifest.parent.iterdir() if p.is_file()) if manifest.parent.is_dir() else []
        has = f"; it has {', '.join(str(OllamaName(*name.parts[:3], t)) for t in tags)}" if tags else ""
        raise ModelNotFoundError(
            f"{label}: Ollama has not pulled it (no {manifest}){has}; `ollama pull {name}` fetches it, "
            "`edge-specens models list --all` shows what is there"
        )
    return blob_of(root, manifest, label)


def blob_of(root: Path, manifest: Path, label: str) -> Path:
    """The model layer's blob named by one manifest file of the store `root`, checked to exist with
    the manifest's size."""
    layer = _model_layer(_read_manifest(manifest, label), manifest, label)
    m = _DIGEST.fullmatch(str(layer.get("digest", "")))
    if m is None:
        raise ModelLoadError(f"{label}: {manifest}: the model layer's digest {layer.get('digest')!r} is not sha256")
    blob = root / "blobs" / f"sha256-{m[1]}"
    try:
        size = blob.stat().st_size
    except OSError:
        raise ModelNotFoundError(
            f"{label}: the model's blob {blob} is missing; `ollama pull` the model again to restore it"
        ) from None
    want = layer.get("size")
    if isinstance(want, int) and size != want:
        raise ModelLoadError(
            f"{label}: {blob} has {size:,} bytes, its manifest says {want:,}: corrupt or incomplete; "
            "`ollama pull` the model again"
        )
    return blob


def _read_manifest(path: Path, label: str) -> dict:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise ModelLoadError(f"{label}: cannot read {path} ({e.strerror or e})") from None
    try:
        data = json.loads(raw) if len(raw) <= _MAX_MANIFEST_BYTES else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{label}: {path} is not an Ollama manifest (not a JSON object of at most 1 MiB)")
    return data


def _model_layer(manifest: dict, path: Path, label: str) -> dict:
    given = manifest.get("layers")
    layers = [x for x in given if isinstance(x, dict)] if isinstance(given, list) else []
    models = [x for x in layers if x.get("mediaType") == MODEL_LAYER]
    if not models:
        kinds = sorted({str(x.get("mediaType")) for x in layers})
        raise ModelLoadError(
            f"{label}: {path} has no GGUF model layer ({MODEL_LAYER}); its layers: {', '.join(kinds) or 'none'}"
        )
    return models[-1]  # as Ollama's GetModel: the last model layer is the model


def found() -> Iterator[tuple[str, Path | None, str | None]]:
    """(reference, blob, None) for every pulled model, or (reference, None, why) for one that cannot
    be used; nothing when there is no store."""
    root = models_dir()
    manifests = root / "manifests"
    if not manifests.is_dir():
        return
    for manifest in sorted(manifests.glob("*/*/*/*")):
        if not manifest.is_file():
            continue
        host, namespace, model, tag = manifest.relative_to(manifests).parts
        label = f"{OLLAMA_PREFIX}{OllamaName(host, namespace, model, tag)}"
        try:
            yield label, blob_of(root, manifest, label), None
        except ModelLoadError as e:
            yield label, None, str(e).removeprefix(f"{label}: ")
