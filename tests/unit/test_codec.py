"""The codec: unit rules, normalisation, vocabularies, bigrams, alignment, persistence.

The property tests feed arbitrary (often hostile) strings through ``encode`` and
check the invariants every other part of seqtag relies on: offsets are ordered,
non-overlapping code-point offsets into the *original* text, every visible
character is in exactly one unit, and whitespace is never part of one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqtag.models.codec import (
    BOUNDARY,
    PAD_ID,
    UNK_ID,
    Codec,
    CodecConfig,
    Encoded,
    is_space,
)
from seqtag.models.spans import Span

# --------------------------------------------------------------------------- helpers

CORPUS = [
    "我爱北京天安门",
    "iPhone15 发布于 2024 年，售价 3.5 万元 v1.2",
    "COVID-19 疫情",
    "你好，世界！😀👍🏽",
    "abc123 ABC123",
]


def units_of(codec: Codec, text: str) -> list[str]:
    """The original-text substrings of ``text``'s units."""
    offsets = codec.encode([text]).offsets[0]
    return [text[a:b] for a, b in offsets]


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.build(CORPUS, CodecConfig())


@pytest.fixture(scope="module")
def chars_codec() -> Codec:
    return Codec.build(CORPUS, CodecConfig(units="chars"))


# --------------------------------------------------------------------------- unit rules

UNIT_RULES = [
    ("iPhone15", ["iPhone15"]),
    ("COVID", ["COVID"]),
    ("2024", ["2024"]),
    ("3.5", ["3.5"]),
    ("v1.2", ["v1.2"]),
    ("1.2.3", ["1.2.3"]),
    ("COVID-19", ["COVID", "-", "19"]),
    ("买iPhone15手机", ["买", "iPhone15", "手", "机"]),
    ("2024年3月", ["2024", "年", "3", "月"]),
    ("我爱北京", ["我", "爱", "北", "京"]),
    ("你好，世界！", ["你", "好", "，", "世", "界", "！"]),
    ("(a)", ["(", "a", ")"]),
    ("3.", ["3", "."]),  # a trailing dot is not a decimal part
    (".5", [".", "5"]),
    ("a.5", ["a", ".", "5"]),  # a decimal part only follows a digit
    ("No.1", ["No", ".", "1"]),
    ("e\u0301te\u0301", ["e\u0301te\u0301"]),  # combining marks after a letter stay in the run
    ("café", ["café"]),
    ("😀👍", ["😀", "👍"]),  # each emoji code point is its own unit
    ("👍🏽", ["👍", "🏽"]),
    ("👨\u200d👩", ["👨", "\u200d", "👩"]),
    ("中\u200b文", ["中", "\u200b", "文"]),  # zero-width space is not White_Space
    ("a b", ["a", "b"]),
    # a repeated ellipsis, dash or rule character is one mark
    ("他说……好", ["他", "说", "……", "好"]),
    ("好——走", ["好", "——", "走"]),
    ("…—", ["…", "—"]),
    ("...", ["..."]),
    ("3...5", ["3", "...", "5"]),
    ("a--b__c", ["a", "--", "b", "__", "c"]),
    ("－－", ["－－"]),
    ("。。！！", ["。", "。", "！", "！"]),
    ("我\u3000爱\xa0北\t京\n。\r\n", ["我", "爱", "北", "京", "。"]),
    (" \u3000\xa0\t\n\r\u2028\u2029\u202f\x85\v\f", []),
    ("", []),
]


@pytest.mark.parametrize("text, expected", UNIT_RULES)
def test_unit_rules(codec, text, expected):
    assert units_of(codec, text) == expected


@pytest.mark.parametrize("text", ["iPhone15 我爱 3.5\u3000😀", "ＡＢＣ１２３，好", " \t a"])
def test_chars_mode_one_unit_per_visible_character(chars_codec, text):
    assert units_of(chars_codec, text) == [ch for ch in text if not is_space(ch)]


def test_fullwidth_normalised_offsets_unchanged(codec):
    enc = codec.encode(["ＡＢＣ１２３", "abc123", "ABC123"])
    assert enc.offsets[0].tolist() == [[0, 6]]
    assert enc.ids[0].tolist() == enc.ids[1].tolist() == enc.ids[2].tolist()
    assert enc.ids[0][0] != UNK_ID
    # Full-width punctuation and space: NFKC'd, but still one unit / still no unit.
    text = "ＡＢＣ！\u3000１"
    assert units_of(codec, text) == ["ＡＢＣ", "！", "１"]


