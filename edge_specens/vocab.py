"""The shared-vocabulary rule (docs/design.md §2): identical token text for every id below the smallest vocab.

Checked from the GGUF headers, before any weights are loaded, so a mismatch costs
milliseconds and names both files and the first differing id.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import VocabularyMismatchError
from .gguf_header import GGUFInfo


def common_vocab_size(infos: Sequence[GGUFInfo]) -> int:
    """Check every member against the first; return the common size (the smallest vocab)."""
    base = infos[0]
    n_common = min(i.n_vocab for i in infos)
    if n_common == 0:
        raise VocabularyMismatchError(f"{min(infos, key=lambda i: i.n_vocab).path}: the file has no vocabulary")
    for other in infos[1:]:
        a, b = base.tokens, other.tokens
        assert a is not None and b is not None, "read the headers with read_tokens=True"
        if a[:n_common] == b[:n_common]:
            continue
        first = next(i for i in range(n_common) if a[i] != b[i])
        raise VocabularyMismatchError(
            f"vocabularies differ: {base.path.name} and {other.path.name} disagree at token id {first} "
            f"({a[first]!r} vs {b[first]!r}); ensemble members must share one tokenizer"
        )
    return n_common
