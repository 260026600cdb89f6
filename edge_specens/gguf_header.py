"""Read and sanity-check a GGUF header in pure Python before llama.cpp sees the file.

llama.cpp trusts its input: some malformed files (absurd counts, tensors past the
end of the file) can make it abort the whole process instead of returning an
error. We parse the header ourselves, check every count and every tensor's data
range against the file size, and raise ModelLoadError with the reason. The same
pass yields the facts `models info` shows and the token list the vocabulary check
compares, without loading any weights.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# ggml type id -> (elements per block, bytes per block); from ggml.h / gguf-py constants
GGML_BLOCK = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 36),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    16: (256, 66),
    17: (256, 74),
    18: (256, 98),
    19: (256, 50),
    20: (32, 18),
    21: (256, 110),
    22: (256, 82),
    23: (256, 136),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    29: (256, 56),
    30: (1, 2),
    34: (256, 54),
    35: (256, 66),
    39: (32, 17),
}
GGML_TYPE_NAMES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    30: "BF16",
    39: "MXFP4",
}
# llama.cpp's LLAMA_FTYPE names for general.file_type
FILE_TYPE_NAMES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}
# arrays kept with read_tokens=True: what the vocabulary package (vocabulary/) maps tokens by
_VOCABULARY_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")
_MAX_COUNT = 1 << 24  # no real model has 16M tensors, metadata keys or array entries


@dataclass
class GGUFInfo:
    """What the header says about a model file."""

    path: Path
    version: int
    file_size: int
    metadata: dict = field(repr=False)
    tensors: dict = field(repr=False)  # name -> (shape tuple, ggml type id)
    tokens: list | None = field(default=None, repr=False)
    token_types: list | None = field(default=None, repr=False)  # tokenizer.ggml.token_type, with the tokens

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def n_vocab(self) -> int:
        return int(self.metadata.get("tokenizer.ggml.tokens", 0))

    @property
    def context_length(self) -> int | None:
        v = self.metadata.get(f"{self.architecture}.context_length")
        return int(v) if v is not None else None

    @property
    def n_params(self) -> int:
        total = 0
        for shape, _ in self.tensors.values():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total

    @property
    def quantization(self) -> str:
        ft = self.metadata.get("general.file_type")
        if ft is not None:
            return FILE_TYPE_NAMES.get(int(ft), f"file_type {ft}")
        types = {GGML_TYPE_NAMES.get(t, str(t)) for _, t in self.tensors.values()}
        return "/".join(sorted(types))

    @property
    def chat_template(self) -> str | None:
        v = self.metadata.get("tokenizer.chat_template")
        return v if isinstance(v, str) else None


class _Reader:
    def __init__(self, f, path: Path, size: int):
        self.f, self.path, self.size = f, path, size

    def fail(self, why: str):
        raise ModelLoadError(f"{self.path}: not a valid GGUF file ({why})")

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            self.fail("truncated header")
        return b

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self, what: str) -> int:
        n = self.unpack("<Q")
        if n > _MAX_COUNT:
            self.fail(f"implausible {what} {n}")
        return n

    def string(self) -> bytes:
        n = self.unpack("<Q")
        if n > self.size:
            self.fail(f"string length {n} beyond the file size")
        return self.read(n)

    def value(self, vtype: int, keep: bool):
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            s = self.string()
            return s.decode("utf-8", errors="replace") if keep else None
        if vtype == _ARRAY:
            etype = self.unpack("<I")
            n = self.count("array length")
            if etype == _STRING:
                items = [self.string() for _ in range(n)]
                return items if keep else n
            if etype in _SCALAR:
                width = struct.calcsize(_SCALAR[etype])
                if n * width > self.size:
                    self.fail("array beyond the file size")
                if keep:
                    return list(struct.unpack(f"<{n}{_SCALAR[etype][1:]}", self.read(n * width)))
                self.f.seek(n * width, os.SEEK_CUR)
                return n
            self.fail(f"unsupported array element type {etype}")
        self.fail(f"unknown metadata value type {vtype}")


def validate_gguf(path: str | os.PathLike, read_tokens: bool = False) -> GGUFInfo:
    """Parse and check a GGUF file's header. Raises ModelLoadError with a clear reason.

    Args:
        path: the model file.
        read_tokens: also return the vocabulary (list of bytes) in `info.tokens` and its token types
            (list of ints, GGUF TokenType) in `info.token_types`.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: file not found")
    if not p.is_file():
        raise ModelLoadError(f"{p}: not a regular file")
    try:
        size = p.stat().st_size
        f = open(p, "rb", buffering=1 << 20)
    except OSError as e:
        raise ModelLoadError(f"{p}: cannot read ({e.strerror or e})") from None
    with f:
        r = _Reader(f, p, size)
        if size == 0:
            r.fail("empty file")
        magic = f.read(4)
        if magic != GGUF_MAGIC:
            r.fail(f"bad magic {magic!r}, expected b'GGUF'")
        version = r.unpack("<I")
        if version not in (2, 3):
            r.fail(f"unsupported GGUF version {version}")
        n_tensors = r.count("tensor count")
        n_kv = r.count("metadata count")
        metadata: dict = {}
        vocabulary: dict = {}  # the token list and its types, read only when asked for
        for _ in range(n_kv):
            key = r.string().decode("utf-8", errors="replace")
            vtype = r.unpack("<I")
            keep = vtype != _ARRAY or (key in _VOCABULARY_ARRAYS and read_tokens)
            val = r.value(vtype, keep)
            if key in _VOCABULARY_ARRAYS and read_tokens and isinstance(val, list):
                vocabulary[key] = val
                val = len(val)
            metadata[key] = val
        tensors: dict = {}
        infos = []
        for _ in range(n_tensors):
            name = r.string().decode("utf-8", errors="replace")
            n_dims = r.unpack("<I")
            if n_dims > 8:
                r.fail(f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(r.unpack("<Q") for _ in range(n_dims))
            ttype = r.unpack("<I")
            offset = r.unpack("<Q")
            tensors[name] = (shape, ttype)
            infos.append((name, shape, ttype, offset))
        align = int(metadata.get("general.alignment", 32) or 32)
        if align <= 0 or align & (align - 1):
            r.fail(f"bad alignment {align}")
        data_start = (f.tell() + align - 1) // align * align
    for name, shape, ttype, offset in infos:
        n = 1
        for d in shape:
            n *= d
        if ttype not in GGML_BLOCK:
            if ttype > 64:
                raise ModelLoadError(f"{p}: not a valid GGUF file (tensor {name!r} has unknown type {ttype})")
            continue
        block, nbytes = GGML_BLOCK[ttype]
        end = data_start + offset + (n // block) * nbytes
        if end > size:
            raise ModelLoadError(
                f"{p}: truncated or corrupt GGUF file (tensor {name!r} ends at byte {end}, "
                f"file has {size}); re-download it"
            )
    if "general.architecture" not in metadata:
        raise ModelLoadError(f"{p}: not a valid GGUF model (no general.architecture)")
    return GGUFInfo(
        p,
        version,
        size,
        metadata,
        tensors,
        vocabulary.get("tokenizer.ggml.tokens"),
        vocabulary.get("tokenizer.ggml.token_type"),
    )
