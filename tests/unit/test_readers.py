"""Tests for training.readers: every format, every error path, the writers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtag.models.schemes import TagScheme
from seqtag.models.spans import Example, Span
from seqtag.training.readers import (
    FORMATS,
    CorpusError,
    ReadStats,
    iter_corpus,
    join_words,
    parse_label_map,
    read_corpus,
    write_corpus,
)

CORPORA = Path(__file__).resolve().parents[2].parent / "shared" / "corpora"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def words_of(ex: Example) -> list[tuple[str, str]]:
    return [(sp.text_of(ex.text), sp.label) for sp in ex.spans]


def assert_error(exc: pytest.ExceptionInfo, path: Path, line: int, *fragments: str) -> None:
    message = str(exc.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------- join_words


@pytest.mark.parametrize(
    "words, text",
    [
        (["上海", "浦东"], "上海浦东"),
        (["New", "York"], "New York"),
        (["iPhone", "手机"], "iPhone手机"),
        (["3", "月"], "3月"),
        (["2010", "年", "G20", "峰会"], "2010年G20峰会"),
        (["ＩＢＭ", "ｐｃ"], "ＩＢＭ ｐｃ"),  # full-width Latin
        (["１９", "９８"], "１９ ９８"),  # full-width digits
        (["一", "二"], "一二"),  # CJK numerals are not Latin
        (["Ωmega", "3"], "Ωmega 3"),  # other alphanumerics below U+2E80
        (["café", "au"], "café au"),
        (["A", ".", "B"], "A.B"),
        (["가", "나"], "가나"),  # Hangul is >= U+2E80
    ],
)
def test_join_words(words, text):
    joined, offsets = join_words(words)
    assert joined == text
    assert [joined[s:e] for s, e in offsets] == words


def test_join_words_empty_word():
    assert join_words([]) == ("", [])
    with pytest.raises(ValueError):
        join_words(["a", ""])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=4), max_size=8))
def test_join_words_offsets_property(words):
    text, offsets = join_words(words)
    assert [text[s:e] for s, e in offsets] == words
    gaps = [text[e:s] for (_, e), (s, _) in zip(offsets, offsets[1:])]
    assert all(gap in ("", " ") for gap in gaps)
    assert text.replace(" ", "") == "".join(words).replace(" ", "")
    assert (offsets[0][0] if offsets else 0) == 0 and (offsets[-1][1] if offsets else 0) == len(text)


# ----------------------------------------------------------------------- seg


def test_seg_basic(tmp_path):
    path = write(
        tmp_path,
        "a.seg",
        "\ufeff上海 浦东  开发\n\n中国\u3000经济\t建设\u3000\u3000New York 新闻\n   \n最后 一行",
    )
    stats = ReadStats()
    examples = read_corpus(path, "seg", stats=stats)
    assert [ex.text for ex in examples] == ["上海浦东开发", "中国经济建设New York新闻", "最后一行"]
    assert [w for w, _ in words_of(examples[1])] == ["中国", "经济", "建设", "New", "York", "新闻"]
    assert all(sp.label == "" for ex in examples for sp in ex.spans)
    assert [ex.source for ex in examples] == [f"{path}:1", f"{path}:3", f"{path}:5"]
    assert (stats.sentences, stats.spans, stats.empty, stats.skipped) == (3, 11, 2, 0)


def test_seg_crlf_and_iter(tmp_path):
    path = write(tmp_path, "a.seg", "我 爱\r\n北京 天安门\r\n")
    it = iter_corpus(path, "seg")
    assert next(it).text == "我爱"
    assert [w for w, _ in words_of(next(it))] == ["北京", "天安门"]
    assert next(it, None) is None


def test_invalid_utf8_reports_line(tmp_path):
    path = write(tmp_path, "bad.seg", "好 的\n".encode() + b"\xff\xfe oops\n" + "对 的\n".encode())
    with pytest.raises(CorpusError) as exc:
        read_corpus(path, "seg")
    assert_error(exc, path, 2, "UTF-8")


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_file(tmp_path, fmt):
    path = tmp_path / "nope.txt"
    with pytest.raises(CorpusError) as exc:
        read_corpus(path, fmt)
    assert_error(exc, path, 0, "file not found")


def test_bad_arguments(tmp_path):
    path = write(tmp_path, "a.seg", "a\n")
    with pytest.raises(ValueError, match="format"):
        iter_corpus(path, "xml")
    with pytest.raises(ValueError, match="tag_column"):
        iter_corpus(path, "conllu", tag_column="deprel")
    with pytest.raises(ValueError, match="max_errors"):
        iter_corpus(path, "seg", max_errors=-1)


# -------------------------------------------------------------------- conllu

CONLLU = """\
# sent_id = 1
# text = 我在New York。
1\t我\t_\tPRON\tPN\t_\t2\tnsubj\t_\t_
2-3\t在New\t_\t_\t_\t_\t_\t_\t_\t_
2\t在\t_\tADP\tP\t_\t0\troot\t_\t_
3\tNew\t_\tPROPN\tNR\t_\t4\tcompound\t_\t_
3.1\t空\t_\tX\tX\t_\t_\t_\t_\t_
4\tYork\t_\tPROPN\tNR\t_\t2\tobj\t_\t_
5\t。\t_\tPUNCT\tPU\t_\t2\tpunct\t_\t_


