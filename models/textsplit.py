"""Cut long texts into sentences, then into windows of at most N units, keeping offsets; find the links, e-mail
addresses and clock times that word-level models keep whole."""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from seqtag.models.codec import is_space

#: Longest piece (characters) that the service and ``seqtag predict`` tag at once (SEQTAG_WINDOW_UNITS, --window).
DEFAULT_WINDOW = 256

# A sentence ends after a terminator (plus closing quotes/brackets) or at a line break.
_SENTENCE_END = re.compile(r"[。！？!?；;…]+[”’\"'）)\]】』」》]*|\n+|\r+")
# the sentence ends a link may hold (in its path or query)
_LINK_ENDS = re.compile(r"[?!？！]")


def _is_run_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == ".")


def split_text(text: str, max_units: int) -> list[tuple[int, int]]:
    """``(start, end)`` pieces of ``text`` in order, each with at most ``max_units`` characters
    (so at most that many units), cut at sentence ends where possible and never inside a
    Latin/digit run, nor inside a link (:func:`find_links`: a "?" or "!" in ``x.com/s?q=1`` ends no
    sentence), unless the run or link itself is longer than a window. Pieces holding only whitespace
    (the codec's definition, so no unit is lost) are left out.
    """
    if max_units < 1:
        raise ValueError("max_units must be >= 1")
    # links matter only where a cut could fall inside one: at a "?" or "!", or at a window cut
    links = find_links([text]).get(0, []) if len(text) > max_units or _LINK_ENDS.search(text) else []
    pieces: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if links and _inside(links, match.start()):
            continue
        pieces.extend(_windows(text, start, match.end(), max_units, links))
        start = match.end()
    pieces.extend(_windows(text, start, len(text), max_units, links))
    return [(a, b) for a, b in pieces if not all(is_space(ch) for ch in text[a:b])]


def _inside(links: Sequence[tuple[int, int]], at: int) -> tuple[int, int] | None:
    """The link that position ``at`` falls strictly inside (not at its start), if any."""
    for a, b in links:
        if a < at < b:
            return a, b
    return None


def _windows(text: str, start: int, end: int, size: int,
             links: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    out = []
    while end - start > size:
        cut = start + size
        back = cut
        while back > start and _is_run_char(text[back - 1]) and _is_run_char(text[back]):
            back -= 1
        cut = back if back > start else cut
        link = _inside(links, cut) if links else None
        if link is not None and link[0] > start:  # a link no longer than the window stays in one piece
            cut = link[0]
        out.append((start, cut))
        start = cut
    if end > start:
        out.append((start, end))
    return out


# Links, e-mail addresses, mentions and clock times are words of their own for segmentation and POS models (the
# engine forces them, like dictionary words; a time before 分 or 秒 only lies inside one): character models
# otherwise cut "weibo.com/1675718025" at every "." and "/". Matched on the text with fullwidth ASCII read as
# ASCII (same length, so offsets hold). Scores and ratios ("6:3", "98:87") are left to the model: CTB6 writes
# them apart, and clock times ("19:45": hours 0-23, minutes 00-59) together.
# a path stops before a repost's "//@" ("http://t.cn/abc//@张三:" is a link, then a mention)
_PATH = r"(?:[/?#](?:(?!//@)[A-Za-z0-9._~%!$&'*+=:@/?#-])*)?"
_HOST = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_TLD = r"(?:com|net|org|edu|gov|mil|int|info|biz|io|ai|cn|hk|tw|mo|sg|jp|kr|uk|de|fr|ru|us|me|tv|cc)"
_MENTION = r"@[A-Za-z0-9_\-\u4e00-\u9fff]{1,30}"
_CLOCK = r"(?:[01]?[0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?"
_CLOCK_TIME = re.compile(_CLOCK)
_LINK = re.compile(
    r"(?<![A-Za-z0-9+.@-])(?:"
    rf"[A-Za-z][A-Za-z0-9+.-]*://{_HOST}(?::[0-9]+)?{_PATH}"  # scheme://host/path
    rf"|[A-Za-z0-9._%+-]+@{_HOST}"  # e-mail address
    rf"|(?:[A-Za-z0-9-]+\.)+{_TLD}(?![A-Za-z0-9-]){_PATH}"  # www.host.tld, host.com/path
    r")"
    # //host/path, also after a scheme that lost its colon ("http//weibo.com/..." keeps "//" with the link)
    rf"|(?<![/:])//{_HOST}(?::[0-9]+)?{_PATH}"
    # a Weibo-style mention ("@秦丹DANNY ", a repost's "//@吴水果:"), only where a colon or whitespace closes
    # it, or the text's end one that whitespace opens: run straight into Chinese text, its end is the model's
    rf"|/{{0,2}}(?<![A-Za-z0-9._%+-]){_MENTION}(?=:(?![0-9])|\s)|(?:(?<=\s)|^){_MENTION}$"
    # a clock time: hours 0-23, minutes (and seconds) 00-59, not inside a longer run of digits and colons
    rf"|(?<![0-9])(?<![0-9]:){_CLOCK}(?![0-9]|:[0-9])")
# a cheap first pass over a whole batch: texts without one of these cannot hold a link
_LINK_HINT = re.compile(r"[:/@\uff1a\uff0f\uff20]|[.\uff0e][A-Za-z\uff21-\uff3a\uff41-\uff5a]")
_FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}


def clock_time(text: str) -> bool:
    """Whether ``text`` (a span :func:`find_links` found) is a clock time rather than a link or address."""
    return _CLOCK_TIME.fullmatch(text.translate(_FULLWIDTH)) is not None


def find_links(texts: Sequence[str]) -> dict[int, list[tuple[int, int]]]:
    """The ``(start, end)`` links, e-mail addresses and clock times of each text that has any, by text index.
    One scan over the batch finds the few texts worth matching; a trailing ".", ":", "?", "!" or "'" is not
    part of a link."""
    if not texts:
        return {}
    joined = "\n".join(texts)
    hints = [m.start() for m in _LINK_HINT.finditer(joined)]
    if not hints:
        return {}
    ends = np.cumsum([len(t) + 1 for t in texts])  # text k is joined[ends[k] - len - 1 : ends[k] - 1]
    found: dict[int, list[tuple[int, int]]] = {}
    for k in np.unique(np.searchsorted(ends, hints, side="right")).tolist():
        text = texts[k].translate(_FULLWIDTH)
        spans = []
        for match in _LINK.finditer(text):
            start, end = match.span()
            end = start + len(text[start:end].rstrip(".:?!'"))
            if end > start:
                spans.append((start, end))
        if spans:
            found[k] = spans
    return found
