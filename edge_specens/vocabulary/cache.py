"""A follower's bridge tables kept between loads: built once per pair of files, read at every later load.

Building a bridge from two headers is pure Python over every token of both vocabularies (each token's
bytes, the byte-string indexes, the fixed map F_k, the report): 0.6 s for SmolLM2 → Qwen2.5-Coder-1.5B
and 1.2 s for Gemma 3 270M → Qwen on 2 cores. All of it is a function of the two headers, so after the
first load it is saved as one NumPy archive (`np.savez`, uncompressed, so reading costs a copy and no
inflate; no pickle: only numeric arrays and a JSON header stored as bytes, read with allow_pickle=False)
and read at the next load instead.

The archive's name is a digest of its key: FORMAT, the package version, and each file's identity (name,
size, mtime in ns). Bump FORMAT whenever what a table holds or how a map is built changes. What is read
is checked again before it is used: the key stored inside, every length against the headers just read, a
digest of each vocabulary's token texts, every id in range. Anything that does not match, and a file that
cannot be read at all (truncated, not a zip, a bad CRC, a missing array), counts as absent: the bridge is
built and the file overwritten. A cache file can cost a rebuild, never a failed load; a folder that
cannot be written only means building at every load. At most MAX_FILES archives are kept (the least
recently written go first).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._version import __version__
from .pushforward import NONE, Pushforward
from .report import MappingReport
from .table import TokenTable, header_fields

FORMAT = 1
MAX_FILES = 64
SUFFIX = ".npz"
_SIDES = ("p", "k")  # the primary's table, the follower's


def key(primary_info, follower_info) -> str:
    """What the pair's archive is keyed by: FORMAT, the version, and both files' name, size and mtime."""
    parts = [f"bridge-format {FORMAT}", f"edge_specens {__version__}"]
    for info in (primary_info, follower_info):
        st = os.stat(info.path)
        parts.append(f"{Path(info.path).name}|{st.st_size}|{st.st_mtime_ns}")
    return "\n".join(parts)


def path_for(folder: Path, key_text: str) -> Path:
    return folder / (hashlib.sha256(key_text.encode()).hexdigest()[:32] + SUFFIX)


def read(folder: Path, primary_info, follower_info) -> tuple[TokenTable, TokenTable, Pushforward, MappingReport] | None:
    """The pair's saved tables, or None when there are none or they do not match (module docstring)."""
    try:
        k = key(primary_info, follower_info)
        with np.load(path_for(folder, k), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        head = json.loads(arrays.pop("head").tobytes())
        if head.get("key") != k:
            return None
        p = _table(primary_info, arrays, head, "p")
        t = _table(follower_info, arrays, head, "k")
        index, how = arrays["fw_index"].astype(np.int32), arrays["fw_how"].astype(np.int8)
        if index.shape != (len(t),) or how.shape != (len(t),):
            return None
        if len(t) and not (
            -1 <= int(index.min()) <= int(index.max()) < len(p) and 0 <= int(how.min()) <= int(how.max()) <= NONE
        ):
            return None
        identity = t.texts == p.texts and t.attrs == p.attrs  # as Pushforward.build decides it
        fw = Pushforward(index, how, len(p), identity)
        report = _report(head["report"])
        if report.refusal is not None:
            return None
        return p, t, fw, report
    except Exception:  # any unreadable or inconsistent archive is no archive: the caller rebuilds it
        return None


def write(
    folder: Path, primary_info, follower_info, p: TokenTable, t: TokenTable, fw: Pushforward, report: MappingReport
) -> bool:
    """Save the pair's tables (atomically: a temporary file, then os.replace). False when it could not."""
    try:
        k = key(primary_info, follower_info)
        head: dict = {"key": k, "report": dataclasses.asdict(report)}
        arrays: dict[str, np.ndarray] = {"fw_index": fw.index.astype(np.int32), "fw_how": fw.how.astype(np.int8)}
        for side, table in zip(_SIDES, (p, t)):
            head[side] = _table_head(table)
            arrays.update(_table_arrays(table, side))
        arrays["head"] = np.frombuffer(json.dumps(head).encode(), np.uint8)
        folder.mkdir(parents=True, exist_ok=True)
        target = path_for(folder, k)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]  # numeric arrays only: nothing is pickled
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _prune(folder)
        return True
    except (OSError, ValueError, TypeError):
        return False


# ------------------------------------------------------------------------------------------ tables
def texts_digest(texts: Sequence[bytes]) -> str:
    """A digest of a vocabulary's token texts, to tell a saved table of other tokens from this one's."""
    return hashlib.sha256(b"\0".join(texts)).hexdigest() + f"/{len(texts)}"


