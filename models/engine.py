"""The one inference engine that the CLI, Python and the service all use: texts -> pieces -> spans.

1. :func:`prepare`: cut each text into pieces (sentences, then windows of at most ``window`` characters) and
   find a dictionary's words in each piece (forced spans, on the piece's offsets);
2. :func:`run`: tag a batch of pieces with a :class:`~models.pipeline.Pipeline` (encode the pieces that are
   still text, in one codec call, then one forward pass): one single-row :class:`SpanTable` per piece; a
   segmentation or POS model also keeps the pieces' links, e-mail addresses and clock times whole (forced
   like dictionary words, where nothing the caller forced overlaps them);
3. :func:`assemble`: put the pieces' spans back onto their texts.

``Pipeline.predict`` calls :func:`prepare`, encodes all pieces at once and tags them batch by batch
(:func:`plan_batches`, :meth:`~models.pipeline.Pipeline.tag_encoded`: what :func:`run` does for one batch),
then :func:`assemble`; the service's handlers call :func:`prepare` and :func:`assemble`, its batcher's worker
:func:`run` on batches it fills from many requests.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from seqtag.models.dictionary import Dictionary
from seqtag.models.lexicon import Lexicon
from seqtag.models.schemes import JOINED
from seqtag.models.spans import Span, SpanTable
from seqtag.models.textsplit import clock_time, find_links, split_text

if TYPE_CHECKING:
    from seqtag.models.codec import Codec, Encoded
    from seqtag.models.pipeline import Pipeline


@dataclass(frozen=True, eq=False)
class Piece:
    """One sentence or window of a text: its characters, which text it is from and where it starts there,
    the spans forced on it (piece offsets), and once encoded its units (``ids``, ``offsets`` and lexicon
    feature bits). ``soft``: a request's soft dictionary, applied when the piece is encoded."""

    text: str
    owner: int = 0
    start: int = 0
    forced: tuple[Span, ...] = ()
    ids: np.ndarray | None = None
    offsets: np.ndarray | None = None
    lexicon: np.ndarray | None = None
    soft: Lexicon | None = None

    @property
    def length(self) -> int:
        """Units; before encoding, characters (never fewer than units): for batch budgets and sorting."""
        return len(self.ids) if self.ids is not None else len(self.text)


def prepare(texts: Sequence[str], window: int | None, dictionary: Dictionary | None = None,
            forced: Sequence[Sequence[Span]] | None = None, soft: Lexicon | None = None) -> list[Piece]:
    """The pieces of ``texts`` in order: with a ``window``, each text cut at sentence ends and into windows of
    at most ``window`` characters (:func:`~models.textsplit.split_text`; whitespace-only stretches make no
    piece); without one, each text whole. ``dictionary``: its words found in each piece become the piece's
    forced spans; ``forced``: spans per text given by the caller, moved onto the pieces (one a cut goes
    through is a ``ValueError``). With both, the dictionary's words win: a given span that overlaps one is
    left out (/v1/analyze forces the entities it found into the tokens, but never against the user's words).
    ``soft``: a soft dictionary the pieces are encoded with."""
    pieces: list[Piece] = []
    for i, text in enumerate(texts):
        cuts = split_text(text, window) if window is not None else [(0, len(text))]
        given = _forced_in_pieces(forced[i], cuts) if forced is not None else None
        for k, (start, end) in enumerate(cuts):
            piece_text = text[start:end]
            spans = dictionary.find(piece_text) if dictionary is not None else []
            if given is not None:
                spans = spans + [g for g in given[k] if not _overlaps(g, spans)]
            pieces.append(Piece(piece_text, i, start, tuple(sorted(spans)), soft=soft))
    return pieces


def encode(pipeline: "Pipeline", pieces: Sequence[Piece]) -> list[Piece]:
    """The pieces with their units: those still text encoded together (one codec call per soft dictionary),
    their forced spans kept where they fall on unit boundaries (a dictionary word may match half a Latin run),
    and for a word-level model the links they hold forced too (:func:`_add_links`)."""
    todo = [k for k, piece in enumerate(pieces) if piece.ids is None]
    if not todo:
        return list(pieces)
    codec = pipeline.codec
    links = word_level(pipeline)
    out = list(pieces)
    groups: dict[int, list[int]] = {}
    for k in todo:
        groups.setdefault(id(pieces[k].soft), []).append(k)
    for members in groups.values():
        texts = [pieces[k].text for k in members]
        encoded = codec.encode(texts, pieces[members[0]].soft)
        lexicon = encoded.lexicon
        found = find_links(texts) if links else {}
        for j, k in enumerate(members):
            offsets = encoded.offsets[j]
            forced = codec.on_boundaries(offsets, pieces[k].forced)
            if j in found:
                forced = _add_links(codec, texts[j], offsets, forced, found[j])
            out[k] = replace(pieces[k], ids=encoded.ids[j], offsets=offsets,
                             lexicon=lexicon[j] if lexicon is not None else None, forced=forced)
    return out


def word_level(pipeline: "Pipeline") -> bool:
    """Whether the model's spans are words (segmentation, POS): those keep links whole."""
    return getattr(pipeline, "task", None) in ("seg", "pos")


