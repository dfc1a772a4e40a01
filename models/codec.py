"""The one codec: text <-> units <-> tensors, and unit tags back to character spans.

Unit rules (``units="latin_runs"``, the default):

* whitespace (Unicode ``White_Space``) is never a unit and only separates units;
* a run of Latin letters and ASCII digits, with any combining marks after a
  letter and decimal parts between digits, is one unit: ``iPhone15``,
  ``COVID``, ``2024``, ``3.5``;
* a run of one repeated ellipsis, dash or line character (``……``, ``——``,
  ``...``, ``-----``, ``___``) is one unit: one punctuation mark, as the
  Chinese standard writes an ellipsis or a dash with two characters
  (``mark_runs``, on for models trained since it came; older ones split them);
* every other character (each CJK character, punctuation, symbol, emoji code
  point, control character) is one unit of its own.

With ``units="chars"`` every non-whitespace character is a unit.

Normalisation is a *one character to one character* table applied before the
``tokenizers`` pre-tokeniser: NFKC where NFKC yields a single character
(full-width ``Ａ１！`` -> ``A1!``), optional lower-casing, optional
traditional -> simplified Chinese (OpenCC's character table), and lone
surrogates -> U+FFFD. Because no character is ever inserted or removed, unit
offsets computed on the normalised string *are* offsets into the original
string. (``tokenizers``' own NFKC moves offsets when it composes or expands
characters, so we do not use it.) Offsets are code points, half-open.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, repeat
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from tokenizers import Regex, Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel

from seqtag.models.lexicon import Lexicon, LexiconSource
from seqtag.models.spans import Span, ragged_take

PAD, UNK, BOUNDARY = "[PAD]", "[UNK]", "[BOS]"
PAD_ID, UNK_ID, BOUNDARY_ID = 0, 1, 2
_SPECIALS = [PAD, UNK, BOUNDARY]

# A decimal part only follows a digit: "v1.2" is one unit, "a.5" and "No.1" are three.
_LATIN_RUN = r"(?:[\p{Latin}0-9]\p{M}*)+(?:(?<=[0-9])\.[0-9]+)*"
# Characters that repeat to write one mark (ellipsis, dash, rule), after normalisation (NFKC makes "－" "-"):
# the tokenizer's pattern for a run of one of them, and their code points for the array splitter.
_MARKS = "…⋯┅┄—―─━-._~=*·"
_MARK_RUN = "([" + "".join(map(re.escape, _MARKS)) + r"])\1+"
_MARK_POINTS = np.array(sorted(map(ord, _MARKS)), dtype=np.uint32)
_T2S_PATH = Path(__file__).parent / "data" / "t2s.json"
LEXICON_FILE = "lexicon.json"  # in a checkpoint directory, when the model reads lexicon features


class CodecConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    units: Literal["latin_runs", "chars"] = "latin_runs"
    """latin_runs: a run of Latin letters and digits is one unit (and a repeated ellipsis or dash, see
    mark_runs); chars: every character is one"""
    lowercase: bool = True
    """look up units in lower case"""
    t2s: bool = False
    """traditional -> simplified Chinese before lookup"""
    t2s_unseen: bool = True
    """a traditional character the vocabulary lacks looks up as its simplified form (simplified text gets the same
    units as without it)"""
    zero_digits: bool = False
    """every decimal digit looks up as 0 ("1998" -> "0000"): numbers share statistics"""
    bigrams: bool = True
    """character bigram features"""
    unit_min_freq: int = 1
    """units seen fewer times in training are unknown"""
    bigram_min_freq: int = 2
    """bigrams seen fewer times in training are unknown"""
    max_bigrams: int = 50_000
    """most bigrams kept (the most frequent)"""
    mark_runs: bool = True
    """with latin_runs: a run of one repeated ellipsis, dash or line character (…… —— ... ---) is one unit
    (checkpoints saved before this option split them, and keep doing so)"""
    lexicon_typed: bool = True
    """with --lexicon: group its words by type (person, place, organisation, other; from the lexicon's tags) or
    treat them all alike"""


def is_space(ch: str) -> bool:
    """Unicode White_Space, as the pre-tokeniser (Rust ``char::is_whitespace``) sees it."""
    return ch in _WHITE_SPACE


_WHITE_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


# Inputs shorter than this (characters in all) go through the tokenizer: one call, cheaper than the
# array splitter's fixed cost (measured: 31 vs 39 us for one 19-character text, 200 vs 44 us for 101).
_SPLIT_MIN_CHARS = 64
# Unit classes of normalised code points for the array-based splitter (see Codec._split_units).
_OTHER, _SPACE, _RUN, _SINGLE, _DOT = range(5)
# Characters that are certainly a unit of their own under both unit rules: ASCII punctuation but
# ".", CJK ideographs, CJK and general punctuation, arrows, mathematical and technical symbols, box
# drawing and geometric shapes (○ writes zero in Chinese dates: 二○○一年) and other symbols (no Latin
# letters, marks, format or space characters among them; a test checks each against the tokenizer).
# Anything else sends its text through the tokenizer.
_SINGLE_RANGES = [(0x21, 0x2D), (0x2F, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E), (0xB7, 0xB7),
                  (0x2010, 0x2027), (0x2030, 0x205E), (0x2190, 0x23FF), (0x2500, 0x27BF),
                  (0x3001, 0x3029), (0x3030, 0x303F), (0x3400, 0x4DBF), (0x4E00, 0x9FFF)]


@lru_cache(maxsize=2)
def _unit_classes(units: str) -> np.ndarray:
    """Per code point: how the array-based splitter treats it (``_OTHER``: not at all)."""
    if units == "chars":  # every character that is not whitespace is a unit
        classes = np.full(0x110000, _SINGLE, dtype=np.uint8)
    else:
        classes = np.full(0x110000, _OTHER, dtype=np.uint8)
        for first, last in _SINGLE_RANGES:
            classes[first : last + 1] = _SINGLE
        for first, last in ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)):
            classes[first : last + 1] = _RUN
        classes[ord(".")] = _DOT
    classes[[ord(ch) for ch in _WHITE_SPACE]] = _SPACE
    classes[0xD800:0xE000] = _OTHER  # never seen after normalisation
    return classes


@lru_cache(maxsize=1)
def _t2s_table() -> dict[str, str]:
    if not _T2S_PATH.exists():
        raise FileNotFoundError(f"traditional->simplified table missing: {_T2S_PATH}")
    return json.loads(_T2S_PATH.read_text(encoding="utf-8"))


def build_charmap(lowercase: bool, t2s: bool, zero_digits: bool = False) -> dict[str, str]:
    """The 1:1 normalisation table (only characters that change)."""
    table: dict[str, str] = {}
    simp = _t2s_table() if t2s else {}
    for cp in range(0x110000):
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF:
            continue  # added by Codec itself: lone surrogates cannot be stored in JSON
        out = unicodedata.normalize("NFKC", ch) if cp >= 0x80 else ch
        if len(out) != 1:
            out = ch
        if lowercase:
            low = out.lower()
            out = low if len(low) == 1 else out
        out = simp.get(out, out)
        if zero_digits and out.isdecimal():
            out = "0"
        # Never turn a visible character into whitespace: it would lose its unit.
        if out != ch and not (is_space(out) and not is_space(ch)):
            table[ch] = out
    return table


def _pre_tokenizer(units: str, mark_runs: bool = False) -> pre_tokenizers.PreTokenizer:
    pattern = _LATIN_RUN + "|." if units == "latin_runs" else "."
    if units == "latin_runs" and mark_runs:
        pattern = _MARK_RUN + "|" + pattern
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(pattern), behavior="isolated")]
    )


class Encoded:
    """Units of a batch of texts: per text an ``(n, 2)`` offsets array and ``(n,)`` ids.

    Made by the codec, it is stored flat (all texts' units one after the other, ``counts`` of them per
    text), so a batch of rows is gathered with a few array operations; the per-text lists ``ids`` and
    ``offsets`` are views made on first use. Made from per-text lists, the flat arrays are made on first use.
    """

    def __init__(self, offsets: list[np.ndarray], ids: list[np.ndarray],
                 lexicon: list[np.ndarray] | None = None):
        self._offsets: list[np.ndarray] | None = offsets
        self._ids: list[np.ndarray] | None = ids
        self._counts: np.ndarray | None = None
        self._flat_offsets: np.ndarray | None = None
        self._flat_ids: np.ndarray | None = None
        self._lexicon = lexicon
        self._flat_lexicon: np.ndarray | None = None

    @classmethod
    def from_flat(cls, flat_offsets: np.ndarray, flat_ids: np.ndarray, counts: np.ndarray) -> "Encoded":
        """``counts[i]`` units for text i; ``flat_offsets`` (N, 2) and ``flat_ids`` (N,) hold them in text order."""
        if int(counts.sum()) != len(flat_ids) or len(flat_ids) != len(flat_offsets):
            raise ValueError("Encoded.from_flat: counts, ids and offsets do not agree")
        enc = cls(None, None)  # type: ignore[arg-type]
        enc._counts = counts.astype(np.int64, copy=False)
        enc._flat_offsets, enc._flat_ids = flat_offsets, flat_ids
        enc._lexicon = None
        return enc

    @property
    def counts(self) -> np.ndarray:
        """(texts,) units per text."""
        if self._counts is None:
            self._counts = np.fromiter(map(len, self.ids), np.int64, len(self.ids))
        return self._counts

    @property
    def lengths(self) -> list[int]:
        return self.counts.tolist()

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def ids(self) -> list[np.ndarray]:
        if self._ids is None:
            self._ids = np.split(self.flat_ids, np.cumsum(self.counts)[:-1])
        return self._ids

    @property
    def offsets(self) -> list[np.ndarray]:
        if self._offsets is None:
            self._offsets = np.split(self.flat_offsets, np.cumsum(self.counts)[:-1])
        return self._offsets

    @property
    def flat_ids(self) -> np.ndarray:
        if self._flat_ids is None:
            self._flat_ids = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)
        return self._flat_ids

    @property
    def flat_offsets(self) -> np.ndarray:
        if self._flat_offsets is None:
            self._flat_offsets = (np.concatenate(self._offsets) if self._offsets
                                  else np.zeros((0, 2), dtype=np.int64))
        return self._flat_offsets

    @property
    def flat_lexicon(self) -> np.ndarray | None:
        """(N,) lexicon feature bits of every unit (see :mod:`models.lexicon`), None without a lexicon."""
        if self._flat_lexicon is None and self._lexicon is not None:
            self._flat_lexicon = np.concatenate(self._lexicon) if self._lexicon else np.zeros(0, dtype=np.int64)
        return self._flat_lexicon

    @property
    def lexicon(self) -> list[np.ndarray] | None:
        """Per text, its units' lexicon feature bits (None without a lexicon)."""
        if self._lexicon is None and self._flat_lexicon is not None:
            self._lexicon = np.split(self._flat_lexicon, np.cumsum(self.counts)[:-1])
        return self._lexicon

    def rows(self, order: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of the units of texts ``order`` (in that order), and those texts' unit counts."""
        return ragged_take(self.counts, order)


@dataclass
class Batch:
    """Padded model inputs. unit_ids, bigram_ids: (B, L) / (B, L, 2) long; lengths: (B,) long (CPU);
    lexicon: (B, L) long bit masks of lexicon features, or None."""

    unit_ids: torch.Tensor
    bigram_ids: torch.Tensor | None
    lengths: torch.Tensor
    lexicon: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(move(self.unit_ids), move(self.bigram_ids), self.lengths, move(self.lexicon))

    def pin_memory(self) -> "Batch":
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return Batch(pin(self.unit_ids), pin(self.bigram_ids), self.lengths, pin(self.lexicon))


class KeyIndex:
    """Non-negative int64 keys -> int64 values, looked up for whole arrays at once.

    An open-addressing hash table (Fibonacci hashing, linear probing, at most a quarter full)
    held in two arrays: a lookup is a few vectorised gathers instead of a binary search per key.
    """

    _EMPTY = -1

    def __init__(self, keys: np.ndarray, values: np.ndarray, missing: int):
        """``keys``: sorted and distinct (as ``np.unique`` gives them), non-negative."""
        if len(keys) and (keys[0] < 0 or not (keys[1:] > keys[:-1]).all()):
            raise ValueError("KeyIndex keys must be sorted, distinct and non-negative")
        self.missing = missing
        self.count = len(keys)
        self.bits = max(4, int(np.ceil(np.log2(max(len(keys), 1) * 4))))
        size = 1 << self.bits
        self.keys = np.full(size, self._EMPTY, dtype=np.int64)
        self.values = np.full(size, missing, dtype=np.int64)
        home = self._home(keys)
        pending = np.arange(len(keys))
        self.probes = 0  # the longest probe sequence any key needs
        while len(pending):  # round p places the keys still waiting at home + p, where free
            slot = (home[pending] + self.probes) & (size - 1)
            free = np.flatnonzero(self.keys[slot] == self._EMPTY)
            wanted, want_key = slot[free], keys[pending[free]]
            self.keys[wanted] = want_key  # keys wanting the same slot: one of them lands (the keys are distinct)
            won = self.keys[wanted] == want_key
            self.values[wanted[won]] = values[pending[free[won]]]
            placed = np.zeros(len(pending), dtype=bool)
            placed[free[won]] = True
            pending = pending[~placed]
            self.probes += 1

    def __len__(self) -> int:
        return self.count

    def _home(self, keys: np.ndarray) -> np.ndarray:
        mixed = keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        return (mixed >> np.uint64(64 - self.bits)).astype(np.int64)

    def lookup(self, queries: np.ndarray) -> np.ndarray:
        """The value of every query (same shape), ``missing`` where a key is absent."""
        out = np.full(queries.shape, self.missing, dtype=np.int64)
        flat_out = out.reshape(-1)
        todo = np.arange(queries.size)
        query = queries.reshape(-1)
        slot = self._home(query)
        for _ in range(self.probes):
            found = self.keys[slot]
            hit = found == query
            flat_out[todo[hit]] = self.values[slot[hit]]
            going = ~hit & (found != self._EMPTY)
            todo, query, slot = todo[going], query[going], (slot[going] + 1) & (len(self.keys) - 1)
            if not len(todo):
                break
        return out


class Codec:
    """Owns normalisation, unit splitting, vocabularies and span <-> unit mapping."""

    def __init__(
        self,
        config: CodecConfig,
        tokenizer: Tokenizer,
        charmap: dict[str, str],
        bigrams: Sequence[tuple[str, str]] = (),
        lexicon: Lexicon | None = None,
    ):
        self.config = config
        self.tokenizer = tokenizer
        self.charmap = charmap
        self.bigram_list = [tuple(b) for b in bigrams]
        self.lexicon = lexicon
        self._index_bigrams()
        self._refresh_fallback()  # sets self._table: code point -> normalised code point

    def _charmap_table(self) -> np.ndarray:
        """Code point -> normalised code point by the charmap alone (lone surrogates -> U+FFFD)."""
        table = np.arange(0x110000, dtype=np.uint32)
        table[0xD800:0xE000] = 0xFFFD
        if self.charmap:
            table[np.fromiter(map(ord, self.charmap), np.int64, len(self.charmap))] = np.fromiter(
                map(ord, self.charmap.values()), np.uint32, len(self.charmap))
        return table

    # ---- construction -------------------------------------------------
    @classmethod
    def build(cls, texts: Iterable[str], config: CodecConfig | None = None) -> "Codec":
        """Build vocabularies from training texts."""
        config = config or CodecConfig()
        charmap = build_charmap(config.lowercase, config.t2s, config.zero_digits)
        codec = cls(config, cls._empty_tokenizer(config, {}), charmap)
        codec.extend(texts)
        return codec

    @staticmethod
    def _empty_tokenizer(config: CodecConfig, vocab: dict[str, int]) -> Tokenizer:
        full = {tok: i for i, tok in enumerate(_SPECIALS)}
        for tok in vocab:
            full.setdefault(tok, len(full))
        tok = Tokenizer(WordLevel(full, unk_token=UNK))
        tok.pre_tokenizer = _pre_tokenizer(config.units, config.mark_runs)
        return tok

    def extend(self, texts: Iterable[str]) -> tuple[int, int]:
        """Add units/bigrams of ``texts`` passing the frequency cuts; old ids keep their meaning.

        Returns (new units, new bigrams).
        """
        texts = list(texts)
        unit_counts: Counter[str] = Counter()
        # counted as the charmap alone normalises them: a traditional character in new text becomes a unit of
        # its own, not its simplified form (the t2s_unseen fallback is for units the vocabulary does not have)
        base = self._charmap_table()
        table, self._table = self._table, base
        try:
            pieces = [self._pieces(t) for t in texts]
        finally:
            self._table = table
        for units in pieces:
            unit_counts.update(units)
        vocab = self.tokenizer.get_vocab()
        fresh = [u for u, c in unit_counts.most_common() if c >= self.config.unit_min_freq and u not in vocab]
        ordered = sorted(vocab, key=vocab.get) + fresh
        self.tokenizer = self._empty_tokenizer(self.config, {u: i for i, u in enumerate(ordered)})
        added_bigrams = 0
        if self.config.bigrams:
            counts: Counter[tuple[str, str]] = Counter()
            for units in pieces:
                seq = [BOUNDARY, *units, BOUNDARY]
                counts.update(zip(seq, seq[1:]))
            known = set(self.bigram_list)
            room = self.config.max_bigrams - len(self.bigram_list)
            new = [b for b, c in counts.most_common() if c >= self.config.bigram_min_freq and b not in known]
            new = new[: max(room, 0)]
            self.bigram_list.extend(new)
            added_bigrams = len(new)
            self._index_bigrams()
        self._refresh_fallback(base)
        return len(fresh), added_bigrams

    def _refresh_fallback(self, base: np.ndarray | None = None) -> None:
        """Rebuild the lookup table with the ``t2s_unseen`` fallback for the current vocabulary (``base``: the
        charmap's own table, when the caller has it)."""
        self._fallback: dict[str, str] = {}
        base = self._table = self._charmap_table() if base is None else base
        if not self.config.t2s_unseen or self.config.t2s:
            return
        vocab = self.tokenizer.get_vocab()
        for trad, simp in _t2s_table().items():
            seen, known = chr(base[ord(trad)]), chr(base[ord(simp)])
            if seen != known and seen not in vocab and known in vocab:
                self._fallback[seen] = known
        if self._fallback:
            remap = np.arange(0x110000, dtype=np.uint32)
            remap[np.fromiter(map(ord, self._fallback), np.int64, len(self._fallback))] = np.fromiter(
                map(ord, self._fallback.values()), np.uint32, len(self._fallback))
            self._table = remap[base]  # the charmap first, then the fallback

    def truncate_bigrams(self, keep: int) -> None:
        """Keep only the ``keep`` most frequent bigrams (the list is in frequency order); the rest become UNK."""
        self.bigram_list = self.bigram_list[: max(keep, 0)]
        self._index_bigrams()

    def _index_bigrams(self) -> None:
        """Bigrams are looked up by the pair of unit ids: key = left * V + right, in a :class:`KeyIndex`."""
        vocab = self.tokenizer.get_vocab()
        self._vsize = len(vocab)
        count = len(self.bigram_list)
        left = np.fromiter(map(vocab.get, (a for a, _ in self.bigram_list), repeat(UNK_ID)), np.int64, count)
        right = np.fromiter(map(vocab.get, (b for _, b in self.bigram_list), repeat(UNK_ID)), np.int64, count)
        known = np.flatnonzero((left != UNK_ID) & (right != UNK_ID))
        keys, first = np.unique(left[known] * self._vsize + right[known], return_index=True)
        self._bigram_index = KeyIndex(keys, known[first] + 2, UNK_ID)  # ids: 0 pad, 1 unk, then the list

    @property
    def num_units(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def num_bigrams(self) -> int:
        """Size of the bigram id space (0 pad, 1 unk, then the list); 0 when bigrams are off."""
        return len(self.bigram_list) + 2 if self.config.bigrams else 0

    # ---- text -> units ------------------------------------------------
    def normalize(self, text: str) -> str:
        return self.normalize_all([text])[0]

    def normalize_all(self, texts: Sequence[str]) -> list[str]:
        """Every text through the 1:1 table, in one array lookup over all of them."""
        if not texts:
            return []
        normed = self._normalized_points(texts).tobytes().decode("utf-32-le")
        ends = np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts))).tolist()
        return [normed[a:z] for a, z in zip([0] + ends[:-1], ends)]

    def _normalized_points(self, texts: Sequence[str]) -> np.ndarray:
        """The normalised code points of all texts, one after the other."""
        joined = "".join(texts)
        return self._table[np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)]

    def _pieces(self, text: str) -> list[str]:
        pre = self.tokenizer.pre_tokenizer.pre_tokenize_str(self.normalize(text))
        return [p for p, _ in pre]

    def encode(self, texts: Sequence[str], soft: Lexicon | None = None) -> Encoded:
        """Units (ids and character offsets) of every text, and their lexicon features when the codec has a
        lexicon (``soft``: a request's own words on top of it, see :meth:`soft_lexicon`).

        Texts made only of characters whose unit is plain (CJK, punctuation, ASCII letters and
        digits, whitespace) are split with array operations over all of them at once; the rest go
        through the ``tokenizers`` pipeline. Both give the same units (tests compare them).
        """
        encoded = self._units(texts)
        if self.lexicon is not None and len(encoded):
            encoded._flat_lexicon = self.lexicon_features(texts, encoded, soft)
        return encoded

    def _units(self, texts: Sequence[str]) -> Encoded:
        if not texts:
            return Encoded([], [])
        if sum(map(len, texts)) < _SPLIT_MIN_CHARS:  # a few dozen array calls cost more than the tokenizer
            return self._tokenize(self.normalize_all(texts))
        return self._array_encode(texts)

    # ---- lexicon features ----------------------------------------------
    @property
    def num_lexicon_features(self) -> int:
        return self.lexicon.num_features if self.lexicon is not None else 0

    def set_lexicon(self, entries: Iterable[str | tuple[str, str]], source: LexiconSource | None = None) -> int:
        """Add lexicon words (``word`` or ``(word, tag)``); the first call gives the codec a lexicon. Returns how
        many words were new."""
        if self.lexicon is None:
            self.lexicon = Lexicon.empty(self.config.lexicon_typed)
        added = self.lexicon.add(entries, self.normalize_all)
        if source is not None:
            self.lexicon.sources.append(source)
        return added

    def warm(self) -> None:
        """Build now what the first :meth:`encode` would build (the lexicon's word index, about a second for
        jieba's 349k words), so that a service's first request does not wait for it."""
        if self.lexicon is not None:
            self.encode(["预热"])

    def soft_lexicon(self, entries: Iterable[str | tuple[str, str]]) -> Lexicon:
        """A small lexicon of a request's own entries, laid over the stored one by :meth:`encode` (``soft``)."""
        if self.lexicon is None:
            raise ValueError("this model was trained without lexicon features: it cannot use a dictionary softly "
                             "(use dictionary_mode 'hard', or retrain with --lexicon)")
        soft = Lexicon(self.lexicon.groups, {})
        soft.add(entries, self.normalize_all)
        return soft

    def lexicon_features(self, texts: Sequence[str], encoded: Encoded, soft: Lexicon | None = None) -> np.ndarray:
        """(N,) lexicon feature bits of ``encoded``'s units (the units of ``texts``)."""
        points = self._normalized_points(texts)
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
        first = np.cumsum(lengths) - lengths
        args = (points, first, encoded.counts, encoded.flat_offsets, self._units)
        bits = self.lexicon.features(*args)
        if soft is not None and soft.words:
            bits |= soft.features(*args)
        return bits

    def _array_encode(self, texts: Sequence[str]) -> Encoded:
        """:meth:`encode` by the array splitter, texts it cannot split by the tokenizer."""
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
        points = self._normalized_points(texts)
        normed = points.tobytes().decode("utf-32-le")  # all texts normalised, one after the other
        fast, slow = self._split_units(points, normed, lengths)
        if not len(slow):
            return fast
        ends = np.cumsum(lengths)
        slow_enc = self._tokenize([normed[ends[i] - lengths[i] : ends[i]] for i in slow.tolist()])
        # splice: every text's units come from the splitter's arrays or, for the slow texts, from the
        # tokenizer's, appended after them; one gather puts them in text order
        counts = fast.counts.copy()
        counts[slow] = slow_enc.counts
        source_first = np.cumsum(fast.counts) - fast.counts
        source_first[slow] = len(fast.flat_ids) + np.cumsum(slow_enc.counts) - slow_enc.counts
        flat = np.repeat(source_first - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        ids = np.concatenate([fast.flat_ids, slow_enc.flat_ids])[flat]
        offsets = np.take(np.concatenate([fast.flat_offsets, slow_enc.flat_offsets]), flat, axis=0)  # (4x a[flat])
        return Encoded.from_flat(offsets, ids, counts)

    def _tokenize(self, normed: Sequence[str]) -> Encoded:
        """Already normalised texts through the ``tokenizers`` pipeline."""
        encodings = self.tokenizer.encode_batch(normed, add_special_tokens=False)
        ids = [e.ids for e in encodings]
        counts = np.fromiter(map(len, ids), np.int64, len(ids))
        total = int(counts.sum())
        flat_ids = np.fromiter(chain.from_iterable(ids), np.int64, total)
        flat_offsets = np.fromiter(
            chain.from_iterable(chain.from_iterable(e.offsets for e in encodings)), np.int64, 2 * total
        ).reshape(-1, 2)
        return Encoded.from_flat(flat_offsets, flat_ids, counts)

    def _split_units(
        self, points: np.ndarray, normed: str, lengths: np.ndarray
    ) -> tuple[Encoded, np.ndarray]:
        """The array-based splitter over the normalised code points of all texts (concatenated; ``normed``
        is the same as a string).

        Returns the units of every text, and the indices of the texts it cannot split (those
        holding other characters, or a "." between digits: a decimal part), left for the tokenizer.
        """
        classes, char_ids = self._unit_tables()
        cls = classes[points]
        text_start = np.zeros(len(points) + 1, dtype=bool)
        text_start[np.cumsum(lengths)[:-1]] = True
        text_start[0] = True
        owner = np.repeat(np.arange(len(lengths)), lengths)  # text of each position
        bad = cls == _OTHER
        if self.config.units == "latin_runs":  # a "." between two digits belongs to a number
            digit = (points >= 0x30) & (points <= 0x39)
            dot = np.flatnonzero((cls[1:-1] == _DOT) & digit[:-2] & digit[2:]) + 1
            bad[dot] = True
            if self.config.mark_runs:  # a repeated mark (…… ——) is one unit: the tokenizer's pattern makes it
                again = np.flatnonzero((points[1:] == points[:-1]) & ~text_start[1:-1]) + 1
                bad[again[np.isin(points[again], _MARK_POINTS)]] = True
        slow = np.unique(owner[bad])
        run = cls == _RUN
        run_start = run & (text_start[:-1] | ~np.concatenate([[False], run[:-1]]))
        run_end = run & (text_start[1:] | ~np.concatenate([run[1:], [False]]))
        single = (cls == _SINGLE) | (cls == _DOT)
        starts = np.flatnonzero(single | run_start)
        ends = np.flatnonzero(single | run_end) + 1
        unit_ids = char_ids[points[starts]].astype(np.int64)
        longer = np.flatnonzero(ends - starts > 1)
        if len(longer):  # runs of several letters/digits: looked up by their text
            vocab = self._vocab
            unit_ids[longer] = [vocab.get(normed[a:z], UNK_ID) for a, z in
                                zip(starts[longer].tolist(), ends[longer].tolist())]
        unit_owner = owner[starts]
        first = np.cumsum(lengths) - lengths
        text_first = first[unit_owner]
        flat_offsets = np.empty((len(starts), 2), dtype=np.int64)  # filled column by column: 4x np.stack's speed
        np.subtract(starts, text_first, out=flat_offsets[:, 0])
        np.subtract(ends, text_first, out=flat_offsets[:, 1])
        counts = np.bincount(unit_owner, minlength=len(lengths))
        return Encoded.from_flat(flat_offsets, unit_ids, counts), slow

    def _unit_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit classes, and the id of every one-character unit by code point (for this vocabulary)."""
        if getattr(self, "_tables_for", None) is not self.tokenizer:
            self._vocab = self.tokenizer.get_vocab()
            char_ids = np.full(0x110000, UNK_ID, dtype=np.int32)
            singles = [(ord(tok), i) for tok, i in self._vocab.items() if len(tok) == 1]
            if singles:
                where, ids = zip(*singles)
                char_ids[list(where)] = ids
            self._unit_tables_cache = (_unit_classes(self.config.units), char_ids)
            self._tables_for = self.tokenizer
        return self._unit_tables_cache

    # ---- units -> tensors ---------------------------------------------
    def batch(self, encoded: Encoded, order: Sequence[int] | None = None) -> Batch:
        """Pad (a subset, in ``order``, of) encoded texts into a :class:`Batch`."""
        lexicon = encoded.flat_lexicon
        if order is None:
            return self.pad(encoded.flat_ids, encoded.counts, lexicon)
        pick, lengths = encoded.rows(order)
        return self.pad(encoded.flat_ids[pick], lengths, None if lexicon is None else lexicon[pick])

    def pad(self, flat: np.ndarray, lengths: np.ndarray, lexicon: np.ndarray | None = None) -> Batch:
        """Rows of unit ids given one after the other (``lengths[k]`` ids for row k), and their lexicon feature
        bits if any -> a padded :class:`Batch`."""
        width = max(int(lengths.max()) if len(lengths) else 0, 1)
        # each unit's place in the padded (B, width) array: one scatter puts all rows' ids there
        firsts = np.cumsum(lengths) - lengths
        place = np.arange(len(flat)) + np.repeat(np.arange(len(lengths)) * width - firsts, lengths)
        unit_ids = np.zeros((len(lengths), width), dtype=np.int64)
        unit_ids.reshape(-1)[place] = flat
        bigrams = None
        if self.config.bigrams:
            bigram_ids = np.zeros((len(lengths), width, 2), dtype=np.int64)
            bigram_ids.reshape(-1, 2)[place] = self._bigram_ids_of(flat, lengths)
            bigrams = torch.from_numpy(bigram_ids)
        lex = None
        if lexicon is not None:
            padded = np.zeros((len(lengths), width), dtype=np.int64)
            padded.reshape(-1)[place] = lexicon
            lex = torch.from_numpy(padded)
        return Batch(torch.from_numpy(unit_ids), bigrams, torch.from_numpy(lengths.astype(np.int64)), lex)

    def _bigram_ids_of(self, flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Unit ids of texts one after the other -> (n, 2) ids of each unit's left (prev, cur) and
        right (cur, next) bigram; the text's edges are the boundary unit."""
        ends = np.cumsum(lengths)
        first, last = (ends - lengths)[lengths > 0], ends[lengths > 0] - 1
        prev = np.empty_like(flat)
        prev[1:] = flat[:-1]
        prev[first] = BOUNDARY_ID
        nxt = np.empty_like(flat)
        nxt[:-1] = flat[1:]
        nxt[last] = BOUNDARY_ID
        return np.stack([self._bigram_index.lookup(prev * self._vsize + flat),
                         self._bigram_index.lookup(flat * self._vsize + nxt)], axis=1)

    # ---- spans <-> unit spans -----------------------------------------
    @staticmethod
    def align(offsets: np.ndarray, spans: Iterable[Span]) -> tuple[list[tuple[int, int, str]], list[Span]]:
        """Character spans -> unit spans ``(first, last + 1, label)``; spans not on unit boundaries are returned apart."""
        starts = {int(s): i for i, s in enumerate(offsets[:, 0])}
        ends = {int(e): i for i, e in enumerate(offsets[:, 1])}
        aligned, misaligned = [], []
        for span in spans:
            i, j = starts.get(span.start), ends.get(span.end)
            if i is None or j is None or j < i:
                misaligned.append(span)
            else:
                aligned.append((i, j + 1, span.label))
        return aligned, misaligned

    @staticmethod
    def on_boundaries(offsets: np.ndarray, spans: Sequence[Span]) -> tuple[Span, ...]:
        """The spans that fall on unit boundaries; the others (a dictionary word matching half a Latin run,
        say) are left out."""
        if not spans:
            return ()
        misaligned = set(Codec.align(offsets, spans)[1])
        return tuple(span for span in spans if span not in misaligned)

    @staticmethod
    def to_spans(offsets: np.ndarray, unit_spans: Iterable[tuple[int, int, str]]) -> list[Span]:
        """Unit spans back to character spans on the original text."""
        return [Span(int(offsets[i, 0]), int(offsets[j - 1, 1]), label) for i, j, label in unit_spans]

    # ---- persistence ---------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self.tokenizer.save(str(directory / "tokenizer.json"))
        meta = {"config": self.config.model_dump(), "charmap": self.charmap, "bigrams": self.bigram_list}
        text = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))  # compact: bigram lists are long
        (directory / "codec.json").write_text(text, encoding="utf-8")
        if self.lexicon is not None:
            lex = json.dumps(self.lexicon.to_json(), ensure_ascii=False, separators=(",", ":"))
            (directory / LEXICON_FILE).write_text(lex, encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> "Codec":
        directory = Path(directory)
        meta = json.loads((directory / "codec.json").read_text(encoding="utf-8"))
        # saved before mark_runs existed: their tokenizer splits repeated marks, and so must the array splitter
        config = CodecConfig.model_validate({"mark_runs": False, **meta["config"]})
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        charmap = meta["charmap"]
        if not all(isinstance(k, str) and isinstance(v, str) and len(k) == len(v) == 1 for k, v in charmap.items()):
            raise ValueError("codec.json: charmap must map single characters to single characters")
        lexicon = None
        if (directory / LEXICON_FILE).exists():
            lexicon = Lexicon.from_json(json.loads((directory / LEXICON_FILE).read_text(encoding="utf-8")))
        return cls(config, tokenizer, charmap, [tuple(b) for b in meta["bigrams"]], lexicon)
