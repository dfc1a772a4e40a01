"""Property tests on the whole tagging pipeline (codec -> tagger -> spans) with hostile text.

For arbitrary strings (lone surrogates, NUL, control characters, bidi marks, ZWJ and emoji
sequences, combining marks, ideographic space, U+FFFD, CJK, Latin, digits...):

* ``Pipeline.predict`` never raises;
* every span is non-empty and inside the text (``text[start:end]`` is what it claims);
* segmentation spans cover every non-whitespace character exactly once, and no word
  starts or ends on whitespace;
* entity spans do not overlap and carry a label of the model;
* dictionary matches passed as ``forced`` come out whole (with their label when given);
* a text gets the same spans alone as in a batch.

Models: a tiny seg and a tiny ner model trained once per module, and an untrained BIO
tagger with random CRF scores on the seg model's codec (the BIO branch of the forced mask).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from seqtag.models.checkpoint import ModelMeta, build_tagger
from seqtag.models.codec import is_space
from seqtag.models.dictionary import Dictionary, DictionaryError
from seqtag.models.pipeline import Pipeline
from seqtag.models.schemes import TagScheme, tag_vocabulary
from seqtag.models.spans import Span
from seqtag.models.tagger import TaggerConfig
from seqtag.models.textsplit import split_text
from tests.fixtures import NOUNS, PERSONS, PLACES, train_tiny

# ---- strategies -----------------------------------------------------------------------

SPECIAL_CHARS = [
    "\x00", "\x01", "\x07", "\x08", "\x1b", "\x1c", "\x1f", "\x7f", "\x85", "\x9f",  # NUL and controls
    "\ud800", "\udbff", "\udc00", "\udfff",  # lone surrogates
    "\u200f", "\u200e", "\u202e", "\u202a", "\u2066", "\u061c",  # bidi marks and overrides
    "\u200d", "\u200c", "\u200b", "\u2060", "\ufeff",  # ZWJ, ZWNJ, zero-width space, word joiner, BOM
    "\u0301", "\u0308", "\u0327", "\u20e3", "\ufe0f", "\u3099",  # combining marks, variation selector
    "\u3000", "\xa0", "\u2028", "\u2029", "\u1680", "\u180e", "\u202f", " ", "\t", "\n", "\r", "\v", "\f",
    "\ufffd", "\uffff", "\U0010ffff", "\ue000",  # replacement char, noncharacters, private use
    "Ａ", "１", "！", "ﬁ", "İ", "ß", "Ⅻ", "㍿", "ｶ",  # NFKC / case mappings of every kind
    "。", "，", "！", "？", "…", "“", "”", "《", "》", ".", "-", "_", "@", "#",
]

SNIPPETS = [
    "\U0001F468\u200d\U0001F469\u200d\U0001F467",  # family (ZWJ sequence)
    "\U0001F44D\U0001F3FD",  # skin tone modifier
    "1\ufe0f\u20e3",  # keycap
    "\U0001F1E8\U0001F1F3",  # flag (regional indicators)
    "e\u0301", "a\u0308\u0327", "\u0301\u0301",  # combining marks after a letter / alone
    "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627",  # Hebrew, Arabic (RTL)
    "\u202eabc\u202c", "\u200f北京\u200e",
    "iPhone15", "COVID-19", "3.5", "v1.2", "No.1", "2024", "ＩＰＨＯＮＥ１５",
    "我们", "喜欢", "图书馆", "北京", "张伟明", "华星公司", "在", "工作", "。",
    "\ud83d\ude00",  # a surrogate *pair* as two lone code points (not an emoji in a Python str)
    "  ", "\r\n", "\u3000\u3000",
]

chars = st.one_of(
    st.sampled_from(SPECIAL_CHARS),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK
    st.characters(min_codepoint=0x30, max_codepoint=0x7A),  # digits, Latin, some ASCII punctuation
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),  # any lone surrogate
    st.characters(),  # anything else in Unicode
)
pieces = st.one_of(chars, st.sampled_from(SNIPPETS))
texts = st.lists(pieces, max_size=40).map("".join)
text_lists = st.lists(texts, min_size=1, max_size=6)

PROPERTY_SETTINGS = settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


# ---- models -----------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory, one_thread) -> dict[str, Pipeline]:
    seg = Pipeline.load(train_tiny(tmp_path_factory.mktemp("seg"), "seg", epochs=1) / "best", "cpu")
    ner = Pipeline.load(train_tiny(tmp_path_factory.mktemp("ner"), "ner", epochs=2) / "best", "cpu")
    # An untrained BIO tagger with random CRF scores, on the seg model's codec.
    torch.manual_seed(0)
    tags = tag_vocabulary(TagScheme.BIO, ["LOC", "PER"], outside=True)
    config = TaggerConfig(unit_dim=8, bigram_dim=4, hidden=8, layers=1)
    tagger = build_tagger(config, seg.codec, TagScheme.BIO, tags)
    with torch.no_grad():
        for p in tagger.crf.parameters():
            p.normal_(0.0, 1.0)
        tagger.project.weight.mul_(5.0)
    bio = Pipeline(tagger.eval(), seg.codec, ModelMeta("ner", TagScheme.BIO, tags), torch.device("cpu"))
    return {"seg": seg, "ner": ner, "bio": bio}


# ---- checks -------------------------------------------------------------------------------


def check_spans(pipe: Pipeline, text: str, spans: list[Span]) -> None:
    for s in spans:
        assert isinstance(s.start, int) and isinstance(s.end, int), s
        assert 0 <= s.start < s.end <= len(text), (text, s)
        assert text[s.start:s.end], (text, s)
        # a span never starts or ends on whitespace (whitespace is never a unit)
        assert not is_space(text[s.start]) and not is_space(text[s.end - 1]), (text, s)
        if s.score is not None:
            assert 0.0 <= s.score <= 1.0 + 1e-4, s
    ordered = sorted(spans)
    for a, b in zip(ordered, ordered[1:]):
        assert a.end <= b.start, ("overlapping spans", text, a, b)
    if pipe.task == "seg":
        covered = [0] * len(text)
        for s in spans:
            assert s.label == ""
            for k in range(s.start, s.end):
                covered[k] += 1
        missed = [(k, ch) for k, (ch, c) in enumerate(zip(text, covered)) if not is_space(ch) and c != 1]
        assert not missed, ("non-whitespace characters not covered exactly once", text, missed)
    else:
        labels = set(pipe.meta.labels)
        assert all(s.label in labels for s in spans), (spans, labels)


def aligned_matches(pipe: Pipeline, dictionary: Dictionary, text: str) -> list[Span]:
    """The dictionary's matches in ``text`` that fall on unit boundaries (what the service forces)."""
    matches = dictionary.find(text)
    if not matches:
        return []
    return list(pipe.codec.on_boundaries(pipe.codec.encode([text]).offsets[0], matches))


