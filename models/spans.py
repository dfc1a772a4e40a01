"""The canonical example: a text and labelled character spans on it.

Spans are the truth everywhere in seqtag; tags are derived from them by a
:mod:`models.schemes` scheme. Offsets are Unicode code points into the
*original* text, half-open, so ``text[span.start:span.end]`` is the span's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np


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


@dataclass
class SpanTable:
    """The spans of many texts as flat arrays, text by text and in text order within a text.

    What :meth:`models.pipeline.Pipeline.predict_table` returns: writers that only need offsets
    (``seqtag predict``'s ``seg`` output) work on the arrays and never build a :class:`Span`;
    :meth:`to_lists` gives the usual ``list[list[Span]]``.
    """

    counts: np.ndarray  # (texts,) spans per text
    starts: np.ndarray  # (spans,) character offsets, half-open
    ends: np.ndarray
    labels: np.ndarray  # (spans,) index into ``label_names``
    label_names: Sequence[str]
    scores: np.ndarray | None = None  # (spans,) confidence, when asked for

    @classmethod
    def empty(cls, texts: int, label_names: Sequence[str], scores: bool = False) -> "SpanTable":
        none = np.zeros(0, dtype=np.int64)
        return cls(np.zeros(texts, dtype=np.int64), none, none, none, label_names,
                   np.zeros(0) if scores else None)

    @classmethod
    def from_lists(cls, spans: Sequence[Sequence[Span]], label_names: Sequence[str] | None = None) -> "SpanTable":
        """A table of ``spans[i]`` for text i (labels indexed in ``label_names``, default: sorted)."""
        flat = [sp for row in spans for sp in row]
        names = list(label_names) if label_names is not None else sorted({sp.label for sp in flat})
        index = {name: k for k, name in enumerate(names)}
        scores = None
        if flat and all(sp.score is not None for sp in flat):
            scores = np.asarray([sp.score for sp in flat], dtype=np.float64)
        column = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
        return cls(column([len(row) for row in spans]), column([sp.start for sp in flat]),
                   column([sp.end for sp in flat]), column([index[sp.label] for sp in flat]), names, scores)

    @classmethod
    def concat(cls, tables: Sequence["SpanTable"], label_names: Sequence[str]) -> "SpanTable":
        """The rows of ``tables`` one after the other (all sharing ``label_names``)."""
        if not tables:
            return cls.empty(0, label_names)
        cat = lambda name: np.concatenate([getattr(t, name) for t in tables])  # noqa: E731
        scores = cat("scores") if all(t.scores is not None for t in tables) else None
        return cls(cat("counts"), cat("starts"), cat("ends"), cat("labels"), label_names, scores)

    def __len__(self) -> int:
        return len(self.counts)

    def take(self, rows: np.ndarray | Sequence[int]) -> "SpanTable":
        """A table of the given rows, in that order."""
        flat, counts = ragged_take(self.counts, rows)
        pick = lambda a: None if a is None else a[flat]  # noqa: E731
        return SpanTable(counts, self.starts[flat], self.ends[flat], self.labels[flat], self.label_names,
                         pick(self.scores))

    def split_rows(self) -> list["SpanTable"]:
        """One single-text table per text, in order (views of this table's arrays)."""
        bounds = np.cumsum(self.counts).tolist()
        cut = lambda a, z: None if self.scores is None else self.scores[a:z]  # noqa: E731
        return [SpanTable(self.counts[k : k + 1], self.starts[a:z], self.ends[a:z], self.labels[a:z],
                          self.label_names, cut(a, z))
                for k, (a, z) in enumerate(zip([0] + bounds[:-1], bounds))]

    @classmethod
    def joined(cls, parts: Sequence[tuple[int, "SpanTable"]], label_names: Sequence[str]) -> "SpanTable":
        """A single-text table from tables of pieces of that text: ``(where the piece starts in the text,
        its table)``, pieces in text order."""
        if len(parts) == 1 and parts[0][0] == 0 and len(parts[0][1]) == 1:
            return parts[0][1]
        if not parts:
            return cls.empty(1, label_names)
        tables = [t for _, t in parts]
        cat = lambda arrays: np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)  # noqa: E731
        scores = cat([t.scores for t in tables]) if all(t.scores is not None for t in tables) else None
        return cls(np.asarray([sum(len(t.starts) for t in tables)], dtype=np.int64),
                   cat([t.starts + shift for shift, t in parts]), cat([t.ends + shift for shift, t in parts]),
                   cat([t.labels for t in tables]), label_names, scores)

    def without_scores(self) -> "SpanTable":
        return self if self.scores is None else replace(self, scores=None)

    def records(self) -> Iterator[tuple[int, int, str, float | None]]:
        """``(start, end, label, score)`` of every span, text by text (score None when not asked for)."""
        names = list(self.label_names) or [""]
        scores = self.scores.tolist() if self.scores is not None else [None] * len(self.starts)
        return zip(self.starts.tolist(), self.ends.tolist(), [names[k] for k in self.labels.tolist()], scores)

    def to_lists(self) -> list[list[Span]]:
        """``list[list[Span]]``, one list per text."""
        names = np.asarray(list(self.label_names) or [""], dtype=object)
        columns = [self.starts.tolist(), self.ends.tolist(), names[self.labels].tolist()]
        if self.scores is not None:
            columns.append(self.scores.tolist())
        spans = list(map(Span, *columns))
        bounds = np.cumsum(self.counts).tolist()
        return [spans[a:z] for a, z in zip([0] + bounds[:-1], bounds)]


def ragged_take(counts: np.ndarray, rows: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a ragged array stored flat (row i holds ``counts[i]`` items, rows one after the other):
    the flat indices of the items of ``rows``, in that order, and those rows' counts."""
    rows = np.asarray(rows, dtype=np.int64)
    picked = counts[rows]
    firsts = (np.cumsum(counts) - counts)[rows]
    new_firsts = np.cumsum(picked) - picked
    return np.repeat(firsts - new_firsts, picked) + np.arange(int(picked.sum())), picked
