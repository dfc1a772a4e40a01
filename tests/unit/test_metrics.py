"""Hand-computed checks for training.metrics, and the t2s character table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqtag.models.spans import Example, Span
from seqtag.training.metrics import (
    ner_scores,
    pos_scores,
    scores_for_task,
    seg_scores,
    word_vocabulary,
)

T2S = Path(__file__).resolve().parents[2] / "models" / "data" / "t2s.json"


def words(text: str, *pieces: str, labels: tuple[str, ...] = ()) -> Example:
    """An example whose spans are ``pieces`` laid end to end (optionally labelled)."""
    assert "".join(pieces) == text
    spans, start = [], 0
    for i, piece in enumerate(pieces):
        spans.append(Span(start, start + len(piece), labels[i] if labels else ""))
        start += len(piece)
    return Example(text, spans)


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-9)


# --- segmentation -----------------------------------------------------------


def test_seg_single_sentence():
    gold = [words("我爱北京", "我", "爱", "北京")]
    pred = [words("我爱北京", "我", "爱北", "京")]
    s = seg_scores(gold, pred)
    assert s["precision"] == approx(100 / 3)
    assert s["recall"] == approx(100 / 3)
    assert s["f1"] == approx(100 / 3) and s["word_f1"] == s["f1"]
    assert (s["gold_words"], s["pred_words"], s["sentences"], s["chars"]) == (3, 3, 1, 4)
    # no training vocabulary: OOV figures are undefined
    assert s["oov_recall"] == s["iv_recall"] == s["oov_rate"] == 0.0


def test_seg_oov_iv_recall():
    gold = [words("我爱北京", "我", "爱", "北京"), words("北京欢迎你", "北京", "欢迎", "你")]
    pred = [words("我爱北京", "我", "爱北", "京"), words("北京欢迎你", "北京", "欢", "迎", "你")]
    vocab = {"我", "爱", "欢迎"}
    s = seg_scores(gold, pred, vocab)
    # gold 6, pred 7, correct 3 (我, 北京, 你)
    assert s["precision"] == approx(300 / 7)
    assert s["recall"] == approx(50.0)
    assert s["f1"] == approx(600 / 13)
    # OOV gold words: 北京, 北京, 你 -> 2 found; IV: 我, 爱, 欢迎 -> 1 found
    assert s["oov_recall"] == approx(200 / 3)
    assert s["iv_recall"] == approx(100 / 3)
    assert s["oov_rate"] == approx(50.0)
    assert (s["sentences"], s["chars"]) == (2, 9)


def test_seg_ignores_labels_and_perfect_match():
    gold = [words("我爱北京", "我", "爱", "北京", labels=("PN", "VV", "NR"))]
    pred = [words("我爱北京", "我", "爱", "北京")]
    s = seg_scores(gold, pred, {"我"})
    assert s["precision"] == s["recall"] == s["f1"] == approx(100.0)
    assert s["oov_recall"] == s["iv_recall"] == approx(100.0)


def test_word_vocabulary():
    exs = [words("我爱北京", "我", "爱", "北京"), words("北京欢迎你", "北京", "欢迎", "你")]
    assert word_vocabulary(exs) == {"我", "爱", "北京", "欢迎", "你"}
    assert word_vocabulary([]) == set()


# --- POS --------------------------------------------------------------------


def test_pos_joint_word_and_accuracy():
    gold = [words("我爱北京", "我", "爱", "北京", labels=("PN", "VV", "NR"))]
    pred = [words("我爱北京", "我", "爱", "北", "京", labels=("PN", "NN", "NR", "NR"))]
    s = pos_scores(gold, pred, {"我", "爱"})
    # joint: only 我/PN right, 4 predicted, 3 gold
    assert s["precision"] == approx(25.0)
    assert s["recall"] == approx(100 / 3)
    assert s["f1"] == approx(200 / 7)
    # words: 我 and 爱 right
    assert s["word_precision"] == approx(50.0)
    assert s["word_recall"] == approx(200 / 3)
    assert s["word_f1"] == approx(400 / 7)
    assert s["pos_accuracy"] == approx(50.0)  # 1 of 2 correctly segmented words
    assert s["iv_recall"] == approx(100.0) and s["oov_recall"] == 0.0  # 北京 is OOV, missed
    assert (s["sentences"], s["chars"]) == (1, 4)


# --- NER --------------------------------------------------------------------


def test_ner_correct_wrong_type_missed():
    text = "张三在北京见李四"
    gold = [Example(text, [Span(0, 2, "PER"), Span(3, 5, "LOC"), Span(6, 8, "PER")])]
    pred = [Example(text, [Span(0, 2, "PER"), Span(3, 5, "ORG")])]
    s = ner_scores(gold, pred)
    assert s["precision"] == approx(50.0)
    assert s["recall"] == approx(100 / 3)
    assert s["f1"] == approx(40.0)
    assert (s["sentences"], s["chars"]) == (1, 8)
    per = s["per_type"]
    assert set(per) == {"LOC", "ORG", "PER"}
    assert per["PER"] == {"precision": approx(100.0), "recall": approx(50.0),
                          "f1": approx(200 / 3), "support": 2}
    assert per["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_ner_strict_boundaries_and_single_char():
    text = "美国总统访华"
    gold = [Example(text, [Span(0, 2, "GPE"), Span(5, 6, "GPE")])]
    pred = [Example(text, [Span(0, 1, "GPE"), Span(5, 6, "GPE")])]  # 美 alone: no credit
    s = ner_scores(gold, pred)
    assert s["precision"] == s["recall"] == s["f1"] == approx(50.0)


def _span_set_prf(gold, pred):
    tp = sum(len(set(g.spans) & set(p.spans)) for g, p in zip(gold, pred))
    n_gold = sum(len(g.spans) for g in gold)
    n_pred = sum(len(p.spans) for p in pred)
    prec = 100 * tp / n_pred if n_pred else 0.0
    rec = 100 * tp / n_gold if n_gold else 0.0
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


@st.composite
def labelled_spans(draw, length: int) -> list[Span]:
    spans, i = [], 0
    while i < length:
        end = min(length, i + draw(st.integers(1, 3)))
        if draw(st.booleans()):
            spans.append(Span(i, end, draw(st.sampled_from(["PER", "LOC", "ORG"]))))
        i = end
    return spans


@st.composite
def gold_pred_pairs(draw):
    lengths = draw(st.lists(st.integers(0, 10), max_size=4))
    texts = ["字" * n for n in lengths]
    gold = [Example(t, draw(labelled_spans(len(t)))) for t in texts]
    pred = [Example(t, draw(labelled_spans(len(t)))) for t in texts]
    return gold, pred


@settings(max_examples=60, deadline=None)
@given(gold_pred_pairs())
def test_ner_equals_span_set_match(pair):
    gold, pred = pair
    s = ner_scores(gold, pred)
    p, r, f = _span_set_prf(gold, pred)
    assert (s["precision"], s["recall"], s["f1"]) == (approx(p), approx(r), approx(f))
    for label, d in s["per_type"].items():
        g = [Example(x.text, [sp for sp in x.spans if sp.label == label]) for x in gold]
        q = [Example(x.text, [sp for sp in x.spans if sp.label == label]) for x in pred]
        assert (d["precision"], d["recall"], d["f1"]) == tuple(map(approx, _span_set_prf(g, q)))
        assert d["support"] == sum(len(x.spans) for x in g)
    # joint POS scoring is the same span-set match
    assert pos_scores(gold, pred)["f1"] == approx(f)


# --- empty and mismatched inputs --------------------------------------------


@pytest.mark.parametrize("task", ["seg", "pos", "ner"])
def test_empty_inputs(task):
    for gold in ([], [Example("")], [Example("你好")]):
        pred = [Example(g.text) for g in gold]
        s = scores_for_task(task, gold, pred, set())
        assert s["precision"] == s["recall"] == s["f1"] == 0.0
        assert s["sentences"] == len(gold) and s["chars"] == sum(len(g.text) for g in gold)
        if task == "ner":
            assert s["per_type"] == {}


@pytest.mark.parametrize("task", ["seg", "pos", "ner"])
def test_mismatched_inputs_raise(task):
    a = [words("我爱北京", "我", "爱", "北京")]
    with pytest.raises(ValueError):
        scores_for_task(task, a, [])
    with pytest.raises(ValueError):
        scores_for_task(task, a, [Example("我爱上海")])


def test_scores_for_task_dispatch():
    gold = [words("我爱北京", "我", "爱", "北京", labels=("PN", "VV", "NR"))]
    pred = [words("我爱北京", "我", "爱北", "京", labels=("PN", "VV", "NR"))]
    assert scores_for_task("seg", gold, pred, {"我"}) == seg_scores(gold, pred, {"我"})
    assert scores_for_task("pos", gold, pred, {"我"}) == pos_scores(gold, pred, {"我"})
    assert scores_for_task("ner", gold, pred) == ner_scores(gold, pred)
    with pytest.raises(ValueError):
        scores_for_task("srl", gold, pred)


# --- traditional -> simplified table ----------------------------------------


def test_t2s_table():
    table = json.loads(T2S.read_text(encoding="utf-8"))
    assert len(table) > 3000
    assert all(len(k) == 1 and len(v) == 1 and k != v for k, v in table.items())
    assert table["說"] == "说" and table["國"] == "国"
    assert table["開"] == "开" and table["學"] == "学" and table["門"] == "门"
