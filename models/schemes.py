"""Tag schemes as data: BMES, BIOES and BIO (IOB2).

Every function here is pure and works on *unit* indices (not characters).
A tag is ``PREFIX`` when the label is empty (segmentation: ``B``, ``M``, ``E``,
``S``) and ``PREFIX-LABEL`` otherwise (``B-PER``). ``O`` is outside.

Repair rule for invalid sequences (used by :func:`tags_to_spans`), applied left
to right, the same for every scheme:

* an inside/end tag (``M``/``I``/``E``) that does not continue an open span of
  the *same* label opens a new span, as if it were ``B``;
* a ``B`` or ``S`` closes any open span before it;
* ``O`` closes any open span;
* a span still open at the end of the sequence (or before a ``B``/``S``/``O``) is
  closed there, as if its last tag had been ``E``.

So no tag is ever dropped: every non-``O`` tag ends up inside exactly one span.
This matches what seqeval's lenient mode and most CWS scorers do for BIO.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterable, Sequence

import numpy as np
import torch

from seqtag.models.spans import SpanTable

# the label of a forced span that only keeps word boundaries out of its inside: the word that holds it may go on
# past either end ("19:45" inside CTB6's "19:45分"); see TagTable.forced_mask
JOINED = "\x00joined"
START = "<START>"
END = "<END>"
OUTSIDE = "O"


class TagScheme(str, Enum):
    BMES = "bmes"
    BIOES = "bioes"
    BIO = "bio"

    @property
    def prefixes(self) -> tuple[str, ...]:
        return {"bmes": ("B", "M", "E", "S"), "bioes": ("B", "I", "E", "S"), "bio": ("B", "I")}[
            self.value
        ]

    @property
    def inside(self) -> str:
        return "M" if self is TagScheme.BMES else "I"


def make_tag(prefix: str, label: str) -> str:
    return f"{prefix}-{label}" if label else prefix


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER.NAM"`` -> ``("B", "PER.NAM")``; ``"S"`` -> ``("S", "")``."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, label = tag.partition("-")
    if prefix not in {"B", "M", "I", "E", "S"} or (sep and not label):
        raise ValueError(f"not a tag: {tag!r}")
    return prefix, label


def tag_vocabulary(scheme: TagScheme, labels: Iterable[str], outside: bool = True) -> list[str]:
    """All tags of ``scheme`` over ``labels``, ``O`` first when ``outside``."""
    tags = [OUTSIDE] if outside else []
    for label in sorted(set(labels)):
        tags.extend(make_tag(p, label) for p in scheme.prefixes)
    return tags


def spans_to_tags(
    spans: Sequence[tuple[int, int, str]], length: int, scheme: TagScheme
) -> list[str]:
    """Unit spans ``(start, end, label)`` (end exclusive) to ``length`` tags.

    Raises ``ValueError`` for overlapping or out-of-range spans.
    """
    tags = [OUTSIDE] * length
    for start, end, label in sorted(spans):
        if not 0 <= start < end <= length:
            raise ValueError(f"span {(start, end)} outside 0..{length}")
        if any(t != OUTSIDE for t in tags[start:end]):
            raise ValueError(f"span {(start, end, label)} overlaps another span")
        if end - start == 1:
            tags[start] = make_tag("B" if scheme is TagScheme.BIO else "S", label)
            continue
        tags[start] = make_tag("B", label)
        for i in range(start + 1, end - 1):
            tags[i] = make_tag(scheme.inside, label)
        tags[end - 1] = make_tag(scheme.inside if scheme is TagScheme.BIO else "E", label)
    return tags


def tags_to_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Tags (any of the three schemes, even mixed) to unit spans, with repair.

    See the module docstring for the repair rule.
    """
    spans: list[tuple[int, int, str]] = []
    open_start, open_label = -1, ""

    def close(end: int) -> None:
        nonlocal open_start
        if open_start >= 0:
            spans.append((open_start, end, open_label))
            open_start = -1

    for i, tag in enumerate(tags):
        prefix, label = split_tag(tag)
        if prefix == OUTSIDE:
            close(i)
        elif prefix in ("B", "S"):
            close(i)
            open_start, open_label = i, label
            if prefix == "S":
                close(i + 1)
        else:  # M / I / E
            if open_start < 0 or open_label != label:
                close(i)
                open_start, open_label = i, label
            if prefix == "E":
                close(i + 1)
    close(len(tags))
    return spans


