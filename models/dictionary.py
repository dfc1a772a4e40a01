"""User dictionaries: entries found in a text become forced spans for constrained decoding.

Matching rule (documented precedence):

1. Entries are matched on the *normalised* text (the codec's 1:1 table, so
   ``ＩＰＨＯＮＥ`` matches an ``iphone`` entry); a match must also fall on unit
   boundaries, or the pipeline reports it as skipped instead of forcing it.
2. Scanning left to right, at each position the **longest** entry that starts
   there wins; matches that overlap an earlier winner are skipped
   (leftmost-longest).
3. When the same entry text is given more than once, the **last** definition
   wins, so per-request entries (added after a stored dictionary) override
   stored ones.

An entry is ``"text"`` (force a word / an entity of any type) or
``("text", "LABEL")`` (force that POS tag or entity type).

Files (:func:`read_dictionary`, for ``seqtag predict --dictionary`` and ``evaluate``): the service's stored JSON
(``{"entries": ["word", {"text": ..., "label": ...}, ...]}``, or just the list), or text, one entry per line:

* ``word``, ``word LABEL``, or jieba's user-dictionary line ``word FREQ [TAG]`` (a number in the second
  field is a frequency: seqtag has no use for it and drops it);
* fields are separated by whitespace, or only by tabs on a line that has a tab (so a word may contain a
  space: ``New York<TAB>LOC``);
* blank lines and lines starting with ``#`` are skipped; UTF-8, with or without a byte-order mark.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from seqtag.models.spans import Span

Entry = str | tuple[str, str]
MAX_ENTRY_CHARS = 64


class DictionaryError(ValueError):
    pass


#: Longest piece of a user's input (a word, a label, a name) quoted back in an error message.
ECHO_CHARS = 64


def clip(value: object, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` for an error message, cut after ``limit`` characters of the value: a 100k-character
    label comes back as its first characters and its length, not as a 100 KB reply."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit + 2 else text[:limit] + "..."


class Dictionary:
    """Entries by normalised text, found leftmost-longest in texts.

    ``normalize`` maps one text (1:1 per character, so offsets hold); ``normalize_many`` (optional) maps a list
    of texts at once, for building from many entries (a codec's ``normalize_all``: one array lookup instead of
    one call per entry). Lookup costs a few dictionary probes per character whatever the number of entries: at
    each position only the lengths that some entry starting with that character has are tried, longest first.
    """

    def __init__(self, entries: Iterable[Entry] = (), normalize: Callable[[str], str] = lambda s: s,
                 normalize_many: Callable[[list[str]], list[str]] | None = None):
        self._normalize = normalize
        self._entries: dict[str, str] = {}  # normalised text -> label ("" = any)
        self._lengths: dict[str, list[int]] = {}  # first character -> the entries' lengths, longest first
        checked = [_checked(entry) for entry in entries]
        if not checked:
            return
        texts = [text for text, _ in checked]
        keys = normalize_many(texts) if normalize_many is not None else [normalize(t) for t in texts]
        for key, (_, label) in zip(keys, checked):
            self._insert(key, label)

    def add(self, entry: Entry) -> None:
        text, label = _checked(entry)
        self._insert(self._normalize(text), label)

    def _insert(self, key: str, label: str) -> None:
        if key not in self._entries:
            lengths = self._lengths.setdefault(key[0], [])
            if len(key) not in lengths:
                lengths.append(len(key))
                lengths.sort(reverse=True)
        self._entries[key] = label

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def labels(self) -> set[str]:
        return {label for label in self._entries.values() if label}

    def entries(self) -> list[Entry]:
        """The entries as stored (normalised text; ``(text, label)`` where a label was given)."""
        return [(text, label) if label else text for text, label in self._entries.items()]

    def find(self, text: str) -> list[Span]:
        """Leftmost-longest, non-overlapping matches in ``text`` as spans (label "" = any)."""
        normed = self._normalize(text)
        entries, by_first = self._entries, self._lengths
        spans: list[Span] = []
        i, n = 0, len(normed)
        while i < n:
            for length in by_first.get(normed[i], ()):
                label = entries.get(normed[i : i + length]) if i + length <= n else None
                if label is not None:
                    spans.append(Span(i, i + length, label))
                    i += length
                    break
            else:
                i += 1
        return spans


def _checked(entry: Entry) -> tuple[str, str]:
    """``(text, label)`` of a valid entry; :class:`DictionaryError` otherwise."""
    text, label = (entry, "") if isinstance(entry, str) else (entry if _is_pair(entry) else (None, None))
    if not isinstance(text, str) or not isinstance(label, str):
        raise DictionaryError("a dictionary entry is a string or a (text, label) pair of strings")
    if not text.strip() or len(text) > MAX_ENTRY_CHARS:
        raise DictionaryError(f"dictionary entries must be 1..{MAX_ENTRY_CHARS} characters and not blank")
    if text != text.strip():
        raise DictionaryError(f"dictionary entry {text!r} starts or ends with whitespace")
    return text, label


def _is_pair(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2


def to_entries(raw: Iterable[Any]) -> list[Entry]:
    """``"text"`` / ``{"text", "label"}`` / ``(text, label)`` -> dictionary entries; validates each."""
    entries: list[Entry] = []
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            text, label = item.get("text"), item.get("label") or ""
            entry: Entry = (text, label) if label else text  # type: ignore[assignment]
        elif _is_pair(item):
            entry = (item[0], item[1]) if item[1] else item[0]
        else:
            entry = item
        try:
            _checked(entry)
        except DictionaryError as exc:
            raise DictionaryError(f"entry {i}: {exc}") from None
        entries.append(entry)
    return entries


def entries_to_json(entries: Iterable[Entry]) -> list[Any]:
    return [e if isinstance(e, str) else {"text": e[0], "label": e[1]} for e in entries]


_FREQUENCY = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")


def parse_entry_line(line: str) -> Entry | None:
    """One line of a text dictionary -> its entry (None for a blank or ``#`` comment line); see the module's
    docstring for the forms. Raises :class:`DictionaryError` for anything else."""
    raw, line = line.rstrip("\r\n"), line.strip()
    if not line or line.startswith("#"):
        return None
    fields = [f.strip() for f in raw.split("\t")] if "\t" in raw else line.split()
    fields = [f for f in fields if f]
    text, rest = fields[0], fields[1:]
    if rest and _FREQUENCY.fullmatch(rest[0]):
        rest = rest[1:]  # jieba's frequency
    if len(rest) > 1:
        raise DictionaryError(f"expected 'word', 'word LABEL' or 'word FREQUENCY LABEL', got {len(fields)} fields "
                              "(separate fields with a tab when a word contains spaces)")
    entry: Entry = (text, rest[0]) if rest else text
    _checked(entry)  # the same checks as every entry
    return entry


def read_dictionary(path: str | Path) -> list[Entry]:
    """The entries of a dictionary file (JSON as the service stores them, or text lines; see the module's
    docstring). Errors name the file, and the line or entry."""
    path = Path(path)
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DictionaryError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    head = content.lstrip()[:1]
    if path.suffix.lower() == ".json" or head in ("{", "["):
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise DictionaryError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        raw = data.get("entries") if isinstance(data, dict) else data
        if not isinstance(raw, list):
            raise DictionaryError(f'{path}: expected a list of entries, or {{"entries": [...]}}')
        try:
            return to_entries(raw)
        except DictionaryError as exc:
            raise DictionaryError(f"{path}: {exc}") from None
    try:
        return parse_entry_lines(content)
    except DictionaryError as exc:
        raise DictionaryError(f"{path}, {exc}") from None


def parse_entry_lines(text: str, limit: int | None = None) -> list[Entry]:
    """The entries of a text dictionary's lines (:func:`parse_entry_line`); errors name the line. With
    ``limit``, reading stops at ``limit + 1`` entries (enough to tell the caller there are too many)."""
    entries: list[Entry] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = parse_entry_line(line)
        except DictionaryError as exc:
            raise DictionaryError(f"line {number}: {exc}") from None
        if entry is not None:
            entries.append(entry)
            if limit is not None and len(entries) > limit:
                break
    return entries


def without_labels(entries: Iterable[Entry]) -> list[str]:
    """Just the words: each entry forces its text, with no tag or entity type."""
    return [e if isinstance(e, str) else e[0] for e in entries]
