"""Models LM Studio has already downloaded, used in place, by their folder names.

LM Studio keeps models as plain GGUF files in ``<models>/<publisher>/<model>/<file>.gguf``, the
Hugging Face repository's names (LM Studio docs, "Import Models": "~/.lmstudio/models/ └── publisher/
└── model/ └── model-file.gguf"). Its home is the folder named in ``~/.lmstudio-home-pointer``, else
``~/.cache/lm-studio`` when it exists, else ``~/.lmstudio`` (lmstudio-ai/lmstudio-js,
packages/lms-common-server/src/findLMStudioHome.ts), and the models are ``<home>/models``. All three
are searched here, the pointer's first; the pointer file is only read, never written. A models folder
moved elsewhere in LM Studio's settings is not followed: name such a file by its path.

A model folder may also hold a vision projector (``mmproj-*.gguf``) and the shards of a split model
(``*-00001-of-00003.gguf``); neither is a model of its own here, and the first shard stands for its
model (llama.cpp loads the rest from it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import InvalidParameterError, ModelNotFoundError
from .reference import LMSTUDIO_PREFIX, LMStudioName

_SHARD = re.compile(r"(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf", re.IGNORECASE)


def models_dirs() -> list[Path]:
    """LM Studio's models folders that exist, in the order LM Studio itself would pick its home."""
    home = Path.home()
    candidates = []
    try:
        with open(home / ".lmstudio-home-pointer", encoding="utf-8") as f:
            pointed = f.read(4096).strip().splitlines()
        if pointed and pointed[0].strip():
            candidates.append(Path(pointed[0].strip()).expanduser() / "models")
    except (OSError, UnicodeDecodeError):  # no pointer (or an unreadable one): the default homes
        pass
    candidates += [home / ".cache" / "lm-studio" / "models", home / ".lmstudio" / "models"]
    out: list[Path] = []
    for c in candidates:
        try:
            if c.is_dir() and all(c.resolve() != o.resolve() for o in out):
                out.append(c)
        except OSError:
            continue
    return out


def _looked_in() -> str:
    home = Path.home()
    return f"{home / '.lmstudio' / 'models'}, {home / '.cache' / 'lm-studio' / 'models'}"


def resolve(name: LMStudioName) -> Path:
    """The GGUF file `name` names. ModelNotFoundError when there is no store or no such model;
    InvalidParameterError when the name fits several models (it lists them)."""
    label = f"{LMSTUDIO_PREFIX}{name}"
    dirs = models_dirs()
    if not dirs:
        raise ModelNotFoundError(f"{label}: no LM Studio models folder (looked in {_looked_in()})")
    folders = _folders(dirs, name)
    if not folders:
        where = ", ".join(str(d) for d in dirs)
        raise ModelNotFoundError(
            f"{label}: no such model in LM Studio's models folder ({where}); "
            "`edge-specens models list --all` shows what is there"
        )
    if len(folders) > 1 and name.publisher is None:
        which = ", ".join(f"{LMSTUDIO_PREFIX}{f.parent.name}/{f.name}" for f in folders)
        raise InvalidParameterError(f"{label}: several LM Studio models have that name: {which}; name one")
    folder = folders[0]
    if name.file is not None:
        file = folder / name.file
        if file.is_file():
            return file
        held = ", ".join(f.name for f in _ggufs(folder)) or "no GGUF files"
        raise ModelNotFoundError(f"{label}: {folder} has no {name.file} (it holds {held})")
    models = _models(folder)
    if len(models) == 1:
        return models[0]
    if not models:
        raise ModelNotFoundError(f"{label}: {folder} holds no GGUF model")
    which = ", ".join(m.name for m in models)
    raise InvalidParameterError(
        f"{label}: {folder} holds {len(models)} GGUF models ({which}); name one as {label}/FILE.gguf"
    )


def lookup(text: str) -> Path | None:
    """A bare name (no prefix, not a path that exists) as an LM Studio model, or None when it is not
    one (no store, no such folder, or text that can only be a path)."""
    if not text or text.startswith(("~", ".", "/")) or Path(text).is_absolute():
        return None
    name = LMStudioName.parse(text, strict=False)
    if name is None or not models_dirs():
        return None
    try:
        return resolve(name)
    except ModelNotFoundError:
        return None


def _folders(dirs: list[Path], name: LMStudioName) -> list[Path]:
    if name.publisher is not None:
        return [d / name.publisher / name.model for d in dirs if (d / name.publisher / name.model).is_dir()]
    out = []
    for d in dirs:
        try:
            publishers = sorted(p for p in d.iterdir() if p.is_dir())
        except OSError:
            continue
        out += [p / name.model for p in publishers if (p / name.model).is_dir()]
    return out


def _ggufs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    except OSError:
        return []


def _models(folder: Path) -> list[Path]:
    """The GGUF models in one folder: every file but vision projectors, and a split model's first shard."""
    out = []
    for p in _ggufs(folder):
        shard = _SHARD.fullmatch(p.name)
        if p.name.lower().startswith("mmproj") or (shard is not None and int(shard["index"]) != 1):
            continue
        out.append(p)
    return out


def found() -> Iterator[tuple[str, Path | None, str | None]]:
    """(reference, file, None) for every model in LM Studio's folders (publisher/model/file.gguf)."""
    for d in models_dirs():
        for folder in sorted(p for p in d.glob("*/*") if p.is_dir()):
            for file in _models(folder):
                yield f"{LMSTUDIO_PREFIX}{folder.parent.name}/{folder.name}/{file.name}", file, None