def detect_scheme(tags: Iterable[str]) -> TagScheme:
    """Guess the scheme of a tagged corpus from the prefixes it uses."""
    prefixes = {split_tag(t)[0] for t in tags}
    if "M" in prefixes:
        return TagScheme.BMES
    if prefixes & {"E", "S"}:
        return TagScheme.BIOES
    return TagScheme.BIO


def convert_tags(tags: Sequence[str], scheme: TagScheme) -> list[str]:
    """Re-tag a sequence in ``scheme`` (via spans, so invalid input is repaired)."""
    return spans_to_tags(tags_to_spans(tags), len(tags), scheme)


def _may_follow(prev: str, nxt: str, scheme: TagScheme) -> bool:
    """Whether tag ``nxt`` may follow ``prev`` (START/END included)."""
    if prev == END or nxt == START:
        return False
    p_prefix, p_label = (START, "") if prev == START else split_tag(prev)
    n_prefix, n_label = (END, "") if nxt == END else split_tag(nxt)
    # A span is "open" after B/M/I (BMES, BIOES) -- it must be continued.
    # In BIO a span may end after B or I, so nothing is ever left open.
    open_after = scheme is not TagScheme.BIO and p_prefix in ("B", "M", "I")
    if open_after:
        return n_prefix in (scheme.inside, "E") and n_label == p_label
    if n_prefix in ("M", "E") or (n_prefix == "I" and scheme is not TagScheme.BIO):
        return False
    if n_prefix == "I":  # BIO: I continues a span of the same label
        return p_prefix in ("B", "I") and p_label == n_label
    return True  # B, S, O, END


def allowed_transitions(scheme: TagScheme, tags: Sequence[str]) -> torch.Tensor:
    """Boolean ``(T + 2, T + 2)`` matrix: ``[i, j]`` is whether tag j may follow tag i.

    Rows/columns ``T`` and ``T + 1`` are START and END. Tags must belong to
    ``scheme`` (``O`` allowed).
    """
    names = list(tags) + [START, END]
    n = len(names)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i, prev in enumerate(names):
        for j, nxt in enumerate(names):
            allowed[i, j] = _may_follow(prev, nxt, scheme)
    return allowed


_B, _I, _E, _S, _O = range(5)
_PREFIX_CODE = {"B": _B, "M": _I, "I": _I, "E": _E, "S": _S, OUTSIDE: _O}


