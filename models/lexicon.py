"""A lexicon as model input: for every unit, which lexicon words cover it, at which position, of which type.

Each unit gets a bit mask of ``4 x groups`` features: bit ``position * groups + group`` is set when a
lexicon word of that group covers the unit at that position (``B`` first unit of a word of two or more
units, ``M`` inside, ``E`` last, ``S`` a one-unit word). Groups are ``WORD`` alone (an untyped lexicon) or
``WORD``, ``PER``, ``LOC``, ``ORG`` for a typed one, read from a lexicon's tags (jieba's ``nr``/``ns``/
``nt``, or the entity labels themselves). This is the SoftLexicon idea (Ma et al. 2020) as indicators: every
word that matches, not only a leftmost-longest path.

Matching runs on the codec's flat arrays with array operations only: a polynomial hash of every word's
normalised characters (mod 2**64) is kept in a :class:`KeyIndex`; for every window of ``n`` units inside a
text (``n`` = 1 .. the longest word's units) the window's characters are hashed from one prefix sum and
looked up at once. A window that runs across whitespace includes that whitespace and so matches no word.

A per-request overlay (a soft user dictionary) is a second, small :class:`Lexicon` whose bits are OR-ed
into the stored one's; the stored index is never rebuilt.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

if TYPE_CHECKING:
    from seqtag.models.codec import Encoded, KeyIndex

POSITIONS = ("B", "M", "E", "S")
WORD = "WORD"
TYPED_GROUPS = (WORD, "PER", "LOC", "ORG")
# tag prefixes (lower-cased) -> group; jieba/ICTCLAS tags and the entity labels seqtag's NER models use
_TAG_GROUPS = (("nr", "PER"), ("per", "PER"), ("name", "PER"), ("ns", "LOC"), ("loc", "LOC"), ("gpe", "LOC"),
               ("nt", "ORG"), ("org", "ORG"))
MAX_WORD_CHARS = 64
MAX_WORD_UNITS = 12  # longer words are left out of the lexicon (they are a few thousand idioms and titles)

_BASE = 0x100000001B3  # odd: invertible mod 2**64
_BASE_INV = pow(_BASE, -1, 1 << 64)
_MASK63 = np.uint64((1 << 63) - 1)
_LEN_MIX = np.uint64(0x9E3779B97F4A7C15)
_PREFIX = 1 << 32  # in the index's values: longer words start with this key's characters


def group_of(tag: str, typed: bool) -> str:
    """The feature group of a lexicon tag (``WORD`` for an untyped lexicon, no tag, or any other tag)."""
    if typed and tag:
        low = tag.lower()
        for prefix, group in _TAG_GROUPS:
            if low.startswith(prefix):
                return group
    return WORD


@lru_cache(maxsize=4)
def _powers(size: int, base: int) -> np.ndarray:
    out = np.full(size, base, dtype=np.uint64)
    out[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(out, dtype=np.uint64)


def _pow_table(n: int, inverse: bool) -> np.ndarray:
    size = 1 << max(10, int(n).bit_length())  # cached by powers of two
    return _powers(size, _BASE_INV if inverse else _BASE)[:n]


def _prefix_hashes(points: np.ndarray) -> np.ndarray:
    """``S[k] = sum_{j<k} p_j * B**j`` (mod 2**64), ``len(points) + 1`` values."""
    out = np.zeros(len(points) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.cumsum(points.astype(np.uint64) * _pow_table(len(points), False), out=out[1:])
    return out


def _keys(prefix: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hash keys of the character ranges ``[starts, ends)`` (non-negative int64), equal for equal strings."""
    with np.errstate(over="ignore"):
        h = (prefix[ends] - prefix[starts]) * _pow_table(int(starts.max()) + 1 if len(starts) else 1, True)[starts]
        h ^= (ends - starts).astype(np.uint64) * _LEN_MIX
    return (h & _MASK63).astype(np.int64)