# ---- properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["seg", "ner", "bio"])
@PROPERTY_SETTINGS
@given(batch=text_lists, scores=st.booleans())
def test_predict_never_raises_and_spans_are_valid(pipelines, name, batch, scores):
    pipe = pipelines[name]
    results = pipe.predict(batch, scores=scores)
    assert len(results) == len(batch)
    for text, spans in zip(batch, results):
        check_spans(pipe, text, spans)
        if scores:
            assert all(s.score is not None for s in spans)
        else:
            assert all(s.score is None for s in spans)


@pytest.mark.parametrize("name", ["seg", "ner"])
@PROPERTY_SETTINGS
@given(batch=text_lists, window=st.integers(1, 12), scores=st.booleans())
def test_a_window_tags_each_piece_as_a_text(pipelines, name, batch, window, scores):
    """predict(window=N): the texts cut by split_text (every sentence end, then N characters at most), each
    piece tagged as a text of its own, spans shifted back onto the whole text."""
    pipe = pipelines[name]
    results = pipe.predict(batch, scores=scores, window=window)
    assert len(results) == len(batch)
    for text, spans in zip(batch, results):
        check_spans(pipe, text, spans)
        cuts = split_text(text, window)
        alone = pipe.predict([text[a:b] for a, b in cuts], scores=scores) if cuts else []
        expected = [Span(sp.start + a, sp.end + a, sp.label, sp.score) for (a, _), row in zip(cuts, alone) for sp in row]
        assert spans == expected
        assert [sp.score for sp in spans] == pytest.approx([sp.score for sp in expected], abs=1e-5)


def test_window_errors(pipelines):
    pipe = pipelines["ner"]
    with pytest.raises(ValueError, match="at least 1"):
        pipe.predict(["我们"], window=0)
    text = "张三在北京。李四在上海。"
    assert Span(6, 8, "PER") in pipe.predict([text], window=256, forced=[[Span(6, 8, "PER")]])[0]  # in one piece
    with pytest.raises(ValueError, match="crosses a sentence end"):
        pipe.predict([text], window=256, forced=[[Span(4, 8, "")]])


@pytest.mark.parametrize("name", ["seg", "ner"])
@PROPERTY_SETTINGS
@given(batch=text_lists)
def test_batching_does_not_change_answers(pipelines, name, batch):
    pipe = pipelines[name]
    together = pipe.predict(batch, max_batch=64)
    alone = [pipe.predict([t])[0] for t in batch]
    tight = pipe.predict(batch, max_batch=64, max_units=8)
    assert together == alone == tight


@st.composite
def text_and_entries(draw, labels: tuple[str, ...]):
    """A text and dictionary entries: slices of the text (so they match) and some other words."""
    text = draw(texts)
    entries: list = []
    for _ in range(draw(st.integers(0, 5))):
        if text and draw(st.booleans()):
            a = draw(st.integers(0, len(text) - 1))
            b = draw(st.integers(a + 1, min(len(text), a + 12)))
            word = text[a:b]
        else:
            word = draw(st.sampled_from(SNIPPETS + NOUNS + PERSONS + PLACES))
        label = draw(st.sampled_from(labels))
        entries.append((word, label) if label else word)
    return text, entries


