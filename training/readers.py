"""Corpus readers and writers: every format becomes canonical :class:`Example` objects.

Formats (``fmt``):

``seg``
    One sentence per line, words separated by any run of Unicode whitespace
    (U+3000 included). One span per word, label ``""``. Blank lines are skipped
    (counted in :attr:`ReadStats.empty`).
``conllu``
    CoNLL-U / CoNLL-X: 10 tab-separated columns, word in column 2, label from the
    column named by ``tag_column`` (``"upos"`` = column 4, ``"xpos"`` = column 5,
    ``"none"`` = label ``""``). ``#`` comments, multi-word token lines (``1-2``)
    and empty nodes (``1.1``) are skipped; a blank line ends a sentence (the last
    one needs none). IDs must run 1, 2, 3, ... within a sentence.
``column``
    One ``token TAG`` line per unit (first whitespace field = token, last =
    tag), blank line between sentences. The tag scheme (BMES / BIOES / BIO) is
    detected once per file with :func:`models.schemes.detect_scheme`; spans come
    from :func:`models.schemes.tags_to_spans` over token indices, so invalid tag
    sequences are repaired by its documented rule. A sentence whose tags are not
    exactly what the detected scheme would write for the repaired spans is
    counted in :attr:`ReadStats.repaired`. Text = tokens joined with ``""``.
``wordpos``
    ``word_TAG`` tokens separated by whitespace, one sentence per line, split on
    the *last* underscore.
``jsonl``
    One object per line, ``{"text": str, "spans": [[start, end, label?], ...]}``
    (label defaults to ``""``; other keys are ignored). Spans are validated
    (ints, ``0 <= start < end <= len(text)``, no overlaps) and returned sorted.
    Blank lines are skipped.

For ``seg``, ``conllu`` and ``wordpos`` the text is built by :func:`join_words`.

Every reader yields :class:`Example` with ``source = "path:line"`` of the
sentence's first line (for CoNLL-U: the block's first line, comments included).
Sentences whose text is empty are never yielded; they are counted in
:attr:`ReadStats.empty`.

``tag_column="none"`` blanks every label, whatever the format (e.g. to train
segmentation only on a POS corpus); ``"upos"``/``"xpos"`` only choose the
CoNLL-U column and are ignored by the other formats. ``label_map`` then renames
labels (labels not in the map are kept).

Errors: every problem with the data raises :class:`CorpusError`, whose message
starts with ``"{path}:{line}: "`` (line 0 for file-level problems such as a
missing file). With ``max_errors=0`` the first malformed line raises; with
``max_errors=N > 0`` up to N malformed *sentences* are skipped (counted in
:attr:`ReadStats.skipped`, their first error message kept in
:attr:`ReadStats.errors`) and the (N+1)-th raises. Files are read as UTF-8 (a
leading BOM is tolerated); invalid UTF-8 is a malformed line. Lines end at
``\\n`` only (a trailing ``\\r`` is stripped), so line numbers match editors.

Statistics are returned through an out-parameter::

    stats = ReadStats()
    examples = read_corpus(path, "column", stats=stats)
    print(stats.sentences, stats.spans, stats.repaired)

Writers (:func:`write_corpus`) support ``seg``, ``column`` and ``jsonl``; see
its docstring for what each format keeps.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from seqtag.models.schemes import (
    TagScheme,
    detect_scheme,
    spans_to_tags,
    split_tag,
    tags_to_spans,
)
from seqtag.models.spans import Example, Span, SpanTable

__all__ = [
    "FORMATS",
    "WRITE_FORMATS",
    "TAG_COLUMNS",
    "CorpusError",
    "ReadStats",
    "read_corpus",
    "iter_corpus",
    "join_words",
    "write_corpus",
    "parse_label_map",
]

FORMATS = ("seg", "conllu", "column", "wordpos", "jsonl")
WRITE_FORMATS = ("seg", "column", "wordpos", "jsonl")
TAG_COLUMNS = ("upos", "xpos", "none")
_CONLL_COLUMN = {"upos": 3, "xpos": 4}
_BOM = b"\xef\xbb\xbf"


class CorpusError(ValueError):
    """A problem in a corpus file; the message starts with ``"{path}:{line}: "``."""

    def __init__(self, path: str | os.PathLike, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        super().__init__(f"{self.path}:{line}: {message}")


@dataclass
class ReadStats:
    """Counters filled in while reading (pass one as ``stats=`` to read it back).

    * ``sentences``: examples yielded;
    * ``spans``: spans in the yielded examples;
    * ``skipped``: malformed sentences skipped (only when ``max_errors > 0``);
    * ``repaired``: ``column`` sentences whose tags needed the repair rule;
    * ``empty``: sentences with no text, not yielded (e.g. blank ``seg`` lines);
    * ``errors``: the first error message of each skipped sentence;
    * ``scheme``: the tag scheme detected for a ``column`` file, else ``None``.
    """

    sentences: int = 0
    spans: int = 0
    skipped: int = 0
    repaired: int = 0
    empty: int = 0
    errors: list[str] = field(default_factory=list)
    scheme: TagScheme | None = None


class _LineError(Exception):
    """Internal: a malformed line inside a sentence (converted to CorpusError)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# --------------------------------------------------------------------------- text