# sent_id = 2
1\t好\t_\tADJ\tVA\t_\t0\troot\t_\t_
2\t的\t_\tPART\tSP\t_\t1\tdiscourse\t_\t_"""


def test_conllu_upos(tmp_path):
    path = write(tmp_path, "a.conllu", "\ufeff" + CONLLU)  # BOM, no trailing newline
    stats = ReadStats()
    examples = read_corpus(path, "conllu", stats=stats)
    assert len(examples) == 2
    first, second = examples
    assert first.text == "我在New York。"
    assert words_of(first) == [
        ("我", "PRON"), ("在", "ADP"), ("New", "PROPN"), ("York", "PROPN"), ("。", "PUNCT")
    ]
    assert first.spans[3] == Span(6, 10, "PROPN")
    assert second.text == "好的" and words_of(second) == [("好", "ADJ"), ("的", "PART")]
    assert first.source == f"{path}:1" and second.source == f"{path}:12"
    assert (stats.sentences, stats.spans) == (2, 7)


def test_conllu_xpos_none_and_label_map(tmp_path):
    path = write(tmp_path, "a.conllu", CONLLU + "\n\n")
    xpos = read_corpus(path, "conllu", tag_column="xpos")
    assert [lab for _, lab in words_of(xpos[0])] == ["PN", "P", "NR", "NR", "PU"]
    none = read_corpus(path, "conllu", tag_column="none")
    assert {sp.label for ex in none for sp in ex.spans} == {""}
    mapped = read_corpus(path, "conllu", tag_column="xpos", label_map={"NR": "PER", "PU": "W"})
    assert [lab for _, lab in words_of(mapped[0])] == ["PN", "P", "PER", "PER", "W"]


def test_conllx_crlf_and_comment_only_block(tmp_path):
    conllx = (
        "1\t今天\t今天\tNT\tNT\t_\t2\tTMP\t_\t_\r\n"
        "2\t下雨\t下雨\tVV\tVV\t_\t0\tROOT\t_\t_\r\n"
        "\r\n"
        "# a block with no words\r\n"
        "\r\n"
        "1\t好\t好\tVA\tVA\t_\t0\tROOT\t_\t_\r\n"
    )
    path = write(tmp_path, "a.conll", conllx)
    stats = ReadStats()
    examples = read_corpus(path, "conllu", stats=stats)
    assert [ex.text for ex in examples] == ["今天下雨", "好"]
    assert words_of(examples[0]) == [("今天", "NT"), ("下雨", "VV")]
    assert examples[1].source == f"{path}:6"
    assert stats.empty == 1


@pytest.mark.parametrize(
    "bad_line, fragment",
    [
        ("2\t在\t_\tADP\tP\t_\t0\troot\t_", "10 tab-separated columns, found 9"),
        ("2 在 _ ADP P _ 0 root _ _", "found 1"),
        ("x\t在\t_\tADP\tP\t_\t0\troot\t_\t_", "not an integer"),
        ("2a-3\t在\t_\tADP\tP\t_\t0\troot\t_\t_", "not an integer"),
        ("5\t在\t_\tADP\tP\t_\t0\troot\t_\t_", "out of sequence"),
        ("2\t\t_\tADP\tP\t_\t0\troot\t_\t_", "empty word"),
        ("2\t在\t_\t_\tP\t_\t0\troot\t_\t_", "UPOS"),
    ],
)
def test_conllu_malformed(tmp_path, bad_line, fragment):
    content = "# c\n1\t我\t_\tPRON\tPN\t_\t2\tnsubj\t_\t_\n" + bad_line + "\n\n"
    path = write(tmp_path, "bad.conllu", "1\t好\t_\tADJ\tVA\t_\t0\troot\t_\t_\n\n" + content)
    with pytest.raises(CorpusError) as exc:
        read_corpus(path, "conllu")
    assert_error(exc, path, 5, fragment)


def test_max_errors_skips_then_raises(tmp_path):
    good = "1\t好\t_\tADJ\tVA\t_\t0\troot\t_\t_\n"
    bad = "1\t坏\t_\tADJ\n"
    path = write(tmp_path, "m.conllu", good + "\n" + bad + good.replace("1", "2", 1) + "\n" + good + "\n" + bad)
    stats = ReadStats()
    examples = read_corpus(path, "conllu", max_errors=2, stats=stats)
    assert [ex.text for ex in examples] == ["好", "好"]
    assert stats.skipped == 2 and len(stats.errors) == 2
    assert stats.errors[0].startswith(f"{path}:3: ")
    with pytest.raises(CorpusError) as exc:
        read_corpus(path, "conllu", max_errors=1)
    assert_error(exc, path, 8, "max_errors=1")
    with pytest.raises(CorpusError) as exc:
        read_corpus(path, "conllu")
    assert_error(exc, path, 3)


# -------------------------------------------------------------------- column

BMES = """\
吴 B-NAME
重 M-NAME
阳 E-NAME
， O
男 S-GEN