def test_normalize_is_one_to_one(codec):
    text = "ＡＢＣ１２３ Ⅻ ﬁ İ ß \ud800 說"
    assert len(codec.normalize(text)) == len(text)
    assert codec.normalize("\ud800") == "\ufffd"


def test_lowercase_option():
    lower = Codec.build(["iPhone abc123"], CodecConfig(lowercase=True))
    ids = lower.encode(["IPHONE", "iphone", "iPhone", "ＡＢＣ１２３"]).ids
    assert ids[0].tolist() == ids[1].tolist() == ids[2].tolist() != [UNK_ID]
    assert ids[3].tolist() == lower.encode(["abc123"]).ids[0].tolist() != [UNK_ID]

    cased = Codec.build(["iPhone ABC123"], CodecConfig(lowercase=False))
    ids = cased.encode(["iPhone", "iphone", "ＡＢＣ１２３", "abc123"]).ids
    assert ids[0].tolist() != [UNK_ID]
    assert ids[1].tolist() == [UNK_ID]
    assert ids[2].tolist() == cased.encode(["ABC123"]).ids[0].tolist() != [UNK_ID]
    assert ids[3].tolist() == [UNK_ID]


def test_t2s_option():
    codec = Codec.build(["说话"], CodecConfig(t2s=True))
    enc = codec.encode(["說話", "说话"])
    assert enc.ids[0].tolist() == enc.ids[1].tolist()
    assert UNK_ID not in enc.ids[0].tolist()
    assert enc.offsets[0].tolist() == enc.offsets[1].tolist() == [[0, 1], [1, 2]]

    plain = Codec.build(["说话"], CodecConfig(t2s=False, t2s_unseen=False))
    assert plain.encode(["說話"]).ids[0].tolist() == [UNK_ID, UNK_ID]


def test_unseen_traditional_characters_look_up_as_simplified():
    """t2s_unseen (default): a traditional character the vocabulary lacks takes its simplified form's unit,
    when the vocabulary has that; offsets stay on the original text, and known characters keep their own."""
    codec = Codec.build(["说话", "台湾", "後来"], CodecConfig())
    vocab = codec.tokenizer.get_vocab()
    assert "後" in vocab and "后" not in vocab and "說" not in vocab
    enc = codec.encode(["說話", "臺灣", "後來", "后", "说话"])
    ids = [row.tolist() for row in enc.ids]
    assert ids[0] == ids[4] == [vocab["说"], vocab["话"]]
    assert ids[1] == [vocab["台"], vocab["湾"]]
    assert ids[2] == [vocab["後"], vocab["来"]]  # 後 is a unit of its own: it keeps it
    assert ids[3] == [UNK_ID]  # nothing maps simplified to traditional
    assert [o.tolist() for o in enc.offsets[:2]] == [[[0, 1], [1, 2]]] * 2
    assert codec.normalize("說話後") == "说话後"  # dictionaries match the same way
    bigrams = codec.batch(codec.encode(["說話", "说话"])).bigram_ids
    assert torch.equal(bigrams[0], bigrams[1])

    off = Codec.build(["说话"], CodecConfig(t2s_unseen=False))
    assert off.encode(["說話"]).ids[0].tolist() == [UNK_ID, UNK_ID]


def test_extend_counts_traditional_characters_as_their_own_units():
    """New text is counted as the charmap alone normalises it (fine-tuning on traditional text gives its
    characters units of their own); once a character has one, it no longer falls back."""
    codec = Codec.build(["说话"], CodecConfig())
    assert codec.encode(["說"]).ids[0].tolist() == codec.encode(["说"]).ids[0].tolist()
    added, _ = codec.extend(["說明"])
    assert added == 2 and {"說", "明"} <= set(codec.tokenizer.get_vocab())
    assert codec.encode(["說"]).ids[0].tolist() == [codec.tokenizer.get_vocab()["說"]]
    assert codec.encode(["話"]).ids[0].tolist() == codec.encode(["话"]).ids[0].tolist()