def _is_latin_alnum(ch: str) -> bool:
    """Letters/digits that need a space between words: ASCII, full-width
    A-Z/a-z/0-9, and other non-CJK alphanumerics (code point < U+2E80)."""
    o = ord(ch)
    if o < 0x2E80:
        return ch.isalnum()
    return 0xFF10 <= o <= 0xFF19 or 0xFF21 <= o <= 0xFF3A or 0xFF41 <= o <= 0xFF5A


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Concatenate ``words`` into a text and return each word's ``(start, end)``.

    No separator is used, except one space between two words when the previous
    word ends and the next begins with a Latin letter or digit (see
    :func:`_is_latin_alnum`), so ``["New", "York"]`` gives ``"New York"``.
    Raises ``ValueError`` for an empty word.
    """
    parts: list[str] = []
    offsets: list[tuple[int, int]] = []
    pos = 0
    prev_last = ""
    for word in words:
        if not word:
            raise ValueError("empty word")
        if prev_last and _is_latin_alnum(prev_last) and _is_latin_alnum(word[0]):
            parts.append(" ")
            pos += 1
        parts.append(word)
        offsets.append((pos, pos + len(word)))
        pos += len(word)
        prev_last = word[-1]
    return "".join(parts), offsets


# -------------------------------------------------------------------------- input


def _open_binary(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CorpusError(path, 0, "file not found") from None
    except IsADirectoryError:
        raise CorpusError(path, 0, "is a directory, not a file") from None
    except OSError as exc:
        raise CorpusError(path, 0, f"cannot open: {exc.strerror or exc}") from None


def _lines(path: Path) -> Iterator[tuple[int, str | None, str]]:
    """``(line_number, text, error)``; text is None when the line is not UTF-8."""
    with _open_binary(path) as fp:
        for number, raw in enumerate(fp, 1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                yield number, raw.decode("utf-8"), ""
            except UnicodeDecodeError as exc:
                yield number, None, f"invalid UTF-8 at byte {exc.start + 1} of the line"


def _blocks(path: Path) -> Iterator[list[tuple[int, str | None, str]]]:
    """Groups of consecutive non-blank lines (sentences separated by blank lines)."""
    block: list[tuple[int, str | None, str]] = []
    for number, line, err in _lines(path):
        if line is not None and not line.strip():
            if block:
                yield block
                block = []
            continue
        block.append((number, line, err))
    if block:
        yield block


class _Reader:
    def __init__(
        self,
        path: Path,
        tag_column: str,
        label_map: dict[str, str] | None,
        max_errors: int,
        stats: ReadStats,
    ) -> None:
        self.path = path
        self.name = str(path)
        self.blank_labels = tag_column == "none"
        self.conll_col = _CONLL_COLUMN.get(tag_column)
        self.label_map = label_map or {}
        self.max_errors = max_errors
        self.stats = stats
        self.errors = 0

    # -- bookkeeping

    def fail(self, err: _LineError) -> None:
        """Count one malformed sentence; raise if over the limit."""
        self.errors += 1
        exc = CorpusError(self.path, err.line, err.message)
        if self.errors > self.max_errors:
            if self.max_errors:
                raise CorpusError(
                    self.path,
                    err.line,
                    f"{err.message} (more than max_errors={self.max_errors} malformed sentences)",
                )
            raise exc
        self.stats.skipped += 1
        self.stats.errors.append(str(exc))

    def emit(
        self, text: str, spans: Iterable[tuple[int, int, str]], line: int
    ) -> Example | None:
        if not text:
            self.stats.empty += 1
            return None
        out = []
        for start, end, label in spans:
            if self.blank_labels:
                label = ""
            out.append(Span(start, end, self.label_map.get(label, label)))
        self.stats.sentences += 1
        self.stats.spans += len(out)
        return Example(text, out, f"{self.name}:{line}")

    def words_example(self, words: list[str], labels: list[str], line: int) -> Example | None:
        text, offsets = join_words(words)
        return self.emit(text, ((s, e, lab) for (s, e), lab in zip(offsets, labels)), line)

    # -- formats

    def examples(self, fmt: str) -> Iterator[Example]:
        """The examples read as ``fmt``. The format method of that name yields one item per
        sentence: its example, or None for a sentence with no text (counted by :meth:`emit`),
        which is dropped here."""
        return (ex for ex in getattr(self, fmt)() if ex is not None)

    def seg(self) -> Iterator[Example | None]:
        for number, line, err in _lines(self.path):
            if line is None:
                self.fail(_LineError(number, err))
                continue
            words = line.split()
            if not words:
                self.stats.empty += 1
                continue
            yield self.words_example(words, [""] * len(words), number)

    def wordpos(self) -> Iterator[Example | None]:
        for number, line, err in _lines(self.path):
            try:
                if line is None:
                    raise _LineError(number, err)
                tokens = line.split()
                if not tokens:
                    self.stats.empty += 1
                    continue
                words, labels = [], []
                for i, token in enumerate(tokens, 1):
                    word, sep, tag = token.rpartition("_")
                    if not sep:
                        raise _LineError(number, f"token {i} {token!r} has no '_TAG'")
                    if not word or not tag:
                        raise _LineError(
                            number, f"token {i} {token!r} has an empty {'word' if not word else 'tag'}"
                        )
                    words.append(word)
                    labels.append(tag)
            except _LineError as exc:
                self.fail(exc)
                continue
            yield self.words_example(words, labels, number)

    def conllu(self) -> Iterator[Example | None]:
        for block in _blocks(self.path):
            try:
                words, labels = self._conllu_block(block)
            except _LineError as exc:
                self.fail(exc)
                continue
            if not words:
                self.stats.empty += 1
                continue
            yield self.words_example(words, labels, block[0][0])

    def _conllu_block(self, block) -> tuple[list[str], list[str]]:
        words: list[str] = []
        labels: list[str] = []
        for number, line, err in block:
            if line is None:
                raise _LineError(number, err)
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 10:
                raise _LineError(
                    number, f"expected 10 tab-separated columns, found {len(cols)}"
                )
            ident = cols[0]
            if ident.isascii() and ident.isdigit():
                expected = len(words) + 1
                if int(ident) != expected:
                    raise _LineError(
                        number,
                        f"word ID {ident} out of sequence, expected {expected} "
                        "(missing blank line between sentences?)",
                    )
            else:
                a, sep, b = ident.partition("-") if "-" in ident else ident.partition(".")
                if sep and a.isascii() and a.isdigit() and b.isascii() and b.isdigit():
                    continue  # multi-word token range or empty node
                raise _LineError(number, f"ID {ident!r} is not an integer")
            form = cols[1]
            if not form:
                raise _LineError(number, "empty word form (column 2)")
            if self.conll_col is None:
                label = ""
            else:
                label = cols[self.conll_col].strip()
                if not label or label == "_":
                    name = "UPOS (column 4)" if self.conll_col == 3 else "XPOS (column 5)"
                    raise _LineError(
                        number, f"no {name} tag; use tag_column='none' to read words only"
                    )
            words.append(form)
            labels.append(label)
        return words, labels

    def column(self) -> Iterator[Example | None]:
        scheme = self._column_scheme()
        self.stats.scheme = scheme
        for block in _blocks(self.path):
            try:
                tokens, tags = self._column_block(block)
            except _LineError as exc:
                self.fail(exc)
                continue
            unit_spans = tags_to_spans(tags)
            if spans_to_tags(unit_spans, len(tags), scheme) != tags:
                self.stats.repaired += 1
            starts, pos = [], 0
            for token in tokens:
                starts.append(pos)
                pos += len(token)
            starts.append(pos)
            text = "".join(tokens)
            yield self.emit(
                text, ((starts[s], starts[e], lab) for s, e, lab in unit_spans), block[0][0]
            )

    def _column_scheme(self) -> TagScheme:
        """Detect the file's scheme from the valid tag prefixes it uses."""
        prefixes: set[str] = set()
        valid = {b"B", b"M", b"I", b"E", b"S"}
        with _open_binary(self.path) as fp:
            for raw in fp:
                fields = raw.split()
                if len(fields) >= 2:
                    prefix = fields[-1].partition(b"-")[0]
                    if prefix in valid:
                        prefixes.add(prefix.decode("ascii"))
        return detect_scheme(prefixes)

    @staticmethod
    def _column_block(block) -> tuple[list[str], list[str]]:
        tokens: list[str] = []
        tags: list[str] = []
        for number, line, err in block:
            if line is None:
                raise _LineError(number, err)
            fields = line.split()
            if len(fields) < 2:
                raise _LineError(number, f"expected 'token TAG', found {line.strip()!r}")
            tag = fields[-1]
            try:
                split_tag(tag)
            except ValueError:
                raise _LineError(
                    number, f"unknown tag {tag!r} (expected O or B/M/I/E/S[-LABEL])"
                ) from None
            tokens.append(fields[0])
            tags.append(tag)
        return tokens, tags

    def jsonl(self) -> Iterator[Example | None]:
        for number, line, err in _lines(self.path):
            try:
                if line is None:
                    raise _LineError(number, err)
                if not line.strip():
                    continue
                text, spans = _parse_json_record(line, number)
            except _LineError as exc:
                self.fail(exc)
                continue
            yield self.emit(text, spans, number)