def _dictionary(pipe: Pipeline, entries) -> Dictionary:
    dictionary = Dictionary(normalize=pipe.codec.normalize)
    for entry in entries:
        try:
            dictionary.add(entry)
        except DictionaryError:  # blank / edge whitespace / too long: the service rejects these
            pass
    return dictionary


def _forced_come_out_whole(pipe: Pipeline, text: str, entries) -> None:
    dictionary = _dictionary(pipe, entries)
    forced = aligned_matches(pipe, dictionary, text)
    event(f"forced spans: {min(len(forced), 3)}{'+' if len(forced) >= 3 else ''}")
    [spans] = pipe.predict([text], forced=[forced])
    check_spans(pipe, text, spans)
    assert pipe.predict([text], dictionary=dictionary) == [spans]  # the same spans by the dictionary itself
    by_bounds = {(s.start, s.end): s for s in spans}
    for f in forced:
        assert (f.start, f.end) in by_bounds, ("forced span not whole", text, f, spans)
        if f.label:
            assert by_bounds[f.start, f.end].label == f.label, (text, f, spans)


@PROPERTY_SETTINGS
@given(case=text_and_entries(labels=("",)))
def test_forced_words_come_out_whole_seg(pipelines, case):
    _forced_come_out_whole(pipelines["seg"], *case)


@PROPERTY_SETTINGS
@given(case=text_and_entries(labels=("", "PER", "LOC")))
def test_forced_entities_come_out_whole_ner(pipelines, case):
    _forced_come_out_whole(pipelines["ner"], *case)


@PROPERTY_SETTINGS
@given(case=text_and_entries(labels=("", "PER", "LOC")))
def test_forced_entities_come_out_whole_bio(pipelines, case):
    _forced_come_out_whole(pipelines["bio"], *case)


@PROPERTY_SETTINGS
@given(batch=st.lists(text_and_entries(labels=("", "PER")), min_size=1, max_size=5))
def test_forced_spans_in_a_batch_belong_to_their_own_text(pipelines, batch):
    """Several texts with different forced spans in one batch: each text's spans honour its own."""
    pipe = pipelines["ner"]
    texts_ = [t for t, _ in batch]
    forced = [aligned_matches(pipe, _dictionary(pipe, e), t) for t, e in batch]
    results = pipe.predict(texts_, forced=forced, max_batch=64)
    for text, spans, wanted in zip(texts_, results, forced):
        check_spans(pipe, text, spans)
        got = {(s.start, s.end) for s in spans}
        assert all((f.start, f.end) in got for f in wanted), (text, wanted, spans)
    assert results == [pipe.predict([t], forced=[f])[0] for t, f in zip(texts_, forced)]


# ---- a few fixed cases, readable when they fail ---------------------------------------------

FIXED = [
    "",
    "\x00",
    "a\ud800b",
    "\ud800",
    "\u3000\u3000",
    "\u200f\u202e北京\u200d",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467很好",
    "e\u0301\u0301\u0301",
    "\u0301",
    "\ufffd\ufffd",
    "\x1c\x1d\x1e\x1f",
    "我们喜欢图书馆。iPhone15 很贵，COVID-19 3.5万\r\n张伟明在北京工作。",
    "ＩＰＨＯＮＥ１５ ｶﾀｶﾅ ﬁ İ",
]


@pytest.mark.parametrize("name", ["seg", "ner", "bio"])
def test_fixed_hostile_texts(pipelines, name):
    pipe = pipelines[name]
    for text, spans in zip(FIXED, pipe.predict(FIXED, scores=True)):
        check_spans(pipe, text, spans)
    assert pipe.predict([""]) == [[]]


def test_forced_entry_with_a_lone_surrogate(pipelines):
    """A lone surrogate normalises to U+FFFD on both sides, so the entry still matches."""
    pipe = pipelines["seg"]
    text = "我\ud800们喜欢"
    dictionary = _dictionary(pipe, ["\ud800们喜"])
    forced = aligned_matches(pipe, dictionary, text)
    assert forced == [Span(1, 4)]
    [spans] = pipe.predict([text], forced=[forced])
    assert Span(1, 4) in spans
    check_spans(pipe, text, spans)


def test_is_space_matches_the_codec(pipelines):
    """The coverage property relies on is_space: a character is a unit exactly when it is not space."""
    codec = pipelines["seg"].codec
    probe = "".join(SPECIAL_CHARS) + "".join(SNIPPETS)
    units = {int(a) for a, _ in codec.encode([probe]).offsets[0]} | {
        k for a, b in codec.encode([probe]).offsets[0] for k in range(int(a), int(b))
    }
    for k, ch in enumerate(probe):
        assert (k in units) == (not is_space(ch)), (k, hex(ord(ch)))


@pytest.mark.parametrize("name", ["seg", "ner"])
def test_empty_and_whitespace_only(pipelines, name):
    pipe = pipelines[name]
    assert pipe.predict([]) == []
    assert pipe.predict(["", " ", "\u3000\t\n\xa0\u2028\x85"], scores=True) == [[], [], []]
    # forced spans on an empty text: nothing to force
    assert pipe.predict([""], forced=[[]]) == [[]]
