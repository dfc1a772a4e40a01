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
"""

from __future__ import annotations

from typing import Callable, Iterable

from models.spans import Span

Entry = str | tuple[str, str]
MAX_ENTRY_CHARS = 64


class DictionaryError(ValueError):
    pass


class Dictionary:
    def __init__(self, entries: Iterable[Entry] = (), normalize: Callable[[str], str] = lambda s: s):
        self._normalize = normalize
        self._entries: dict[str, str] = {}  # normalised text -> label ("" = any)
        self._by_first: dict[str, list[str]] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: Entry) -> None:
        text, label = (entry, "") if isinstance(entry, str) else entry
        if not isinstance(text, str) or not isinstance(label, str):
            raise DictionaryError("a dictionary entry is a string or a (text, label) pair of strings")
        if not text.strip() or len(text) > MAX_ENTRY_CHARS:
            raise DictionaryError(f"dictionary entries must be 1..{MAX_ENTRY_CHARS} characters and not blank")
        if text != text.strip():
            raise DictionaryError(f"dictionary entry {text!r} starts or ends with whitespace")
        key = self._normalize(text)
        if key not in self._entries:
            self._by_first.setdefault(key[0], []).append(key)
            self._by_first[key[0]].sort(key=len, reverse=True)
        self._entries[key] = label

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def labels(self) -> set[str]:
        return {label for label in self._entries.values() if label}

    def find(self, text: str) -> list[Span]:
        """Leftmost-longest, non-overlapping matches in ``text`` as spans (label "" = any)."""
        normed = self._normalize(text)
        spans: list[Span] = []
        i, n = 0, len(normed)
        while i < n:
            for key in self._by_first.get(normed[i], ()):
                if normed.startswith(key, i):
                    spans.append(Span(i, i + len(key), self._entries[key]))
                    i += len(key)
                    break
            else:
                i += 1
        return spans
