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

import torch

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