def test_unknown_units_get_unk(codec):
    enc = codec.encode(["我爱火星 zzz"])
    ids = enc.ids[0].tolist()
    assert ids[:2] != [UNK_ID, UNK_ID] and UNK_ID not in ids[:2]
    assert ids[2:] == [UNK_ID, UNK_ID, UNK_ID]


# --------------------------------------------------------------------------- bigrams


@pytest.fixture(scope="module")
def bigram_codec() -> Codec:
    # Every bigram of 我爱北京 is seen twice (kept); 爱你 / 你[BOS] only once (cut by min_freq 2).
    return Codec.build(["我爱北京", "我爱北京", "我爱你"], CodecConfig(bigram_min_freq=2))


def test_bigram_vocabulary_respects_min_freq(bigram_codec):
    expected = {(BOUNDARY, "我"), ("我", "爱"), ("爱", "北"), ("北", "京"), ("京", BOUNDARY)}
    assert set(bigram_codec.bigram_list) == expected
    assert bigram_codec.num_bigrams == len(expected) + 2


def test_bigram_ids_hand_example(bigram_codec):
    c = bigram_codec
    bid = lambda a, b: c.bigram_list.index((a, b)) + 2  # noqa: E731  (0 pad, 1 unk)
    enc = c.encode(["我爱北京", "北京", "我爱", "你爱", ""])
    batch = c.batch(enc)
    assert batch.lengths.tolist() == [4, 2, 2, 2, 0]
    assert batch.unit_ids.shape == (5, 4) and batch.bigram_ids.shape == (5, 4, 2)
    assert batch.unit_ids.dtype == batch.bigram_ids.dtype == torch.long
    B = BOUNDARY
    expected = [
        [(bid(B, "我"), bid("我", "爱")), (bid("我", "爱"), bid("爱", "北")),
         (bid("爱", "北"), bid("北", "京")), (bid("北", "京"), bid("京", B))],
        # 北 at the start: (BOS, 北) was never seen -> UNK; 京 at the end -> (京, BOS) known.
        [(UNK_ID, bid("北", "京")), (bid("北", "京"), bid("京", B)), (0, 0), (0, 0)],
        # 爱 at the end: (爱, BOS) never seen -> UNK.
        [(bid(B, "我"), bid("我", "爱")), (bid("我", "爱"), UNK_ID), (0, 0), (0, 0)],
        # 你 is a known unit but its bigrams were cut -> UNK.
        [(UNK_ID, UNK_ID), (UNK_ID, UNK_ID), (0, 0), (0, 0)],
        [(0, 0)] * 4,
    ]
    assert batch.bigram_ids.tolist() == [[list(p) for p in row] for row in expected]
    # Unit ids are padded with PAD.
    assert batch.unit_ids[1, 2:].tolist() == [PAD_ID, PAD_ID]
    assert batch.unit_ids[4].tolist() == [PAD_ID] * 4


def test_batch_order_selects_rows(bigram_codec):
    enc = bigram_codec.encode(["我爱北京", "北京", "我爱"])
    full = bigram_codec.batch(enc)
    sub = bigram_codec.batch(enc, [2, 0])
    assert sub.lengths.tolist() == [2, 4]
    assert torch.equal(sub.unit_ids[1], full.unit_ids[0])
    assert torch.equal(sub.bigram_ids[1], full.bigram_ids[0])
    # A row's bigrams do not depend on the batch width.
    alone = bigram_codec.batch(enc, [2])
    assert torch.equal(alone.bigram_ids[0], sub.bigram_ids[0, :2])
    assert bigram_codec.batch(enc, []).unit_ids.shape == (0, 1)


