"""The canonical example: a text and labelled character spans on it.

Spans are the truth everywhere in seqtag; tags are derived from them by a
:mod:`models.schemes` scheme. Offsets are Unicode code points into the
*original* text, half-open, so ``text[span.start:span.end]`` is the span's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    label: str = ""  # "" for plain words (segmentation)
    score: float | None = field(default=None, compare=False)  # model confidence, 0..1

    def text_of(self, text: str) -> str:
        return text[self.start : self.end]


@dataclass
class Example:
    """One sentence or document with its gold (or predicted) spans."""

    text: str
    spans: list[Span] = field(default_factory=list)
    source: str = ""  # "file:line" of the first line, for error messages

    def labels(self) -> set[str]:
        return {s.label for s in self.spans}
