"""User dictionaries outside the service: the entry checks, dictionary files (text lines, jieba's format, the
service's JSON), and ``Pipeline.predict(..., dictionary=...)`` with the shipped models."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtag.models.dictionary import Dictionary, DictionaryError, parse_entry_line, read_dictionary, without_labels
from seqtag.models.pipeline import Pipeline
from seqtag.models.spans import Span
from tests.fixtures import words

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- entries and files ----------------------------------------------------------------------


@pytest.mark.parametrize("line, entry", [
    ("华星公司", "华星公司"),
    ("  华星公司  ", "华星公司"),
    ("华星公司 ORG", ("华星公司", "ORG")),
    ("云计算 5 n", ("云计算", "n")),  # jieba: word, frequency, tag
    ("云计算 5", "云计算"),  # jieba without a tag
    ("云计算 3.5 n", ("云计算", "n")),
    ("New York\tLOC", ("New York", "LOC")),  # a tab separates: the word may hold a space
    ("New York\t12\tLOC", ("New York", "LOC")),
    ("New York\t", "New York"),
    ("", None),
    ("   ", None),
    ("# a comment", None),
])
def test_entry_lines(line, entry):
    assert parse_entry_line(line) == entry


@pytest.mark.parametrize("line", ["a b c", "New York LOC", "a 1 n extra"])
def test_entry_lines_with_too_many_fields(line):
    with pytest.raises(DictionaryError, match="separate fields with a tab"):
        parse_entry_line(line)


@pytest.mark.parametrize("entry", [5, None, ("a",), ("a", "b", "c"), ("a", 5), ("", "LOC"), " a", "x" * 65])
def test_bad_entries_are_dictionary_errors(entry):
    """Never a TypeError: a hand-edited stored dictionary with a number in it is a clear error too."""
    with pytest.raises(DictionaryError):
        Dictionary([entry])


def test_text_file_with_bom_comments_and_jieba_lines(tmp_path):
    path = tmp_path / "user.txt"
    path.write_bytes("\ufeff华星公司\n# brands\n\n阿里云 100 nz\r\n南京\tLOC\n".encode("utf-8"))
    assert read_dictionary(path) == ["华星公司", ("阿里云", "nz"), ("南京", "LOC")]
    assert without_labels(read_dictionary(path)) == ["华星公司", "阿里云", "南京"]


def test_json_files_as_the_service_stores_them(tmp_path):
    stored = tmp_path / "brands.json"
    stored.write_text(json.dumps({"name": "brands", "entries": ["阿里云", {"text": "南京", "label": "LOC"}]}),
                      encoding="utf-8")
    assert read_dictionary(stored) == ["阿里云", ("南京", "LOC")]
    bare = tmp_path / "list.txt"  # JSON by its content, whatever the name
    bare.write_text('["阿里云", ["南京", "LOC"]]', encoding="utf-8")
    assert read_dictionary(bare) == ["阿里云", ("南京", "LOC")]


@pytest.mark.parametrize("content, message", [
    (b"a\nb c d\n", "bad.txt, line 2: expected"),
    (b"\xff\xfe\x00", "bad.txt: not UTF-8"),
    (b'{"entries": [1]}', "bad.txt: entry 0: a dictionary entry is a string"),
    (b'{"entries": "x"}', "expected a list of entries"),
    (b'{"entries": [', "bad.txt: not valid JSON (line 1"),
    (("x" * 70).encode(), "bad.txt, line 1: dictionary entries must be 1..64 characters"),
])
def test_bad_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DictionaryError) as info:
        read_dictionary(path)
    assert message in str(info.value)


def leftmost_longest(entries: dict[str, str], text: str) -> list[Span]:
    """The matching rule, written the slow, obvious way."""
    spans, i = [], 0
    while i < len(text):
        hits = [key for key in entries if text.startswith(key, i)]
        if hits:
            key = max(hits, key=len)
            spans.append(Span(i, i + len(key), entries[key]))
            i += len(key)
        else:
            i += 1
    return spans


WORDS = st.text(alphabet="ab中文Ａ", min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(st.tuples(WORDS, st.sampled_from(["", "X", "Y"])), max_size=12),
       text=st.text(alphabet="ab中文Ａ ", max_size=30))
def test_find_is_leftmost_longest_and_the_last_definition_wins(entries, text):
    fold = str.lower
    dictionary = Dictionary([(w, lab) for w, lab in entries], normalize=fold,
                            normalize_many=lambda texts: [fold(t) for t in texts])
    one_by_one = Dictionary(normalize=fold)
    for entry in entries:
        one_by_one.add(entry)
    expected = {}
    for word, label in entries:
        expected[fold(word)] = label
    assert dictionary.find(text) == one_by_one.find(text) == leftmost_longest(expected, fold(text))
    assert [s.label for s in dictionary.find(text)] == [s.label for s in leftmost_longest(expected, fold(text))]
    assert len(dictionary) == len(expected)


# ---- tagging with a dictionary ---------------------------------------------------------------


@pytest.fixture(scope="module")
def seg(shipped_model) -> Pipeline:
    return shipped_model("zh-seg")


@pytest.fixture(scope="module")
def ner(shipped_model) -> Pipeline:
    return shipped_model("zh-ner")


TEXTS = ["华星公司在南京发布了ＩＰＨＯＮＥ手机", "阿里云很好", ""]


def test_dictionary_words_come_out_whole_and_removing_them_restores_the_model(seg):
    plain = seg.predict(TEXTS)
    assert "华星公司" not in words(TEXTS, plain)[0]  # the model alone splits it (华星 公司)
    # iphone手机 matches the full-width text through the codec's normalisation; "phone" would split a
    # Latin run (not on unit boundaries), so it is skipped, not an error
    entries = ["华星公司", "iphone手机", "phone"]
    forced = words(TEXTS, seg.predict(TEXTS, dictionary=entries))
    assert forced[0] == ["华星公司", "在", "南京", "发布", "了", "ＩＰＨＯＮＥ手机"]
    assert forced[1:] == words(TEXTS, plain)[1:]
    assert seg.predict(TEXTS, dictionary=[]) == plain
    assert seg.predict(TEXTS, dictionary=seg.dictionary(entries)) == seg.predict(TEXTS, dictionary=entries)
    table = seg.predict_table(TEXTS, dictionary=entries, workers=2, max_batch=1)
    assert table.to_lists() == seg.predict(TEXTS, dictionary=entries)


def test_labelled_entries_force_the_entity_type(ner):
    text = ["华星公司在南京"]
    assert [(s.start, s.end, s.label) for s in ner.predict(text, dictionary=[("华星公司", "ORG")])[0]][0] == (
        0, 4, "ORG")
    assert ner.predict(text, dictionary=[("南京", "ORG")])[0][-1] == Span(5, 7, "ORG")


def test_labels_the_model_lacks_are_refused(seg, ner):
    # a segmenter has no labels: it takes a labelled entry's word (jieba's "word FREQ TAG" lines)
    assert seg.predict(["云"], dictionary=[("云", "n")]) == seg.predict(["云"], dictionary=["云"])
    assert seg.predict(["白云山"], dictionary=Dictionary([("白云山", "ns")]))[0] == [Span(0, 3)]
    with pytest.raises(DictionaryError, match="labels: LOC, ORG, PER"):
        ner.dictionary([("云", "n")])
    with pytest.raises(DictionaryError):  # a Dictionary built elsewhere is checked too
        ner.predict(["云"], dictionary=Dictionary([("云", "n")]))


def test_forced_spans_and_a_dictionary_together_are_refused(seg):
    with pytest.raises(ValueError, match="not both"):
        seg.predict(["云"], forced=[[]], dictionary=["云"])