中 B-CONT
国 E-CONT"""


def test_column_bmes(tmp_path):
    path = write(tmp_path, "a.bmes", BMES)  # no trailing blank line
    stats = ReadStats()
    examples = read_corpus(path, "column", stats=stats)
    assert [ex.text for ex in examples] == ["吴重阳，男", "中国"]
    assert examples[0].spans == [Span(0, 3, "NAME"), Span(4, 5, "GEN")]
    assert examples[1].spans == [Span(0, 2, "CONT")]
    assert [ex.source for ex in examples] == [f"{path}:1", f"{path}:7"]
    assert stats.scheme is TagScheme.BMES
    assert (stats.sentences, stats.spans, stats.repaired) == (2, 3, 0)


def test_column_repair_is_counted(tmp_path):
    # BMES file: a sentence starting with M- and one with a label switch.
    content = "甲 M-ORG\n乙 E-ORG\n丙 O\n\n丁 B-PER\n戊 E-LOC\n\n己 S-PER\n\n\n"
    path = write(tmp_path, "r.bmes", content)
    stats = ReadStats()
    examples = read_corpus(path, "column", stats=stats)
    assert examples[0].spans == [Span(0, 2, "ORG")]
    assert examples[1].spans == [Span(0, 1, "PER"), Span(1, 2, "LOC")]
    assert stats.repaired == 2 and stats.sentences == 3


def test_column_bio_and_bioes_detection(tmp_path):
    bio = write(tmp_path, "bio.txt", "EU B-ORG\nrejects O\nGerman B-MISC\ncall I-MISC\n\nI-X I-PER\n")
    stats = ReadStats()
    examples = read_corpus(bio, "column", stats=stats)
    assert stats.scheme is TagScheme.BIO and stats.repaired == 1
    # multi-character tokens: offsets are characters of the joined text
    assert examples[0].text == "EUrejectsGermancall"
    assert words_of(examples[0]) == [("EU", "ORG"), ("Germancall", "MISC")]
    assert examples[1].spans == [Span(0, 3, "PER")]

    bioes = write(tmp_path, "bioes.txt", "北\tB-LOC\n京\tE-LOC\n人 extra S-PER\n")
    stats = ReadStats()
    (ex,) = read_corpus(bioes, "column", stats=stats, label_map={"LOC": "GPE"})
    assert stats.scheme is TagScheme.BIOES and stats.repaired == 0
    assert ex.spans == [Span(0, 2, "GPE"), Span(2, 3, "PER")]


def test_column_segmentation_tags(tmp_path):
    path = write(tmp_path, "seg.bmes", "上 B\n海 E\n是 S\n城 B\n市 M\n们 E\n")
    (ex,) = read_corpus(path, "column")
    assert [w for w, _ in words_of(ex)] == ["上海", "是", "城市们"]


@pytest.mark.parametrize(
    "bad_line, fragment",
    [("人 X-PER", "unknown tag"), ("人 B-", "unknown tag"), ("人 o", "unknown tag"), ("人", "token TAG")],
)
def test_column_malformed(tmp_path, bad_line, fragment):
    path = write(tmp_path, "bad.bmes", "中 B-LOC\n国 E-LOC\n\n好 O\n" + bad_line + "\n")
    with pytest.raises(CorpusError) as exc:
        read_corpus(path, "column")
    assert_error(exc, path, 5, fragment)


# ------------------------------------------------------------------- wordpos


def test_wordpos(tmp_path):
    path = write(
        tmp_path,
        "a.wordpos",
        "\ufeff第一_OD 章_M\n\n张小凡_NR\u3000看_VV  Harry_NR Potter_NR a_b_NN 。_PU\n",
    )
    stats = ReadStats()
    examples = read_corpus(path, "wordpos", stats=stats)
    assert [ex.text for ex in examples] == ["第一章", "张小凡看Harry Potter a_b。"]
    assert words_of(examples[1]) == [
        ("张小凡", "NR"), ("看", "VV"), ("Harry", "NR"), ("Potter", "NR"), ("a_b", "NN"), ("。", "PU")
    ]
    assert examples[1].source == f"{path}:3"
    assert stats.empty == 1
    segonly = read_corpus(path, "wordpos", tag_column="none")
    assert {sp.label for ex in segonly for sp in ex.spans} == {""}


@pytest.mark.parametrize(
    "bad, fragment", [("章", "no '_TAG'"), ("_NN", "empty word"), ("章_", "empty tag")]
)
def test_wordpos_malformed(tmp_path, bad, fragment):
    path = write(tmp_path, "bad.wordpos", "第一_OD 章_M\n好_VA " + bad + " 。_PU\n")
    with pytest.raises(CorpusError) as exc:
        read_corpus(path, "wordpos")
    assert_error(exc, path, 2, fragment)


# --------------------------------------------------------------------- jsonl


def test_jsonl(tmp_path):
    lines = [
        json.dumps({"text": "张三在北京", "spans": [[3, 5, "LOC"], [0, 2, "PER"]], "id": 7}, ensure_ascii=False),
        "",
        json.dumps({"text": "我爱", "spans": [[0, 1], [1, 2]]}),
        json.dumps({"text": "", "spans": []}),
    ]
    path = write(tmp_path, "a.jsonl", "\ufeff" + "\n".join(lines) + "\n")
    stats = ReadStats()
    examples = read_corpus(path, "jsonl", stats=stats, label_map={"PER": "PERSON"})
    assert examples[0].spans == [Span(0, 2, "PERSON"), Span(3, 5, "LOC")]  # sorted
    assert examples[1].spans == [Span(0, 1, ""), Span(1, 2, "")]
    assert [ex.source for ex in examples] == [f"{path}:1", f"{path}:3"]
    assert (stats.sentences, stats.spans, stats.empty) == (2, 4, 1)


@pytest.mark.parametrize(
    "record, fragment",
    [
        ('{"text": "ab", "spans": [[0, 1]]', "invalid JSON"),
        ('["ab", []]', "JSON object"),
        ('{"spans": []}', "missing"),
        ('{"text": "ab"}', "missing"),
        ('{"text": 5, "spans": []}', "'text' must be a string"),
        ('{"text": "ab", "spans": {}}', "'spans' must be a list"),
        ('{"text": "ab", "spans": [[0]]}', "span 0"),
        ('{"text": "ab", "spans": [[0, 1, "X", 3]]}', "span 0"),
        ('{"text": "ab", "spans": [[0, 1.0]]}', "integers"),
        ('{"text": "ab", "spans": [[false, 1]]}', "integers"),
        ('{"text": "ab", "spans": [[0, 1, 3]]}', "label must be a string"),
        ('{"text": "ab", "spans": [[-1, 1]]}', "outside"),
        ('{"text": "ab", "spans": [[0, 3]]}', "outside"),
        ('{"text": "ab", "spans": [[1, 1]]}', "outside"),
        ('{"text": "abc", "spans": [[0, 2], [1, 3]]}', "overlap"),
        ('{"text": "a\\ud800", "spans": []}', "surrogate"),
    ],
)
def test_jsonl_malformed(tmp_path, record, fragment):
    path = write(tmp_path, "bad.jsonl", '{"text": "ok", "spans": []}\n\n' + record + "\n")
    with pytest.raises(CorpusError) as exc:
        read_corpus(path, "jsonl")
    assert_error(exc, path, 3, fragment)


# ---------------------------------------------------------------- label maps


def test_parse_label_map():
    assert parse_label_map("NR=PER,NS=LOC, NT = ORG") == {"NR": "PER", "NS": "LOC", "NT": "ORG"}
    assert parse_label_map("") == {}
    assert parse_label_map("PER.NAM=PER") == {"PER.NAM": "PER"}


@pytest.mark.parametrize("bad", ["NR", "NR=", "=PER", "NR=PER,", "NR=PER=X", "N R=PER", "NR=PER,NR=LOC"])
def test_parse_label_map_malformed(bad):
    with pytest.raises(ValueError, match="label"):
        parse_label_map(bad)


# ------------------------------------------------------------------- writers

EXAMPLES = [
    Example("张三在北京工作", [Span(0, 2, "PER"), Span(3, 5, "LOC")]),
    Example("人", [Span(0, 1, "PER")]),
    Example("没有实体", []),
]


def roundtrip(tmp_path, examples, fmt, **kwargs):
    path = tmp_path / f"out.{fmt}"
    write_corpus(examples, path, fmt, **kwargs)
    return path, read_corpus(path, fmt)


def same(a: list[Example], b: list[Example]) -> bool:
    return [(ex.text, sorted(ex.spans)) for ex in a] == [(ex.text, sorted(ex.spans)) for ex in b]


@pytest.mark.parametrize("scheme", list(TagScheme))
def test_column_writer_roundtrip(tmp_path, scheme):
    path, back = roundtrip(tmp_path, EXAMPLES, "column", scheme=scheme)
    assert same(back, EXAMPLES)
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    assert blocks[1] == ("人 S-PER" if scheme is not TagScheme.BIO else "人 B-PER")


def test_column_writer_tags_and_whitespace(tmp_path):
    ex = Example("去 New York 吧", [Span(2, 10, "LOC"), Span(1, 2, "X")])  # X is whitespace only
    buf = io.StringIO()
    write_corpus([ex], buf, "column", scheme=TagScheme.BIOES)
    lines = buf.getvalue().split("\n")
    assert lines[:10] == [
        "去 O", "N B-LOC", "e I-LOC", "w I-LOC", "Y I-LOC", "o I-LOC", "r I-LOC", "k E-LOC", "吧 O", ""
    ]
    path = write(tmp_path, "w.txt", buf.getvalue())
    (back,) = read_corpus(path, "column")
    assert back.text == "去NewYork吧" and back.spans == [Span(1, 8, "LOC")]


def test_seg_writer_roundtrip(tmp_path):
    examples = [
        Example("上海浦东开发", [Span(0, 2), Span(2, 4), Span(4, 6)]),
        Example("中国New York新闻", [Span(0, 2), Span(2, 5), Span(6, 10), Span(10, 12)]),
    ]
    path, back = roundtrip(tmp_path, examples, "seg")
    assert path.read_text(encoding="utf-8") == "上海 浦东 开发\n中国 New York 新闻\n"
    assert same(back, examples)


def test_seg_writer_keeps_uncovered_text_and_drops_labels():
    buf = io.StringIO()
    write_corpus([Example("张三在北京", [Span(0, 2, "PER"), Span(3, 5, "LOC")])], buf, "seg")
    assert buf.getvalue() == "张三 在 北京\n"


def test_wordpos_writer_roundtrip(tmp_path):
    examples = [
        Example("我爱北京。", [Span(0, 1, "PRON"), Span(1, 2, "VERB"), Span(2, 4, "PROPN"), Span(4, 5, "PUNCT")]),
        Example("a_b New York", [Span(0, 3, "X"), Span(4, 12, "PROPN")]),
    ]
    path, back = roundtrip(tmp_path, examples, "wordpos")
    assert path.read_text(encoding="utf-8") == "我_PRON 爱_VERB 北京_PROPN 。_PUNCT\na_b_X New_PROPN York_PROPN\n"
    assert same(back[:1], examples[:1])  # (a word with a space comes back as two words)
    assert back[1].text == "a_b New York" and back[1].spans == [Span(0, 3, "X"), Span(4, 7, "PROPN"),
                                                                  Span(8, 12, "PROPN")]
    for untagged in (Example("张三在", [Span(0, 2, "PER")]), Example("张三", [Span(0, 2, "")])):
        with pytest.raises(ValueError, match="needs a tag on every word"):
            write_corpus([untagged], io.StringIO(), "wordpos")


def test_jsonl_writer_scores():
    buf = io.StringIO()
    write_corpus([Example("张三", [Span(0, 2, "PER", 0.912345)]), Example("", [])], buf, "jsonl", scores=True)
    assert [json.loads(line) for line in buf.getvalue().splitlines()] == [
        {"text": "张三", "spans": [[0, 2, "PER"]], "scores": [0.9123]}, {"text": "", "spans": [], "scores": []}]
    with pytest.raises(ValueError, match="only the jsonl format"):
        write_corpus(EXAMPLES, io.StringIO(), "seg", scores=True)
    with pytest.raises(ValueError, match="a span has none"):
        write_corpus(EXAMPLES, io.StringIO(), "jsonl", scores=True)


def test_jsonl_writer_roundtrip(tmp_path):
    examples = EXAMPLES + [Example('引号"和\\换行\n', [Span(0, 2, "Q")])]
    path, back = roundtrip(tmp_path, examples, "jsonl")
    assert same(back, examples)
    assert "张三" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(examples)


def test_writer_errors(tmp_path):
    with pytest.raises(ValueError, match="format"):
        write_corpus(EXAMPLES, tmp_path / "x", "conllu")
    overlapping = Example("abc", [Span(0, 2), Span(1, 3)])
    outside = Example("abc", [Span(2, 5)])
    for fmt in ("seg", "column", "jsonl"):
        for bad in (overlapping, outside):
            with pytest.raises(ValueError):
                write_corpus([bad], io.StringIO(), fmt)
    with pytest.raises(ValueError, match="whitespace"):
        write_corpus([Example("ab", [Span(0, 2, "A B")])], io.StringIO(), "column")


LABELS = st.sampled_from(["", "PER", "LOC", "PER.NAM"])
CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x9FFF, blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"))


@st.composite
def examples(draw):
    text = draw(st.text(CHARS, min_size=1, max_size=12))
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=6)))
    spans = []
    for a, b in zip(cuts, cuts[1:]):
        if draw(st.booleans()):
            spans.append(Span(a, b, draw(LABELS)))
    return Example(text, spans)


@settings(max_examples=40, deadline=None)
@given(st.lists(examples(), min_size=1, max_size=4), st.sampled_from(list(TagScheme)))
def test_roundtrip_property(tmp_path_factory, exs, scheme):
    tmp = tmp_path_factory.mktemp("rt")
    for fmt in ("jsonl", "column"):
        path = tmp / f"out.{fmt}"
        write_corpus(exs, path, fmt, scheme=scheme)
        stats = ReadStats()
        assert same(read_corpus(path, fmt, stats=stats), exs)
        assert stats.repaired == 0 and stats.sentences == len(exs)


# ------------------------------------------------------------ real corpora

REAL = [
    ("ctb6", "*.seg", "seg"),
    ("ud-gsd", "*.conllu", "conllu"),
    ("wtb", "*.conllu", "conllu"),
    ("resume", "*.bmes", "column"),
    ("weibo", "*.bmes", "column"),
    ("msra-news", "*.bmes", "column"),
    ("zhuxian", "*.wordpos", "wordpos"),
]


@pytest.mark.corpora
def test_real_corpora():
    if not CORPORA.is_dir():
        pytest.skip(f"{CORPORA} not present")
    seen = 0
    for folder, pattern, fmt in REAL:
        files = sorted(p for p in (CORPORA / folder).glob(pattern) if p.stem.split(".")[0] in ("train", "dev"))
        assert files, f"no train/dev files in {folder}"
        for path in files:
            stats = ReadStats()
            examples = read_corpus(path, fmt, stats=stats)
            assert examples and stats.sentences == len(examples) and stats.skipped == 0
            for ex in examples:
                prev_end = 0
                for sp in ex.spans:
                    assert prev_end <= sp.start < sp.end <= len(ex.text), (ex.source, sp)
                    assert sp.text_of(ex.text).strip(), (ex.source, sp)
                    prev_end = sp.end
                if fmt != "column":  # words tile the text (spaces only between Latin words)
                    assert "".join(sp.text_of(ex.text) for sp in ex.spans) == ex.text.replace(" ", "")
            print(f"{folder}/{path.name}: {stats.sentences} sentences, {stats.spans} spans, "
                  f"{stats.repaired} repaired")
            seen += 1
    assert seen == 14


# ---- seg_lines: the array-built seg output of `seqtag predict` ------------------------------------------

_SEG_CHARS = st.one_of(
    st.sampled_from(list("我们在北京工作。ab1 \t\u3000\xa0\x1c\x1f\u2028\n\r") + ["\ud800", "\U0001F600"]),
    st.characters(),
)


@st.composite
def texts_with_spans(draw):
    """Texts with sorted, non-overlapping spans (gaps allowed, some on whitespace)."""
    texts = draw(st.lists(st.lists(_SEG_CHARS, max_size=25).map("".join), min_size=1, max_size=5))
    examples = []
    for text in texts:
        cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=12))))
        spans = [Span(a, b, "") for a, b in zip(cuts, cuts[1:]) if draw(st.booleans())]
        examples.append(Example(text, spans))
    return examples


def _table(examples):
    from seqtag.models.spans import SpanTable

    return SpanTable.from_lists([ex.spans for ex in examples])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(texts_with_spans())
def test_seg_lines_writes_what_write_corpus_writes(examples):
    from seqtag.training.readers import seg_lines

    expected = io.StringIO()
    write_corpus(examples, expected, "seg")
    assert seg_lines([ex.text for ex in examples], _table(examples)) == expected.getvalue()


def test_seg_lines_rejects_bad_spans():
    from seqtag.training.readers import seg_lines

    with pytest.raises(ValueError, match="outside"):
        seg_lines(["ab"], _table([Example("ab", [Span(0, 3)])]))
    with pytest.raises(ValueError, match="overlaps"):
        seg_lines(["abc"], _table([Example("abc", [Span(0, 2), Span(1, 3)])]))
    with pytest.raises(ValueError, match="texts but spans"):
        seg_lines(["a", "b"], _table([Example("a", [])]))
    assert seg_lines([], _table([])) == ""


def test_split_spaces_are_what_str_split_splits_on():
    from seqtag.training.readers import SPLIT_SPACES

    assert sorted(SPLIT_SPACES.tolist()) == [c for c in range(0x110000) if chr(c).isspace()]