def _table_head(t: TokenTable) -> dict:
    return {
        "n": len(t),
        "texts": texts_digest(t.texts),
        "eot": t.eot,
        "bos": t.bos,
        "add_bos": t.add_bos,
        "add_space_prefix": t.add_space_prefix,
    }


_INDEXES = ("by_bytes", "by_entry", "controls_by_text")


def _table_arrays(t: TokenTable, side: str) -> dict[str, np.ndarray]:
    """A table's derived data as arrays: attributes, pieces (one blob, offsets, a mask for None), the
    end-of-generation ids, and the ids of each index (by_bytes, by_entry, controls_by_text) in its order,
    so the dictionaries are rebuilt key for key."""
    pieces = t.pieces
    lengths = np.fromiter((len(x) if x is not None else 0 for x in pieces), np.int64, len(pieces))
    arrays: dict[str, np.ndarray] = {
        f"{side}_attrs": np.asarray(t.attrs, np.uint8),
        f"{side}_blob": np.frombuffer(b"".join(x for x in pieces if x), np.uint8),
        f"{side}_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        f"{side}_none": np.fromiter((x is None for x in pieces), np.bool_, len(pieces)),
        f"{side}_eog": np.asarray(sorted(t.eog), np.int32),
    }
    for name in _INDEXES:
        arrays[f"{side}_{name}"] = np.asarray(list(getattr(t, name).values()), np.int32)
    return arrays


def _table(info, arrays: dict[str, np.ndarray], head: dict, side: str) -> TokenTable:
    """A table rebuilt from the header just read and the saved arrays (ValueError when they disagree).
    Its pieces and indexes are rebuilt from the arrays when first used, as the built table's are derived."""
    h = head[side]
    fields = header_fields(info)  # the texts, names and model: from the header itself
    texts = fields["texts"]
    n = len(texts)
    attrs, offsets, none = arrays[f"{side}_attrs"], arrays[f"{side}_offsets"], arrays[f"{side}_none"]
    blob = arrays[f"{side}_blob"].tobytes()
    if h["n"] != n or len(attrs) != n or len(none) != n or len(offsets) != n + 1:
        raise ValueError("the saved table has another length")
    if int(offsets[0]) != 0 or int(offsets[-1]) != len(blob) or (n and int(np.diff(offsets).min()) < 0):
        raise ValueError("the saved pieces do not fit their blob")
    if h["texts"] != texts_digest(texts):
        raise ValueError("the saved table is of other tokens")
    eog = arrays[f"{side}_eog"]
    ids = {name: arrays[f"{side}_{name}"] for name in _INDEXES}
    for a in (eog, *ids.values()):
        if a.ndim != 1 or (len(a) and not 0 <= int(a.min()) <= int(a.max()) < n):
            raise ValueError("a saved id is out of range")
    if none[ids["by_bytes"]].any() or none[ids["by_entry"]].any():
        raise ValueError("a saved index names a token that writes nothing")
    if not -1 <= int(h["eot"]) < n or not -1 <= int(h["bos"]) < n:
        raise ValueError("a saved role is out of range")

    def pieces() -> tuple[bytes | None, ...]:
        o = offsets.tolist()
        out: list[bytes | None] = [blob[a:b] for a, b in zip(o, o[1:])]
        for i in np.flatnonzero(none).tolist():
            out[i] = None
        return tuple(out)

    return TokenTable(
        **fields,
        attrs=tuple(attrs.tolist()),
        eog=frozenset(eog.tolist()),
        eot=int(h["eot"]),
        bos=int(h["bos"]),
        add_bos=bool(h["add_bos"]),
        add_space_prefix=bool(h["add_space_prefix"]),
        restored={"pieces": pieces, **{name: a.tolist() for name, a in ids.items()}},
    )


def _report(d: dict) -> MappingReport:
    d = dict(d)
    d["missing_bytes"] = tuple(int(b) for b in d["missing_bytes"])
    d["eog_map"] = tuple((str(a), str(b)) for a, b in d["eog_map"])
    return MappingReport(**d)


def _prune(folder: Path) -> None:
    """Keep the MAX_FILES most recently written archives."""
    files = sorted(folder.glob("*" + SUFFIX), key=lambda f: f.stat().st_mtime_ns, reverse=True)
    for f in files[MAX_FILES:]:
        try:
            f.unlink()
        except OSError:
            pass