def test_encoded_flat_arrays_and_per_text_views_agree(bigram_codec):
    texts = ["我爱北京", "", "北京 3.5 万", "我爱"]  # "3.5": the tokenizer's text, spliced among the others
    enc = bigram_codec.encode(texts)
    assert enc.lengths == [len(i) for i in enc.ids] == [4, 0, 4, 2] and len(enc) == 4
    assert enc.flat_ids.tolist() == [u for ids in enc.ids for u in ids.tolist()]
    assert enc.flat_offsets.tolist() == [o for offs in enc.offsets for o in offs.tolist()]
    rebuilt = Encoded(enc.offsets, enc.ids)  # from per-text lists: the flat arrays are made on demand
    assert rebuilt.flat_ids.tolist() == enc.flat_ids.tolist()
    assert rebuilt.flat_offsets.tolist() == enc.flat_offsets.tolist()
    for order in (None, [3, 0, 2], [1], []):
        a, b = bigram_codec.batch(enc, order), bigram_codec.batch(rebuilt, order)
        assert torch.equal(a.unit_ids, b.unit_ids) and torch.equal(a.bigram_ids, b.bigram_ids)
        assert torch.equal(a.lengths, b.lengths)
    pick, counts = enc.rows([2, 1, 0])
    assert counts.tolist() == [4, 0, 4] and enc.flat_offsets[pick].tolist() == enc.offsets[2].tolist() + \
        enc.offsets[0].tolist()
    with pytest.raises(ValueError, match="do not agree"):
        Encoded.from_flat(np.zeros((3, 2), np.int64), np.zeros(3, np.int64), np.asarray([1, 1]))


def test_no_bigrams_option():
    codec = Codec.build(["我爱北京"], CodecConfig(bigrams=False))
    assert codec.batch(codec.encode(["我爱"])).bigram_ids is None


# --------------------------------------------------------------------------- extend / save / load


def test_extend_keeps_old_ids_and_adds_new():
    codec = Codec.build(["我爱北京", "我爱北京"], CodecConfig())
    old_texts = ["我爱北京", "北京我爱"]
    old_enc = codec.encode(old_texts)
    old_batch = codec.batch(old_enc)
    old_units, old_bigrams = codec.num_units, list(codec.bigram_list)

    new_units, new_bigrams = codec.extend(["上海 iPhone15 我", "上海 iPhone15 我"])
    assert new_units == 3  # 上, 海, iphone15
    assert new_bigrams > 0
    assert codec.num_units == old_units + 3
    assert codec.bigram_list[: len(old_bigrams)] == old_bigrams

    enc = codec.encode(old_texts)
    assert [i.tolist() for i in enc.ids] == [i.tolist() for i in old_enc.ids]
    assert torch.equal(codec.batch(enc).bigram_ids, old_batch.bigram_ids)
    fresh = codec.encode(["上海iPhone15"]).ids[0].tolist()
    assert UNK_ID not in fresh and all(i >= old_units for i in fresh)
    # A newly added bigram gets a new id, past the old ones.
    b = codec.batch(codec.encode(["上海"])).bigram_ids[0, 0, 1].item()  # (上, 海)
    assert b >= len(old_bigrams) + 2
    # Extending with nothing new changes nothing.
    assert codec.extend(["我爱北京"]) == (0, 0)


def test_max_bigrams_caps_vocabulary():
    codec = Codec.build(["我爱北京"] * 3, CodecConfig(max_bigrams=2))
    assert len(codec.bigram_list) == 2
    codec.extend(["天安门"] * 3)
    assert len(codec.bigram_list) == 2


HOSTILE = [
    "iPhone15 ＡＢＣ１２３ 說話 3.5\u3000😀👨\u200d👩\u200d👧 \ud800\x00\u202e",
    "",
    " \t\n",
    "COVID-19疫情 v1.2 café",
]


def test_repeated_marks_go_to_the_tokenizer_and_agree(codec):
    texts = ["他说" * 40 + "……", "好——走" * 30, "平常的文字" * 20]
    points = codec._normalized_points(texts)
    normed = "".join(codec.normalize_all(texts))
    assert codec._split_units(points, normed, np.asarray([len(t) for t in texts]))[1].tolist() == [0, 1]
    _same_units(codec, texts)


def test_checkpoints_saved_before_mark_runs_keep_splitting_marks(tmp_path):
    old = Codec.build(CORPUS, CodecConfig(mark_runs=False))
    old.save(tmp_path)
    meta = json.loads((tmp_path / "codec.json").read_text(encoding="utf-8"))
    del meta["config"]["mark_runs"]  # as an older seqtag wrote it
    (tmp_path / "codec.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    loaded = Codec.load(tmp_path)
    assert loaded.config.mark_runs is False
    texts = ["他说……好" * 30, "他说……好"]
    for enc in (loaded.encode(texts), loaded._tokenize(loaded.normalize_all(texts))):
        assert enc.offsets[1].tolist() == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]
    _same_units(loaded, texts)
    assert CodecConfig().mark_runs is True