def encode_texts(codec: "Codec", pieces: Sequence[Piece], soft: Lexicon | None = None,
                 drop_off_boundaries: bool = True, links: bool = False,
                 ) -> tuple["Encoded", list[Sequence[Span]] | None]:
    """The units of text ``pieces`` in one codec call (flat, no per-piece arrays), and their forced spans (None
    when there are none); ``drop_off_boundaries``: leave out forced spans off unit boundaries (dictionary words
    may match half a Latin run), else keep them as given (the caller's own spans: off boundaries they are an
    error when tagged). ``links``: the links, e-mail addresses and clock times in the pieces
    (:func:`~models.textsplit.find_links`) are forced as words too, where no forced span overlaps them and
    they fall on unit boundaries."""
    texts = [p.text for p in pieces]
    encoded = codec.encode(texts, soft)
    found = find_links(texts) if links else {}
    if not found and not any(p.forced for p in pieces):
        return encoded, None
    offsets = encoded.offsets
    forced: list[Sequence[Span]] = [codec.on_boundaries(offsets[i], p.forced) if drop_off_boundaries else p.forced
                                    for i, p in enumerate(pieces)]
    for i, spans in found.items():
        forced[i] = _add_links(codec, texts[i], offsets[i], forced[i], spans)
    return encoded, forced


_TIME_UNITS = ("分", "秒")


def _add_links(codec: "Codec", text: str, offsets: np.ndarray, forced: Sequence[Span],
               links: Sequence[tuple[int, int]]) -> tuple[Span, ...]:
    """``forced`` with the ``links`` that overlap none of its spans and fall on unit boundaries, each a word of
    its own; but a clock time before 分 or 秒 only inside one, so that the model may join them as CTB6 writes
    "０：０２分" (elsewhere it would as soon join "19:45见")."""
    extra = [Span(a, b, JOINED if text[b:b + 1] in _TIME_UNITS and clock_time(text[a:b]) else "")
             for a, b in links]
    extra = [s for s in extra if not _overlaps(s, forced)]
    if not extra:
        return tuple(forced)
    return tuple(sorted([*forced, *codec.on_boundaries(offsets, extra)]))


def run(pipeline: "Pipeline", pieces: Sequence[Piece], scores: bool = False) -> SpanTable:
    """Tag ``pieces`` as one batch (longest first inside it): a table with one row per piece, in order."""
    from seqtag.models.codec import Encoded

    soft = pieces[0].soft if pieces else None
    if all(p.ids is None and p.soft is soft for p in pieces):  # the service's batches: text, one codec call
        encoded, forced = encode_texts(pipeline.codec, pieces, soft, links=word_level(pipeline))
    else:
        pieces = encode(pipeline, pieces)
        with_lexicon = any(p.lexicon is not None for p in pieces)
        encoded = Encoded([p.offsets for p in pieces], [p.ids for p in pieces],
                          [p.lexicon for p in pieces] if with_lexicon else None)
        forced = [p.forced for p in pieces] if any(p.forced for p in pieces) else None
    counts = encoded.counts
    order = sorted(range(len(pieces)), key=lambda i: -counts[i])
    if forced is not None:
        forced = [list(forced[i]) for i in order]
    table = pipeline.tag_encoded(encoded, order, scores, forced)
    if len(table) != len(order):
        raise RuntimeError(f"the model returned {len(table)} results for a batch of {len(order)}")
    where = np.empty(len(order), dtype=np.int64)
    where[np.asarray(order, dtype=np.int64)] = np.arange(len(order))  # piece i is row where[i]
    return table.take(where)


def assemble(pieces: Sequence[Piece], table: SpanTable, texts: int) -> SpanTable:
    """One row per text from ``table``'s one row per piece (pieces in text order, as :func:`prepare` makes
    them): each piece's spans shifted by where it starts in its text."""
    starts = np.fromiter((p.start for p in pieces), np.int64, len(pieces))
    owners = np.fromiter((p.owner for p in pieces), np.int64, len(pieces))
    shift = np.repeat(starts, table.counts)
    counts = np.bincount(owners, weights=table.counts, minlength=texts).astype(np.int64)
    return SpanTable(counts, table.starts + shift, table.ends + shift, table.labels, table.label_names,
                     table.scores)


def _overlaps(span: Span, others: Sequence[Span]) -> bool:
    return any(span.start < o.end and o.start < span.end for o in others)


def _forced_in_pieces(spans: Sequence[Span], cuts: Sequence[tuple[int, int]]) -> list[list[Span]]:
    """Forced spans of a text moved onto its pieces ``cuts``; one that a cut goes through is a ``ValueError``."""
    out: list[list[Span]] = [[] for _ in cuts]
    bounds = [a for a, _ in cuts]
    for span in spans:
        k = bisect.bisect_right(bounds, span.start) - 1
        if k < 0 or span.end > cuts[k][1]:
            raise ValueError(f"forced span {span.start}..{span.end} crosses a sentence end or window cut; "
                             "tag without a window")
        out[k].append(Span(span.start - bounds[k], span.end - bounds[k], span.label, span.score))
    return out


def plan_batches(lengths: Sequence[int], max_batch: int, max_units: int,
                 order: Sequence[int] | np.ndarray | None = None) -> list[list[int]]:
    """Indices grouped into batches, in ``order`` (default: longest first), each batch closed before it would
    hold more than ``max_batch`` items or its padded size (longest x items) pass ``max_units``. The one
    planner of inference (longest first) and training (:func:`~training.trainer.make_batches`: shuffled
    length buckets)."""
    if order is None:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        i = int(i)
        wider = max(width, lengths[i])
        if current and (len(current) >= max_batch or wider * (len(current) + 1) > max_units):
            batches.append(current)
            current, wider = [], lengths[i]
        current.append(i)
        width = wider
    if current:
        batches.append(current)
    return batches
