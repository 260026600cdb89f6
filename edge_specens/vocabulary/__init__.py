"""Members' vocabularies: the shared-vocabulary rule today, and the bridge for members that differ.

**Shared vocabularies** (`common_vocab_size`, docs/design.md §2): every member has the same token text
at every id below the smallest vocabulary, and longer vocabularies differ only by padding. Rows are cut
to the common size; nothing else changes.

**The bridge** (docs/design.md §2, "Members with different vocabularies"). One member is the
*primary*: r lives on its vocabulary V_P and every committed token is a primary token. Every other
member is a *follower*:

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
  must be refused;
- `bridge.plan_vocabularies`: at load, which members follow the primary (vocab auto | shared | bridge);
- `FollowerMember` (follower_member.py): a loaded follower as a `DecodeMember` in the primary's token
  space (its own prompt, its pieces in one evaluation, rows carried onto V_P, abstention as None rows).

Pure Python and NumPy: no llama.cpp in this package (a loaded follower's tokenizer is passed in as a
function to `CheckedTokenizer`, and `FollowerMember` only calls the member it wraps).
"""

from .bridge import VOCAB_MODES, Bridge, VocabularyPlan, check_primary, plan_vocabularies
from .follower import CheckedTokenizer, Chunk, GreedySegmenter, Segmenter, TextFollower, complete_prefix
from .follower_member import FollowerMember, is_follower
from .pieces import gpt2_byte_of_char, gpt2_decode, loaded_attrs, token_pieces
from .pushforward import UNMAPPED, Pushforward
from .report import MAX_UNWRITABLE, MappingReport, report
from .shared import common_vocab_size
from .table import TokenTable

__all__ = [
    "MAX_UNWRITABLE",
    "UNMAPPED",
    "VOCAB_MODES",
    "Bridge",
    "CheckedTokenizer",
    "FollowerMember",
    "Chunk",
    "GreedySegmenter",
    "MappingReport",
    "Pushforward",
    "Segmenter",
    "TextFollower",
    "TokenTable",
    "VocabularyPlan",
    "check_primary",
    "common_vocab_size",
    "complete_prefix",
    "gpt2_byte_of_char",
    "gpt2_decode",
    "is_follower",
    "loaded_attrs",
    "plan_vocabularies",
    "report",
    "token_pieces",
]