@pytest.mark.parametrize("config", [CodecConfig(), CodecConfig(units="chars", lowercase=False, t2s=True),
                                    CodecConfig(t2s_unseen=False), CodecConfig(mark_runs=False)])
def test_save_load_round_trip(tmp_path, config):
    codec = Codec.build(CORPUS + ["说话"] * 2, config)
    codec.save(tmp_path)
    loaded = Codec.load(tmp_path)
    assert loaded.config == codec.config
    assert loaded.num_units == codec.num_units and loaded.num_bigrams == codec.num_bigrams
    texts = CORPUS + HOSTILE + ["說話", "臺灣說話"]
    a, b = codec.encode(texts), loaded.encode(texts)
    for x, y in zip(a.offsets + a.ids, b.offsets + b.ids):
        assert np.array_equal(x, y)
    ba, bb = codec.batch(a), loaded.batch(b)
    assert torch.equal(ba.unit_ids, bb.unit_ids)
    assert torch.equal(ba.bigram_ids, bb.bigram_ids)
    assert torch.equal(ba.lengths, bb.lengths)


def test_load_rejects_non_1to1_charmap(tmp_path):
    import json

    codec = Codec.build(["我"], CodecConfig())
    codec.save(tmp_path)
    meta = json.loads((tmp_path / "codec.json").read_text(encoding="utf-8"))
    meta["charmap"]["ﬁ"] = "fi"
    (tmp_path / "codec.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError):
        Codec.load(tmp_path)


# --------------------------------------------------------------------------- align / to_spans


def test_align_and_to_spans(codec):
    text = "买iPhone15手机 COVID"
    offsets = codec.encode([text]).offsets[0]
    assert [text[a:b] for a, b in offsets] == ["买", "iPhone15", "手", "机", "COVID"]
    good = [Span(0, 1, "X"), Span(1, 9, "PRODUCT"), Span(9, 11), Span(1, 17, "LONG")]
    bad = [
        Span(1, 7, "PRODUCT"),  # ends inside iPhone15
        Span(3, 9, "PRODUCT"),  # starts inside iPhone15
        Span(11, 12),  # covers only the space
        Span(10, 12),  # ends on the space, not at a unit end
        Span(5, 5),  # empty, inside a unit
    ]
    aligned, misaligned = Codec.align(offsets, good + bad)
    assert aligned == [(0, 1, "X"), (1, 2, "PRODUCT"), (2, 4, ""), (1, 5, "LONG")]
    assert misaligned == bad  # reported, neither dropped nor shifted
    back = Codec.to_spans(offsets, aligned)
    assert back == good
    assert [s.text_of(text) for s in back] == ["买", "iPhone15", "手机", "iPhone15手机 COVID"]


def test_to_spans_on_original_text_after_normalisation(codec):
    text = "\u3000ＡＢＣ１２３ 說話！"
    offsets = codec.encode([text]).offsets[0]
    spans = Codec.to_spans(offsets, [(0, 1, "A"), (1, 3, "B"), (3, 4, "")])
    assert [s.text_of(text) for s in spans] == ["ＡＢＣ１２３", "說話", "！"]


# --------------------------------------------------------------------------- properties

SPECIAL = [
    "😀", "👍", "🏽", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "1️⃣",
    "\u200b", "\u200d", "\u200e", "\u200f", "\u202e", "\u3000", "\ufffd", "\x00",
    "\u0301", "\u0308", "\u20e3", "\ufe0f",
    "中", "文", "說", "話", "𠀀", "ａ", "Ａ", "１", "ｆ", "ﬁ", "Ⅻ", "İ", "ß",
    "a", "Z", "é", "0", "9", ".", ".", " ", "\t", "\n", "\r\n", "\xa0", "\x85", "\u2028", "\x1c",
]
PIECE = st.one_of(
    st.characters(categories=["Cs", "Cc", "Mn", "Zs", "So"]),
    st.characters(),
    st.sampled_from(SPECIAL),
    st.sampled_from("abcXYZ0123456789.中文"),
)
TEXTS = st.lists(PIECE, max_size=40).map("".join)


def check_invariants(codec: Codec, text: str, offsets: np.ndarray, ids: np.ndarray) -> None:
    n = len(text)
    assert offsets.shape == (len(ids), 2)
    assert offsets.dtype == ids.dtype == np.int64
    covered = [0] * n
    prev_end = 0
    for a, b in offsets.tolist():
        assert prev_end <= a < b <= n  # ordered, non-overlapping, non-empty, in bounds
        prev_end = b
        assert not is_space(text[a]) and not is_space(text[b - 1])
        assert not any(is_space(ch) for ch in text[a:b])
        for k in range(a, b):
            covered[k] += 1
        if codec.config.units == "chars":
            assert b - a == 1
    for ch, c in zip(text, covered):
        assert c == (0 if is_space(ch) else 1), (ch, c)
    assert ((ids >= 0) & (ids < codec.num_units)).all()
    assert (ids != PAD_ID).all()


PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(texts=st.lists(TEXTS, min_size=1, max_size=4))
@pytest.mark.parametrize("mode", ["latin_runs", "chars"])
def test_encode_invariants(codec, chars_codec, mode, texts):
    c = codec if mode == "latin_runs" else chars_codec
    enc = c.encode(texts)
    assert isinstance(enc, Encoded) and len(enc.ids) == len(texts)
    for text, offsets, ids in zip(texts, enc.offsets, enc.ids):
        check_invariants(c, text, offsets, ids)
        assert len(c.normalize(text)) == len(text)
    # Encoding one text alone or in a batch gives the same units.
    for text, offsets, ids in zip(texts, enc.offsets, enc.ids):
        alone = c.encode([text])
        assert np.array_equal(alone.offsets[0], offsets) and np.array_equal(alone.ids[0], ids)
    batch = c.batch(enc)
    assert batch.lengths.tolist() == enc.lengths
    assert ((batch.bigram_ids >= 0) & (batch.bigram_ids < c.num_bigrams)).all()
    for row, n in enumerate(enc.lengths):
        assert (batch.unit_ids[row, n:] == PAD_ID).all()
        assert (batch.bigram_ids[row, n:] == PAD_ID).all()
        assert (batch.bigram_ids[row, :n] != PAD_ID).all()


@pytest.fixture(scope="module")
def growing() -> dict[str, Codec]:
    return {u: Codec.build([], CodecConfig(units=u, lowercase=False)) for u in ("latin_runs", "chars")}


@PROPERTY_SETTINGS
@given(text=TEXTS)
def test_extend_with_text_covers_it(growing, text):
    # After extending with a text, the codec knows every unit of it (no UNK), and old ids hold.
    for c in growing.values():
        before = c.encode(CORPUS)
        c.extend([text])
        enc = c.encode([text])
        check_invariants(c, text, enc.offsets[0], enc.ids[0])
        assert UNK_ID not in enc.ids[0].tolist()
        after = c.encode(CORPUS)
        for x, y in zip(before.ids, after.ids):  # known units keep their ids; only UNKs may change
            assert np.array_equal(x[x != UNK_ID], y[x != UNK_ID])


def test_zero_digits_shares_numbers_and_keeps_offsets():
    codec = Codec.build(["1998年"], CodecConfig(zero_digits=True, bigram_min_freq=1))
    text = "２０２４年"
    encoded = codec.encode([text])
    assert encoded.ids[0].tolist() == codec.encode(["1998年"]).ids[0].tolist()
    assert encoded.offsets[0].tolist() == [[0, 4], [4, 5]]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.text(st.one_of(st.characters(), st.sampled_from(["\ud800", "\udfff", "Ａ", "İ", "ﬁ"]))),
                max_size=5))
