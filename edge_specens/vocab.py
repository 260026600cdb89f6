"""The shared-vocabulary rule (docs/design.md §2); it lives in the `vocabulary` package now, with the
bridge for members whose vocabularies differ. Kept so `from edge_specens.vocab import
common_vocab_size` keeps working."""

from __future__ import annotations

from .vocabulary.shared import common_vocab_size

__all__ = ["common_vocab_size"]
