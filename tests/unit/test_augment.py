"""Made-up person names for segmentation corpora (training/augment.py)."""

from __future__ import annotations

import pytest

from seqtag.models.spans import Example, Span
from seqtag.training.augment import SURNAMES, chinese_name, hidden_word_starts, main, name_words, swap_names
from seqtag.training.readers import read_corpus

pytestmark = pytest.mark.usefixtures("one_thread")


def words(text: str, *ws: str) -> Example:
    spans, at = [], 0
    for w in ws:
        spans.append(Span(at, at + len(w)))
        at += len(w)
    assert "".join(ws) == text
    return Example(text, spans)


def test_chinese_names():
    assert chinese_name("张小凡") and chinese_name("王伟")
    assert not chinese_name("克林顿")  # no common surname first
    assert not chinese_name("张")  # too short
    assert not chinese_name("欧阳修文")  # too long
    assert not chinese_name("王A")


def test_only_person_words_that_are_one_gold_word_are_names():
    ex = words("记者王小明和李华报道", "记者", "王小明", "和", "李华", "报道")
    found = [Span(2, 5, "PER"), Span(6, 8, "PER"), Span(0, 2, "ORG"), Span(8, 10, "PER")]
    assert name_words([ex], [found]) == [[1, 3]]  # 报道 is no name (no surname first), 记者 no person


def test_swaps_keep_length_spans_and_context():
    exs = [words("记者王小明和李华报道", "记者", "王小明", "和", "李华", "报道"), words("今天下雨", "今天", "下雨")]
    names = [[1, 3], []]
    out, swapped = swap_names(exs, names, share=1.0, seed=3)
    assert swapped == 2
    assert out[1] is exs[1]
    new = out[0]
    assert len(new.text) == len(exs[0].text) and new.spans == exs[0].spans
    assert new.text[:2] == "记者" and new.text[5] == "和" and new.text[8:] == "报道"
    assert new.text[2] in SURNAMES and new.text[6] in SURNAMES
    assert swap_names(exs, names, share=1.0, seed=3)[0][0].text == new.text  # the seed fixes the draws
    assert swap_names(exs, names, share=0.0, seed=3) == (exs, 0)


def test_the_command_writes_a_copy_in_the_corpus_s_format(tmp_path, capsys):
    corpus = tmp_path / "train.seg"
    corpus.write_text("记者 王小明 报道 ， 张伟 在 北京 工作 。\n今天 下雨 。\n", encoding="utf-8")
    out = tmp_path / "aug.seg"
    assert main([str(corpus), str(out), "--share", "1", "--seed", "2"]) == 0
    assert "swapped" in capsys.readouterr().err
    original, copy = read_corpus(corpus, "seg"), read_corpus(out, "seg")
    assert [[(s.start, s.end) for s in e.spans] for e in copy] == [[(s.start, s.end) for s in e.spans] for e in original]
    assert copy[1].text == original[1].text
    assert out.read_text(encoding="utf-8").splitlines()[0].startswith("记者 ")


def test_the_command_refuses_a_model_that_is_not_ner(tmp_path, capsys):
    corpus = tmp_path / "train.seg"
    corpus.write_text("今天 下雨 。\n", encoding="utf-8")
    assert main([str(corpus), str(tmp_path / "o.jsonl"), "--ner", "zh-seg"]) == 2
    assert "not an NER model" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.seg"), str(tmp_path / "o.jsonl")]) == 2
    assert main([str(corpus), str(tmp_path / "o.seg"), "--ner", str(tmp_path)]) == 2  # not a checkpoint
    assert main([str(corpus), str(tmp_path / "no" / "such" / "dir" / "o.seg")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_a_pos_corpus_without_tags_is_written_as_seg(tmp_path):
    corpus = tmp_path / "train.wordpos"
    corpus.write_text("记者_NN 王小明_NR 报道_VV\n", encoding="utf-8")
    out = tmp_path / "aug.seg"
    assert main([str(corpus), str(out), "--format", "wordpos", "--tag-column", "none", "--share", "1"]) == 0
    assert len(out.read_text(encoding="utf-8").split()) == 3
    assert main([str(corpus), str(tmp_path / "aug.wordpos"), "--format", "wordpos", "--share", "1"]) == 0
    assert (tmp_path / "aug.wordpos").read_text(encoding="utf-8").split()[1].endswith("_NR")


def test_hidden_words_and_nicknames():
    exs = [words("周一张小凡和李华来了", "周一", "张小凡", "和", "李华", "来", "了"),
           words("高度重视", "高度", "重视")]
    names = [[1, 3], []]
    # 周一, 高度 (and the name 李华) start with a surname: the corpus's words that a made-up name can hide
    assert hidden_word_starts(exs) == ["周一", "李华", "高度"]
    out, swapped = swap_names(exs, names, share=1.0, seed=5, hidden=1.0, nicknames=1.0)
    assert swapped == 2 and out[0].spans == exs[0].spans
    assert out[0].text[2:4] in ("周一", "李华", "高度")  # the three-character name starts with a hidden word
    assert out[0].text[6] in "小阿"  # the two-character one is a nickname
    # with both shares 0 the draws are those of the plain swap
    assert swap_names(exs, names, 1.0, 5, 0.0, 0.0)[0][0].text == swap_names(exs, names, 1.0, 5)[0][0].text


def test_the_command_checks_its_shares(tmp_path):
    corpus = tmp_path / "train.seg"
    corpus.write_text("今天 下雨 。\n", encoding="utf-8")
    for flag in ("--share", "--hidden-words", "--nicknames"):
        with pytest.raises(SystemExit):
            main([str(corpus), str(tmp_path / "o.seg"), flag, "1.5"])