def test_normalize_all_is_the_charmap_applied_text_by_text(codec, texts):
    table = str.maketrans({**codec.charmap, **{chr(cp): "\ufffd" for cp in range(0xD800, 0xE000)}})
    assert codec.normalize_all(texts) == [t.translate(table) for t in texts]
    assert [codec.normalize(t) for t in texts] == [t.translate(table) for t in texts]


def test_encode_of_no_texts_and_of_empty_texts(codec):
    assert codec.encode([]).ids == []
    enc = codec.encode(["", "我 们", ""])
    assert [len(i) for i in enc.ids] == [0, 2, 0]
    assert [o.shape for o in enc.offsets] == [(0, 2), (2, 2), (0, 2)]
    assert enc.offsets[1].tolist() == [[0, 1], [2, 3]]


# ---- the array-based unit splitter gives the tokenizer's units -------------------------------------------

_SPLITTER_PIECES = st.one_of(
    st.sampled_from(list("我们在北京工作。，、“”《》（）·—…!?,.:;'\"()[]-_/@#%&*+=<>|~`^{}$\\ \t\u3000\xa0\n")
                    + ["3.5", "v1.2", "a.5", "1.", ".1", "No.1", "2024", "COVID", "iPhone15", "x1.2.3", "１２",
                       "Ｏｆｆｉｃｅ", "é", "e\u0301", "\u0301", "ß", "İ", "\u200d", "\ufeff", "\x00", "\x1f",
                       "\ud800", "\U0001F600", "٣", "Ⅻ", "ｶ", "\u302a", "\u2028", "\u2066", "\u205f"]),
    st.characters(),
)