def _parse_json_record(line: str, number: int) -> tuple[str, list[tuple[int, int, str]]]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _LineError(number, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise _LineError(number, f"expected a JSON object, found {type(obj).__name__}")
    if "text" not in obj or "spans" not in obj:
        missing = [k for k in ("text", "spans") if k not in obj]
        raise _LineError(number, f"missing key(s) {', '.join(map(repr, missing))}")
    text, raw_spans = obj["text"], obj["spans"]
    if not isinstance(text, str):
        raise _LineError(number, f"'text' must be a string, found {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _LineError(number, "'text' contains a lone surrogate") from None
    if not isinstance(raw_spans, list):
        raise _LineError(number, f"'spans' must be a list, found {type(raw_spans).__name__}")
    spans: list[tuple[int, int, str]] = []
    for i, item in enumerate(raw_spans):
        if not isinstance(item, list) or len(item) not in (2, 3):
            raise _LineError(number, f"span {i} must be [start, end] or [start, end, label]: {item!r}")
        start, end = item[0], item[1]
        label = item[2] if len(item) == 3 else ""
        if type(start) is not int or type(end) is not int:
            raise _LineError(number, f"span {i} offsets must be integers: {item!r}")
        if not isinstance(label, str):
            raise _LineError(number, f"span {i} label must be a string: {item!r}")
        if not 0 <= start < end <= len(text):
            raise _LineError(
                number, f"span {i} {item!r} outside the text (need 0 <= start < end <= {len(text)})"
            )
        spans.append((start, end, label))
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            raise _LineError(number, f"spans {list(a)} and {list(b)} overlap")
    return text, spans


def iter_corpus(
    path: str | os.PathLike,
    fmt: str,
    *,
    tag_column: str = "upos",
    label_map: dict[str, str] | None = None,
    max_errors: int = 0,
    stats: ReadStats | None = None,
) -> Iterator[Example]:
    """Yield the examples of ``path`` read as ``fmt`` (see the module docstring).

    Bad arguments raise ``ValueError`` at once; data problems raise
    :class:`CorpusError` while iterating. ``stats``, if given, is updated in place.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown corpus format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if tag_column not in TAG_COLUMNS:
        raise ValueError(f"unknown tag_column {tag_column!r}; expected one of {', '.join(TAG_COLUMNS)}")
    if isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 0:
        raise ValueError(f"max_errors must be an integer >= 0, got {max_errors!r}")
    reader = _Reader(Path(path), tag_column, label_map, max_errors, stats or ReadStats())
    return reader.examples(fmt)


def read_corpus(
    path: str | os.PathLike,
    fmt: str,
    *,
    tag_column: str = "upos",
    label_map: dict[str, str] | None = None,
    max_errors: int = 0,
    stats: ReadStats | None = None,
) -> list[Example]:
    """All examples of ``path`` as a list; see :func:`iter_corpus`."""
    return list(
        iter_corpus(
            path, fmt, tag_column=tag_column, label_map=label_map, max_errors=max_errors, stats=stats
        )
    )


def parse_label_map(s: str) -> dict[str, str]:
    """``"NR=PER,NS=LOC"`` -> ``{"NR": "PER", "NS": "LOC"}``.

    Spaces around names are ignored; ``""`` gives ``{}``. Raises ``ValueError``
    for an entry that is not ``FROM=TO`` with both names non-empty and free of
    whitespace, or for a label mapped twice.
    """
    mapping: dict[str, str] = {}
    if not s.strip():
        return mapping
    for entry in s.split(","):
        src, sep, dst = entry.partition("=")
        src, dst = src.strip(), dst.strip()
        if not sep or not src or not dst or "=" in dst or any(
            ch.isspace() for ch in src + dst
        ):
            raise ValueError(
                f"bad label map entry {entry.strip()!r} in {s!r}: expected FROM=TO[,FROM=TO...]"
            )
        if src in mapping:
            raise ValueError(f"label {src!r} is mapped twice in {s!r}")
        mapping[src] = dst
    return mapping


# ------------------------------------------------------------------------- output


def _checked_spans(ex: Example) -> list[Span]:
    spans = sorted(ex.spans, key=lambda sp: (sp.start, sp.end))
    prev_end = 0
    for sp in spans:
        if not 0 <= sp.start < sp.end <= len(ex.text):
            raise ValueError(f"{ex.source or 'example'}: span {sp} outside text of length {len(ex.text)}")
        if sp.start < prev_end:
            raise ValueError(f"{ex.source or 'example'}: span {sp} overlaps another span")
        prev_end = sp.end
    return spans


def _seg_line(ex: Example) -> str:
    spans = _checked_spans(ex)
    words: list[str] = []
    pos = 0
    for sp in spans:
        words.extend(ex.text[pos : sp.start].split())  # uncovered text is kept
        words.extend(ex.text[sp.start : sp.end].split())
        pos = sp.end
    words.extend(ex.text[pos:].split())
    return " ".join(words) + "\n"


def _wordpos_line(ex: Example) -> str:
    tokens: list[str] = []
    pos = 0
    for sp in _checked_spans(ex):
        if ex.text[pos : sp.start].strip() or not sp.label:
            raise ValueError(f"wordpos output needs a tag on every word: {ex.text[pos : sp.end]!r} has none")
        tokens.extend(f"{word}_{sp.label}" for word in ex.text[sp.start : sp.end].split())
        pos = sp.end
    if ex.text[pos:].strip():
        raise ValueError(f"wordpos output needs a tag on every word: {ex.text[pos:]!r} has none")
    return " ".join(tokens) + "\n"


# What str.split() splits on (str.isspace); tests check the list against Python's own.
SPLIT_SPACES = np.asarray([0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680,
                           *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000], dtype=np.uint32)


def seg_lines(texts: Sequence[str], table: SpanTable) -> str:
    """``seg`` output of many texts at once: the same lines :func:`write_corpus` writes for
    ``Example(texts[i], spans of row i)``, built with array operations over all texts (no
    per-word Python), for ``seqtag predict``. Raises ``ValueError`` like the writer does.
    """
    if len(texts) != len(table):
        raise ValueError(f"{len(texts)} texts but spans for {len(table)}")
    if not texts:
        return ""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    row = np.repeat(np.arange(len(texts)), table.counts)
    starts, ends = table.starts, table.ends
    if len(starts):
        if ((starts < 0) | (starts >= ends) | (ends > lengths[row])).any():
            raise ValueError("a span lies outside its text")
        order = np.lexsort((ends, starts, row))  # as the writer sorts them
        starts, ends, row = starts[order], ends[order], row[order]
        if ((row[1:] == row[:-1]) & (starts[1:] < ends[:-1])).any():
            raise ValueError("a span overlaps another span")
    joined = "\n".join(texts)  # the joiners become the line ends
    chars = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    line_start = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    line_end = np.zeros(len(chars), dtype=bool)
    line_end[line_start[1:] - 1] = True
    boundary = np.zeros(len(chars) + 1, dtype=bool)  # a word starts or ends here
    boundary[line_start[row] + starts] = True
    boundary[line_start[row] + ends] = True
    kept = np.flatnonzero(~np.isin(chars, SPLIT_SPACES) | line_end)  # whitespace only ever separates
    prev, cur = kept[:-1], kept[1:]
    same_line = ~line_end[prev] & ~line_end[cur]
    space_before = np.zeros(len(kept), dtype=bool)
    space_before[1:] = same_line & ((cur - prev > 1) | boundary[cur])
    out = np.full(len(kept) + int(space_before.sum()) + 1, ord(" "), dtype=np.uint32)
    out[np.arange(len(kept)) + np.cumsum(space_before)] = chars[kept]
    out[-1] = ord("\n")
    return out.tobytes().decode("utf-32-le", "surrogatepass")


def _column_lines(ex: Example, scheme: TagScheme) -> str:
    spans = _checked_spans(ex)
    kept = [not ch.isspace() for ch in ex.text]
    before = [0]  # before[i] = non-whitespace chars in text[:i]
    for k in kept:
        before.append(before[-1] + k)
    unit_spans = []
    for sp in spans:
        if any(ch.isspace() for ch in sp.label):
            raise ValueError(f"{ex.source or 'example'}: label {sp.label!r} contains whitespace")
        s, e = before[sp.start], before[sp.end]
        if s < e:  # a whitespace-only span has no characters to tag
            unit_spans.append((s, e, sp.label))
    chars = [ch for ch, k in zip(ex.text, kept) if k]
    if not chars:
        return ""
    tags = spans_to_tags(unit_spans, len(chars), scheme)
    return "".join(f"{ch} {tag}\n" for ch, tag in zip(chars, tags)) + "\n"


def _jsonl_line(ex: Example, scores: bool = False) -> str:
    spans = _checked_spans(ex)
    record: dict = {"text": ex.text, "spans": [[sp.start, sp.end, sp.label] for sp in spans]}
    if scores:
        if any(sp.score is None for sp in spans):
            raise ValueError("scores were asked for, but a span has none")
        record["scores"] = [round(sp.score, 4) for sp in spans]
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_corpus(
    examples: Iterable[Example],
    fp_or_path: str | os.PathLike | IO[str],
    fmt: str,
    scheme: TagScheme = TagScheme.BMES,
    scores: bool = False,
) -> None:
    """Write ``examples`` as ``fmt`` (``seg``, ``column``, ``wordpos`` or ``jsonl``), UTF-8, ``\\n`` lines.

    * ``seg``: one line per example, the span texts (in text order) separated by
      single spaces. Labels are dropped; non-whitespace text outside every span is
      written as extra words; whitespace inside a span splits it.
    * ``column``: one ``char TAG`` line per *non-whitespace* character, tags in
      ``scheme`` computed at character level from the spans (``O`` outside any
      span), a blank line after each example. Whitespace characters are dropped
      (spans are shifted accordingly, a whitespace-only span disappears); an
      example with no non-whitespace character writes nothing.
    * ``wordpos``: one line per example, ``word_TAG`` tokens separated by single
      spaces (words as ``seg`` writes them, each with its span's label); every
      non-whitespace character must be in a labelled span (a POS model's output),
      else ``ValueError``.
    * ``jsonl``: ``{"text": ..., "spans": [[start, end, label], ...]}`` per line,
      spans sorted, non-ASCII kept as is; with ``scores``, also ``"scores": [...]``, each
      span's score (4 decimals) in the same order (the reader ignores it).

    Reading the output back with the same format gives the same examples (texts
    and sorted spans) when they are representable: for ``seg`` the spans tile the
    text's words with ``""`` labels and ``text == join_words(words)[0]``; for
    ``column`` the text has no whitespace and labels have none; empty texts are
    never read back. Raises ``ValueError`` for overlapping or out-of-range spans.
    """
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"cannot write format {fmt!r}; expected one of {', '.join(WRITE_FORMATS)}")
    if scores and fmt != "jsonl":
        raise ValueError("only the jsonl format carries scores")
    scheme = TagScheme(scheme)
    if isinstance(fp_or_path, (str, os.PathLike)):
        with open(fp_or_path, "w", encoding="utf-8", newline="\n") as fp:
            _write(examples, fp, fmt, scheme, scores)
    else:
        _write(examples, fp_or_path, fmt, scheme, scores)


def _write(examples: Iterable[Example], fp: IO[str], fmt: str, scheme: TagScheme, scores: bool = False) -> None:
    for ex in examples:
        if fmt == "seg":
            fp.write(_seg_line(ex))
        elif fmt == "column":
            fp.write(_column_lines(ex, scheme))
        elif fmt == "wordpos":
            fp.write(_wordpos_line(ex))
        else:
            fp.write(_jsonl_line(ex, scores))
