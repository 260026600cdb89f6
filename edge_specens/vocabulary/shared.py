"""The shared-vocabulary rule (docs/design.md §2): one tokenizer for every member, padding aside.

Members share a vocabulary when every id below the smallest vocabulary size has the same text in
every file, and every id beyond it, in a longer vocabulary, is *padding*: a row no text needs
(`TokenTable.is_padding`: unused tokens, control tokens named like `[PAD7]`). Qwen2.5 files, for
example, ship 151,936 or 152,064 rows around the same 151,665 tokens. Rows are then cut to the common
size and nothing is lost.

Member 0 is stricter, because its tokenizer turns every prompt into ids: its extra rows must be ones
its tokenizer can never produce (`TokenTable.can_produce`), i.e. bare unused tokens. A padding
*control* token such as `<|PAD_TOKEN|>` is produced from the text "<|PAD_TOKEN|>" by llama.cpp's
special-token pass, and a member without that id would fail in llama_decode; listing the shorter file
first makes such a pair work.

A longer vocabulary whose extra entries are real tokens is *not* shared, even though the shorter one
is a prefix of it: member 0's tokenizer would produce those ids from ordinary text, or (when it is the
shorter one) the other member's votes for them would be cut away. Such a pair fails this rule
(`VocabularyMismatchError`, naming both files and the first real extra token); by default the other
member then follows the primary through the bridge (`bridge.plan_vocabularies`), and `vocab="shared"`
keeps the refusal.

Checked from the GGUF headers, before any weights load: a mismatch costs milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import VocabularyMismatchError
from ..gguf_header import GGUFInfo
from .table import TokenTable


def common_vocab_size(infos: Sequence[GGUFInfo]) -> int:
    """Check every member against the first; return the common size (the smallest vocab).

    Raises VocabularyMismatchError when two files disagree on an id they both have, or when a file's
    rows beyond the common size are not all padding."""
    base = infos[0]
    n_common = min(i.n_vocab for i in infos)
    if n_common == 0:
        raise VocabularyMismatchError(f"{min(infos, key=lambda i: i.n_vocab).path}: the file has no vocabulary")
    shortest = min(infos, key=lambda i: i.n_vocab)
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
    for k, info in enumerate(infos):
        if info.n_vocab > n_common:
            _check_tail(info, n_common, shortest, tokenizes=k == 0)
    return n_common


def _check_tail(info: GGUFInfo, n_common: int, shortest: GGUFInfo, tokenizes: bool) -> None:
    """Every row of `info` from n_common on must be padding, and one its tokenizer never produces if it
    is the member that tokenizes text."""
    table = TokenTable.from_info(info)
    extra = len(table) - n_common
    more = f"{extra} token{'s' if extra != 1 else ''} more than {shortest.path.name}"
    for i in range(n_common, len(table)):
        if not table.is_padding(i):
            raise VocabularyMismatchError(
                f"vocabularies differ: {info.path.name} has {more}, and they are not padding "
                f"(token id {i} is {table.text(i)!r}); ensemble members must share one tokenizer"
            )
        if tokenizes and table.can_produce(i):
            raise VocabularyMismatchError(
                f"vocabularies differ: {info.path.name} tokenizes the prompts and has {more}; its tokenizer "
                f"turns the text {table.text(i)!r} into token id {i}, which {shortest.path.name} lacks. "
                f"List {shortest.path.name} first"
            )
