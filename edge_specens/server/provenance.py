"""Where each streamed token came from, for clients that ask (`"provenance": true` in a request).

A stream chunk carries text, but a chunk's text need not be one token's: text is held back while
a UTF-8 character or a possible stop string is unfinished, so one chunk may release several tokens'
text at once, and the last chunk flushes what was held. `Provenance` keeps the tokens whose text
has not gone out yet and, when a chunk's text goes out, splits that text among them:

    [{"token": 9906, "text": "Hel", "how": "accepted", "member": 0}, ...]

how: "accepted"/"bonus" (member k's draft), "lookup" (prompt lookup), "resampled" (drawn from the
residual after a rejection), "sampled" (drawn from r); member: the ensemble index of the proposer,
or None. The spans' texts always join to exactly the chunk's text (the page colours them).
"""

from __future__ import annotations

import codecs
from typing import Any


class Provenance:
    """Collects one generation's token origins and hands them out with the text they released."""

    def __init__(self, ens, gen):
        self._ens = ens
        self._members = gen.plan.members  # plan index -> ensemble index (as the CLI's --provenance)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[tuple[dict[str, Any], str]] = []  # (span, that token's own text)

    def add(self, ev) -> list[dict] | None:
        """Record an Event; the spans for its text when it releases some, else None."""
        if ev.token >= 0:
            member = self._members[ev.step.member] if ev.step.member is not None else None
            span = {"token": ev.token, "text": "", "how": ev.step.how, "member": member}
            self._pending.append((span, self._decoder.decode(self._ens.piece(ev.token))))
        if not ev.text:
            return None
        pending, self._pending = self._pending, []
        if not pending:  # a flush with no token of its own (cannot happen today): still accounted for
            return [{"token": None, "text": ev.text, "how": "flush", "member": None}]
        return split(ev.text, pending)


def split(text: str, pending: list[tuple[dict, str]]) -> list[dict]:
    """Give each token the part of `text` it wrote, in order; what is left (text that does not
    match the tokens' own, e.g. after a stop string cut it) goes to the last token."""
    pos = 0
    spans = []
    for span, own in pending:
        take = own if own and text.startswith(own, pos) else ""
        span["text"] = take
        pos += len(take)
        spans.append(span)
    spans[-1]["text"] += text[pos:]
    return spans


def with_provenance(chunk: dict, spans: list[dict] | None) -> dict:
    """A stream chunk with its tokens' spans under "edge_specens" (unchanged without spans)."""
    if spans:
        chunk["edge_specens"] = {"provenance": spans}
    return chunk