def _same_units(codec, texts):
    slow = codec._tokenize(codec.normalize_all(texts))
    for fast in (codec._array_encode(texts), codec.encode(texts)):  # encode: by size, either way
        _same_encoding(fast, slow, texts)


def _same_encoding(fast, slow, texts):
    for k in range(len(texts)):
        assert fast.ids[k].tolist() == slow.ids[k].tolist(), texts[k]
        assert fast.offsets[k].tolist() == slow.offsets[k].tolist(), texts[k]
        assert fast.offsets[k].shape == slow.offsets[k].shape and fast.ids[k].dtype == slow.ids[k].dtype


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_SPLITTER_PIECES, max_size=20).map("".join), min_size=1, max_size=6))
def test_array_splitter_matches_the_tokenizer(codec, chars_codec, texts):
    _same_units(codec, texts)
    _same_units(chars_codec, texts)


def test_array_splitter_matches_the_tokenizer_on_every_plain_character(codec, chars_codec):
    from seqtag.models.codec import _MARK_POINTS, _SINGLE, _unit_classes

    # (a repeated mark, full-width ones included, goes to the tokenizer: the last test here checks it)
    plain = np.flatnonzero(_unit_classes("latin_runs") == _SINGLE)
    plain = plain[~np.isin(codec._table[plain], _MARK_POINTS)].tolist()
    # each character alone, between letters, digits, dots and itself
    texts = ["".join(f"{chr(c)}a{chr(c)}1{chr(c)}{chr(c)}.x1. " for c in plain[i : i + 200])
             for i in range(0, len(plain), 200)]
    _same_units(codec, texts)
    _same_units(chars_codec, texts)
    assert len(plain) > 27000  # all but a dozen marks
    for one in (codec, chars_codec):  # and all of them were split by the arrays
        points = one._normalized_points(texts)
        normed = "".join(one.normalize_all(texts))
        assert len(one._split_units(points, normed, np.asarray([len(t) for t in texts]))[1]) == 0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sets(st.integers(0, 2**40), max_size=300), st.lists(st.integers(0, 2**40), max_size=50))
def test_key_index_finds_every_key_and_only_them(keys, others):
    from seqtag.models.codec import KeyIndex

    keys = sorted(keys)
    index = KeyIndex(np.asarray(keys, dtype=np.int64), np.arange(len(keys), dtype=np.int64) + 10, -7)
    want = {k: i + 10 for i, k in enumerate(keys)}
    queries = np.asarray(keys + others + [0, 1, 2**40], dtype=np.int64)
    assert index.lookup(queries).tolist() == [want.get(q, -7) for q in queries.tolist()]
    assert index.lookup(queries.reshape(1, -1)).shape == (1, len(queries))


def test_key_index_with_colliding_keys_and_bad_keys():
    from seqtag.models.codec import KeyIndex

    keys = np.arange(0, 64 * 1000, 64, dtype=np.int64)  # regular strides: many share a home slot
    index = KeyIndex(keys, keys * 2, -1)
    assert (index.lookup(keys) == keys * 2).all() and (index.lookup(keys + 1) == -1).all()
    assert index.lookup(np.zeros((0, 3), dtype=np.int64)).shape == (0, 3)
    with pytest.raises(ValueError, match="distinct"):
        KeyIndex(np.asarray([1, 1]), np.asarray([0, 0]), -1)
