"""Cut long texts into sentences, then into windows of at most N units, keeping offsets."""

from __future__ import annotations

import re

from seqtag.models.codec import is_space

#: Longest piece (characters) that the service and ``seqtag predict`` tag at once (SEQTAG_WINDOW_UNITS, --window).
DEFAULT_WINDOW = 256

# A sentence ends after a terminator (plus closing quotes/brackets) or at a line break.
_SENTENCE_END = re.compile(r"[。！？!?；;…]+[”’\"'）)\]】』」》]*|\n+|\r+")


def _is_run_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == ".")


def split_text(text: str, max_units: int) -> list[tuple[int, int]]:
    """``(start, end)`` pieces of ``text`` in order, each with at most ``max_units`` characters
    (so at most that many units), cut at sentence ends where possible and never inside a
    Latin/digit run unless the run itself is longer than a window. Pieces holding only whitespace
    (the codec's definition, so no unit is lost) are left out.
    """
    if max_units < 1:
        raise ValueError("max_units must be >= 1")
    pieces: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        pieces.extend(_windows(text, start, match.end(), max_units))
        start = match.end()
    pieces.extend(_windows(text, start, len(text), max_units))
    return [(a, b) for a, b in pieces if not all(is_space(ch) for ch in text[a:b])]


def _windows(text: str, start: int, end: int, size: int) -> list[tuple[int, int]]:
    out = []
    while end - start > size:
        cut = start + size
        back = cut
        while back > start and _is_run_char(text[back - 1]) and _is_run_char(text[back]):
            back -= 1
        cut = back if back > start else cut
        out.append((start, cut))
        start = cut
    if end > start:
        out.append((start, end))
    return out
