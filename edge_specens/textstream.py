"""Turn committed tokens into text: incremental UTF-8 and stop strings with hold-back.

Token pieces can end in the middle of a UTF-8 character, and a stop string can
span several tokens. So text is released only when it is complete and cannot be
the start of a stop string; `finish()` flushes what is left.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    def __init__(self, stop: Sequence[str] = ()):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = tuple(stop)
        self.text = ""  # everything decoded so far (cut at a stop string once found)
        self._sent = 0  # how much of self.text has been released
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Add a token's bytes; return newly releasable text ('' if held back)."""
        if self.stopped:
            return ""
        self.text += self._decoder.decode(piece)
        if self.stop:
            # a stop string can only end inside the new text, so search from just before it
            lo = max(0, self._sent - max(len(s) for s in self.stop))
            hits = [i for i in (self.text.find(s, lo) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
                return self._release(len(self.text))
        return self._release(len(self.text) - self._holdback())

    def finish(self) -> str:
        """Flush: end of generation (held-back partial stop strings are real text after all)."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._release(len(self.text))

    def _holdback(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        # an unfinished UTF-8 sequence is held by the decoder itself
        return best

    def _release(self, upto: int) -> str:
        upto = max(upto, self._sent)
        out = self.text[self._sent : upto]
        self._sent = upto
        return out
