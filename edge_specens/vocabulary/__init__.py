"""Members' vocabularies: the shared-vocabulary rule today, and the bridge for members that differ.

**Shared vocabularies** (`common_vocab_size`, docs/design.md §2): every member has the same token text
at every id below the smallest vocabulary, and longer vocabularies differ only by padding. Rows are cut
to the common size; nothing else changes.

**The bridge** (docs/design.md §2, "Members with different vocabularies"; in progress: these are the
pure, tested pieces, not yet wired into the decode loop). One member is the *primary*: r lives on its
vocabulary V_P and every committed token is a primary token. Every other member is a *follower*:

- `pieces` / `TokenTable`: the exact bytes each token writes, computed from the GGUF header as
  llama.cpp computes them (GPT-2 byte table, SentencePiece `▁` and `<0xNN>`; control, unknown and
  unused tokens write nothing), and the end-of-generation roles;
- `TextFollower` (follower side, input): the committed primary tokens become the follower's own
  tokens piece by piece, with a UTF-8 hold-back, deterministic in the prefix and prefix-stable, so a
  follower scores every pending draft in one llama_decode and rolls back by primary position; it
  abstains (no vote) only while a split character is held back;
- `Pushforward` (follower side, output): the follower's next-token distribution is carried onto V_P
  by a fixed map F_k (the primary token that starts what the follower token writes; end of
  generation by role), one `np.bincount` per row, the identity for identical vocabularies;
- `report`: how well a follower maps onto the primary, from the headers alone, and when the pair
  must be refused.

Pure Python and NumPy: no llama.cpp in this package (a loaded follower's tokenizer is passed in as a
function to `CheckedTokenizer`).
"""

from .follower import CheckedTokenizer, Chunk, GreedySegmenter, Segmenter, TextFollower, complete_prefix
from .pieces import gpt2_byte_of_char, gpt2_decode, loaded_attrs, token_pieces
from .pushforward import UNMAPPED, Pushforward
from .report import MAX_UNWRITABLE, MappingReport, report
from .shared import common_vocab_size
from .table import TokenTable

__all__ = [
    "MAX_UNWRITABLE",
    "UNMAPPED",
    "CheckedTokenizer",
    "Chunk",
    "GreedySegmenter",
    "MappingReport",
    "Pushforward",
    "Segmenter",
    "TextFollower",
    "TokenTable",
    "common_vocab_size",
    "complete_prefix",
    "gpt2_byte_of_char",
    "gpt2_decode",
    "loaded_attrs",
    "report",
    "token_pieces",
]