@dataclass
class LexiconSource:
    """Where a lexicon's words came from (for the model card)."""

    name: str
    licence: str
    words: int

    def as_dict(self) -> dict:
        return {"name": self.name, "licence": self.licence, "words": self.words}


@dataclass
class Lexicon:
    """Normalised words by group. Build with :meth:`build`; :meth:`features` gives each unit's bit mask."""

    groups: tuple[str, ...]
    words: dict[str, int]  # normalised word -> bit mask of its groups
    sources: list[LexiconSource] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = None

    @property
    def typed(self) -> bool:
        return len(self.groups) > 1

    @property
    def num_features(self) -> int:
        return len(POSITIONS) * len(self.groups)

    @property
    def feature_names(self) -> list[str]:
        return [f"{pos}-{g}" for pos in POSITIONS for g in self.groups]

    @classmethod
    def empty(cls, typed: bool) -> "Lexicon":
        return cls(TYPED_GROUPS if typed else (WORD,), {})

    def add(self, entries: Iterable[str | tuple[str, str]], normalize_many: Callable[[list[str]], list[str]]) -> int:
        """Add ``word`` / ``(word, tag)`` entries (normalised by ``normalize_many``); returns how many words are new.
        Words with whitespace at either end, or longer than :data:`MAX_WORD_CHARS`, are left out. A typed entry
        (a person, place or organisation tag) replaces the type an earlier call gave the same word, so that a
        lexicon listed later (a curated gazetteer) corrects an earlier one's tags; untyped entries only add."""
        texts, tags = [], []
        for entry in entries:
            text, tag = (entry, "") if isinstance(entry, str) else entry
            if text and len(text) <= MAX_WORD_CHARS and text == text.strip():
                texts.append(text)
                tags.append(tag)
        before = len(self.words)
        bit = {g: 1 << i for i, g in enumerate(self.groups)}
        new: dict[str, int] = {}
        for key, tag in zip(normalize_many(texts) if texts else [], tags):
            new[key] = new.get(key, 0) | bit[group_of(tag, self.typed)]
        word_bit = bit[WORD]
        for key, mask in new.items():
            old = self.words.get(key, 0)
            # a typed entry re-types a word an earlier call added (a curated gazetteer after jieba's loose tags)
            self.words[key] = (old & word_bit) | mask if mask & ~word_bit else old | mask
        self._index = None
        return len(self.words) - before

    # ---- matching ------------------------------------------------------
    def _built(self, split: Callable[[list[str]], "Encoded"]) -> tuple["KeyIndex", np.ndarray]:
        """Key of every word and of every proper unit-prefix of a word -> the word's group mask, plus
        :data:`_PREFIX` where longer words go on from there; one-character ones by code point in an array.
        Built once, on first use, with the codec's units."""
        if self._index is None:
            from seqtag.models.codec import KeyIndex  # the codec imports this module

            words = list(self.words)
            enc = split(words) if words else None
            counts = enc.counts if enc is not None else np.zeros(0, dtype=np.int64)
            keep = np.flatnonzero((counts >= 1) & (counts <= MAX_WORD_UNITS))
            if not len(keep):
                self._index = (KeyIndex(np.zeros(0, np.int64), np.zeros(0, np.int64), 0), np.zeros(1, np.int64))
                return self._index
            masks = np.fromiter(self.words.values(), np.int64, len(words))[keep]
            lengths = np.fromiter(map(len, words), np.int64, len(words))
            word_first = np.cumsum(lengths) - lengths  # where each word starts in the joined string
            points = np.frombuffer("".join(words).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            prefix = _prefix_hashes(points)
            # every unit of a kept word but its last ends a proper prefix of it
            unit_word = np.repeat(np.arange(len(words)), counts)
            unit_end = enc.flat_offsets[:, 1] + word_first[unit_word]
            last = np.cumsum(counts) - 1
            inner = np.ones(len(unit_word), dtype=bool)
            inner[last[counts > 0]] = False
            inner &= np.isin(unit_word, keep)
            pre_words = unit_word[inner]
            keys = np.concatenate([_keys(prefix, word_first[keep], word_first[keep] + lengths[keep]),
                                   _keys(prefix, word_first[pre_words], unit_end[inner])])
            values = np.concatenate([masks, np.full(len(pre_words), _PREFIX, dtype=np.int64)])
            # one-character keys (most one-unit windows) are looked up by code point in a flat table instead
            one = np.concatenate([lengths[keep], unit_end[inner] - word_first[pre_words]]) == 1
            cps = points[np.concatenate([word_first[keep], word_first[pre_words]])[one]]
            singles = np.zeros(int(cps.max()) + 1 if len(cps) else 1, dtype=np.int64)
            np.bitwise_or.at(singles, cps, values[one])
            keys, values = keys[~one], values[~one]
            order = np.argsort(keys, kind="stable")
            keys, values = keys[order], values[order]
            unique, first = np.unique(keys, return_index=True)
            values = np.bitwise_or.reduceat(values, first) if len(first) else values
            self._index = (KeyIndex(unique, values, 0), singles)
        return self._index

    def features(self, points: np.ndarray, text_first: np.ndarray, counts: np.ndarray, flat_offsets: np.ndarray,
                 split: Callable[[list[str]], "Encoded"]) -> np.ndarray:
        """Bit masks (N,) int64 of the N units of a batch of texts.

        ``points``: the normalised code points of all texts one after the other; ``text_first``: where each
        text starts in them; ``counts``/``flat_offsets``: the texts' units (offsets within each text).
        ``split``: the codec's unit splitter (used once, to cut the lexicon's words into units).

        Windows grow one unit at a time from every unit, and only while they are a prefix of some word: a
        batch costs about two lookups per unit whatever the lexicon's size.
        """
        n_units = len(flat_offsets)
        out = np.zeros(n_units, dtype=np.int64)
        index, singles = self._built(split)
        if not n_units or not (len(index) or singles.any()):
            return out
        owner = np.repeat(np.arange(len(counts)), counts)
        base = text_first[owner]
        starts, ends = flat_offsets[:, 0] + base, flat_offsets[:, 1] + base
        prefix = _prefix_hashes(points)
        groups = len(self.groups)
        group_bits = (1 << groups) - 1
        first = np.arange(n_units)  # windows [first, first + span] still in play
        for span in range(MAX_WORD_UNITS):
            last = first + span
            if span == 0:  # one unit: one character (by code point) or a Latin run (by key)
                found = np.zeros(n_units, dtype=np.int64)
                one = np.flatnonzero(ends - starts == 1)
                cps = points[starts[one]]
                known = cps < len(singles)
                found[one[known]] = singles[cps[known]]
                runs = np.flatnonzero(ends - starts > 1)
                if len(runs):
                    found[runs] = index.lookup(_keys(prefix, starts[runs], ends[runs]))
            else:
                found = index.lookup(_keys(prefix, starts[first], ends[last]))
            mask = found & group_bits
            hit = np.flatnonzero(mask)
            if len(hit):
                at, bits = first[hit], mask[hit]
                if span == 0:
                    out[at] |= bits << (3 * groups)
                else:
                    out[at] |= bits
                    out[at + span] |= bits << (2 * groups)
                    for k in range(1, span):
                        out[at + k] |= bits << groups
            going = np.flatnonzero(found & _PREFIX)
            first, last = first[going], last[going] + 1
            inside = last < n_units
            first, last = first[inside], last[inside]
            first = first[(owner[last] == owner[first]) & (ends[last] - starts[first] <= MAX_WORD_CHARS)]
            if not len(first):
                break
        return out

    # ---- persistence ---------------------------------------------------
    def to_json(self) -> dict:
        """Words grouped by their group mask, one newline-joined string each (compact on disk)."""
        by_mask: dict[int, list[str]] = {}
        for word, mask in self.words.items():
            by_mask.setdefault(mask, []).append(word)
        return {"groups": list(self.groups), "sources": [s.as_dict() for s in self.sources],
                "words": {str(mask): "\n".join(words) for mask, words in sorted(by_mask.items())}}

    @classmethod
    def from_json(cls, data: dict) -> "Lexicon":
        groups = tuple(data["groups"])
        if not groups or groups[0] != WORD or any(not isinstance(g, str) for g in groups):
            raise ValueError("lexicon: groups must start with WORD")
        words: dict[str, int] = {}
        limit = 1 << len(groups)
        for mask, joined in data["words"].items():
            bits = int(mask)
            if not 0 < bits < limit or not isinstance(joined, str):
                raise ValueError(f"lexicon: bad group mask {mask!r}")
            for word in joined.split("\n"):
                if word:
                    words[word] = bits
        sources = [LexiconSource(str(s["name"]), str(s["licence"]), int(s["words"])) for s in data.get("sources", [])]
        return cls(groups, words, sources)


def _package_dir(name: str, hint: str) -> Path:
    """Where an installed package's files are, found without importing it (read at training time only;
    jionlp's import pulls in more)."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"--lexicon {hint} needs the {name} package at training time: pip install {name}")
    return Path(list(spec.submodule_search_locations)[0])


def jieba_dictionary() -> Path:
    """The path of jieba's ``dict.txt`` (MIT licence), from the installed ``jieba`` package."""
    path = _package_dir("jieba", "jieba") / "dict.txt"
    if not path.exists():
        raise FileNotFoundError(f"jieba is installed but has no dict.txt at {path}")
    return path


def jionlp_places(max_level: int = 2) -> list[tuple[str, str]]:
    """Place names from the installed ``jionlp`` package's dictionaries (Apache-2.0), as ``(name, "LOC")``:
    every country, capital and major city of ``world_location.txt``, and China's provinces, prefectures and
    counties (``max_level`` 2) of ``china_location.zip``, each by its full and its short name (``武威市``,
    ``武威``). Names of one character are left out."""
    folder = _package_dir("jionlp", "jionlp-places") / "dictionary"
    names: dict[str, None] = {}
    try:
        for line in (folder / "world_location.txt").read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.endswith(":"):
                names.update(dict.fromkeys(w.strip() for field in line.split("\t") for w in field.split("/")))
        with zipfile.ZipFile(folder / "china_location.zip") as archive:
            text = archive.read("china_location.txt").decode("utf-8")
    except (OSError, KeyError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise FileNotFoundError(f"jionlp's place dictionaries are unreadable in {folder}: {exc}") from None
    for line in text.splitlines():
        if len(line) - len(line.lstrip("\t")) <= max_level:
            names.update(dict.fromkeys(w for w in line.strip().split("\t") if not w.isdigit()))
    return [(name, "LOC") for name in names if len(name) >= 2]


def lexicon_entries(spec: str) -> tuple[list[str | tuple[str, str]], LexiconSource]:
    """A ``--lexicon`` argument's entries and source: ``jieba`` (jieba's dict.txt), ``jionlp-places`` (place
    names from jionlp, all typed LOC), or a file in the formats the dictionary reader takes (``word``,
    ``word TAG``, jieba's ``word FREQ TAG``, the service's JSON)."""
    from seqtag.models.dictionary import read_dictionary

    if spec == "jieba":
        path = jieba_dictionary()
        entries = read_dictionary(path)
        return entries, LexiconSource("jieba dict.txt (jieba 0.42)", "MIT", len(entries))
    if spec == "jionlp-places":
        places = jionlp_places()
        return places, LexiconSource("jionlp place names (world_location, china_location to county level)",
                                           "Apache-2.0", len(places))
    entries = read_dictionary(spec)
    return entries, LexiconSource(Path(spec).name, "as given by the user", len(entries))