class TagTable:
    """A model's tags read as arrays: a batch of tag ids -> character spans, and the tag masks that force
    spans whole (a dictionary's words) or start words after whitespace.

    ``labels`` are the sorted label names ("" for plain words) that a :class:`SpanTable` indexes; per tag id,
    ``prefix`` is its prefix code and ``label`` the index of its label.
    """

    def __init__(self, tags: Sequence[str], scheme: TagScheme):
        self.tags, self.scheme = list(tags), scheme
        split = [split_tag(t) for t in self.tags]
        self.labels = sorted({lab for _, lab in split})
        self.prefix = np.asarray([_PREFIX_CODE[p] for p, _ in split], dtype=np.int8)  # small: fast gathers
        self.label = np.asarray([self.labels.index(lab) for _, lab in split], dtype=np.int64)
        self._goes_on = torch.from_numpy(np.isin(self.prefix, (_I, _E)))  # continues the word before it
        self._not_last = torch.from_numpy(np.isin(self.prefix, (_B, _I)))  # the word goes on after it
        self._in_word = torch.from_numpy(self.prefix != _O)

    def spans(self, tag_ids: np.ndarray, lengths: np.ndarray, flat_offsets: np.ndarray,
              probs: np.ndarray | None) -> SpanTable:
        """Character spans of every row, built with array operations over the whole batch
        (``flat_offsets``: the (units, 2) offsets of all rows' units, row by row).

        Works for any tag sequence the CRF's transition constraints allow; a row with anything
        else (a softmax decoder's output) goes through the repairing :func:`tags_to_spans`.
        """
        prefix, label = self.prefix, self.label
        b, width = tag_ids.shape
        valid = np.arange(width)[None, :] < lengths[:, None]
        pre = prefix[tag_ids]
        if self.scheme is TagScheme.BIO:
            lab = label[tag_ids]
            nxt_pre = np.concatenate([pre[:, 1:], np.full((b, 1), _O)], axis=1)
            nxt_lab = np.concatenate([lab[:, 1:], np.full((b, 1), -1)], axis=1)
            nxt_valid = np.concatenate([valid[:, 1:], np.zeros((b, 1), bool)], axis=1)
            starts = valid & (pre == _B)
            ends = valid & (pre != _O) & ~(nxt_valid & (nxt_pre == _I) & (nxt_lab == lab))
        else:
            starts = valid & ((pre == _B) | (pre == _S))
            ends = valid & ((pre == _E) | (pre == _S))
        s_row, s_col = np.nonzero(starts)  # row-major: spans in order, row by row
        e_row, e_col = np.nonzero(ends)
        count = np.bincount(s_row, minlength=b)
        good = count == np.bincount(e_row, minlength=b)
        if len(s_row) == len(e_row):  # the k-th start pairs with the k-th end of the same row
            e_col1 = e_col + 1
            bad_pair = (s_row != e_row) | (s_col >= e_col1)
            bad_pair[1:] |= (s_row[1:] == s_row[:-1]) & (s_col[1:] < e_col1[:-1])  # overlapping spans
            good &= np.bincount(s_row[bad_pair], minlength=b) == 0
            covered = np.bincount(s_row, weights=e_col1 - s_col, minlength=b)
            good &= covered == ((pre != _O) & valid).sum(axis=1)
        else:
            good[:] = False
        # flat unit index of each row's first unit, to read offsets and scores of the whole batch at once
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        flat_probs = probs[valid] if probs is not None else None
        if good.all():  # (all False whenever starts and ends do not pair up)
            unit_s, unit_e = first[s_row] + s_col, first[e_row] + e_col + 1
            labels = label[tag_ids[s_row, s_col]]
        else:  # some row is not a sequence the constraints allow: those rows are repaired one by one
            names = self.tags
            per_row = []
            for row in range(b):
                n = int(lengths[row])
                if good[row]:
                    pick_s, pick_e = s_row == row, e_row == row
                    per_row.append((s_col[pick_s], e_col[pick_e] + 1, label[tag_ids[row, s_col[pick_s]]]))
                else:  # repair it the documented way
                    repaired = tags_to_spans([names[t] for t in tag_ids[row, :n].tolist()])
                    per_row.append((np.asarray([a for a, _, _ in repaired], dtype=np.int64),
                                    np.asarray([z for _, z, _ in repaired], dtype=np.int64),
                                    np.asarray([self.labels.index(c) for _, _, c in repaired], dtype=np.int64)))
            count = np.asarray([len(s) for s, _, _ in per_row], dtype=np.int64)
            shift = np.repeat(first, count)
            unit_s = np.concatenate([s for s, _, _ in per_row] + [np.zeros(0, np.int64)]) + shift
            unit_e = np.concatenate([e for _, e, _ in per_row] + [np.zeros(0, np.int64)]) + shift
            labels = np.concatenate([c for _, _, c in per_row] + [np.zeros(0, np.int64)])
        mins = _span_minima(flat_probs, unit_s, unit_e) if flat_probs is not None else None
        return SpanTable(count.astype(np.int64), flat_offsets[unit_s, 0], flat_offsets[unit_e - 1, 1],
                         labels.astype(np.int64), self.labels, mins)

    def forced_mask(self, aligned: Sequence[Sequence[tuple[int, int, str]]], width: int) -> torch.Tensor:
        """(B, L, T) bool: which tags each unit may take so that every forced unit span ``(first, last + 1,
        label)`` of row b (``aligned[b]``, see :meth:`Codec.align`) comes out whole; a span labelled
        :data:`JOINED` only inside one word (no word starts after its first unit or ends before its last). A
        label the model lacks is a ``ValueError``."""
        mask = torch.ones(len(aligned), width, len(self.tags), dtype=torch.bool)
        for row, spans in enumerate(aligned):
            for start, end, label in spans:
                if label == JOINED:  # for a CRF's paths (Pipeline gives a softmax decoder whole words instead)
                    mask[row, start + 1:end] &= self._goes_on
                    mask[row, start] &= self._in_word
                    if self.scheme is not TagScheme.BIO:  # BIO: the next unit's I already says it
                        mask[row, start:end - 1] &= self._not_last
                    continue
                for pos in range(start, end):
                    mask[row, pos] = self.allowed_at(pos - start, end - start, label)
                if end < width and self.scheme is TagScheme.BIO:
                    # the unit after a forced span must not continue it
                    mask[row, end] &= torch.from_numpy(self.prefix != _I)
        return mask

    def break_at_whitespace(
        self, flat_offsets: np.ndarray, lengths: np.ndarray, width: int, tag_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Words never span whitespace: a unit that follows whitespace must start a word.

        ``flat_offsets``: the (units, 2) offsets of all rows' units, row by row (``lengths`` per row).
        """
        after_gap = np.zeros(len(flat_offsets), dtype=bool)
        after_gap[1:] = flat_offsets[1:, 0] > flat_offsets[:-1, 1]
        firsts = np.cumsum(lengths) - lengths
        after_gap[firsts[lengths > 0]] = False  # a row's first unit follows nothing
        if not after_gap.any():
            return tag_mask
        where = np.flatnonzero(after_gap)
        row = np.searchsorted(firsts, where, side="right") - 1
        gaps = np.zeros((len(lengths), width), dtype=bool)
        gaps[row, where - firsts[row]] = True
        starts = torch.from_numpy(np.isin(self.prefix, (_B, _S, _O)))
        if tag_mask is None:
            tag_mask = torch.ones(len(lengths), width, len(self.tags), dtype=torch.bool)
        gap = torch.from_numpy(gaps)
        restricted = tag_mask & starts
        # where a forced (dictionary) word crosses the whitespace, the user's word wins
        keep_forced = ~restricted.any(-1, keepdim=True)
        return torch.where(gap.unsqueeze(-1) & ~keep_forced, restricted, tag_mask)

    def allowed_at(self, index: int, length: int, label: str) -> torch.Tensor:
        """(T,) bool: the tags unit ``index`` of a forced span of ``length`` units labelled ``label`` may take."""
        bio = self.scheme is TagScheme.BIO
        if length == 1:
            code = _B if bio else _S
        elif index == 0:
            code = _B
        elif index == length - 1 and not bio:
            code = _E
        else:
            code = _I
        if label and label not in self.labels:
            raise ValueError(f"label {label!r} is not one of this model's labels")
        allowed = self.prefix == code
        if label:
            allowed &= self.label == self.labels.index(label)
        return torch.from_numpy(allowed)


def _span_minima(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """min(values[s:e]) for each span, in one reduceat over the interleaved bounds."""
    if not len(starts):
        return np.zeros(0)
    bounds = np.stack([starts, ends], axis=1).ravel()
    return np.minimum.reduceat(np.append(values, 1.0), bounds)[::2]
