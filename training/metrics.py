"""Evaluation scores for segmentation, joint segmentation + POS, and NER.

Every function takes parallel lists of gold and predicted :class:`Example`\\ s
(same texts, in the same order) and returns a dict of floats in percent (0-100;
0.0 wherever a score is undefined, e.g. no gold or no predicted words), plus
``sentences`` (number of examples) and ``chars`` (characters in the gold texts).

Words and entities are matched by exact character offsets, so the scores do not
depend on any tag scheme. OOV/IV recall follow the SIGHAN bakeoff scorer: among
gold words whose text is not in / is in the training vocabulary, the share found
with exactly the same boundaries. Without a ``train_vocab`` they are 0.0.
"""

from __future__ import annotations

from typing import Iterable, Sequence


from seqtag.models.schemes import TagScheme, spans_to_tags
from seqtag.models.spans import Example

TASKS = ("seg", "pos", "ner")


def _pct(num: float, den: float) -> float:
    return 100.0 * num / den if den else 0.0


def _prf(correct: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p, r = _pct(correct, n_pred), _pct(correct, n_gold)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _check(gold: Sequence[Example], pred: Sequence[Example]) -> dict:
    """Validate that the lists are parallel; return the shared counts."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold examples but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if g.text != p.text:
            where = f" ({g.source})" if g.source else ""
            raise ValueError(f"example {i}{where}: gold and predicted texts differ")
    return {"sentences": len(gold), "chars": sum(len(g.text) for g in gold)}


def _bounds(ex: Example) -> set[tuple[int, int]]:
    return {(s.start, s.end) for s in ex.spans}


def _labelled(ex: Example) -> set[tuple[int, int, str]]:
    return {(s.start, s.end, s.label) for s in ex.spans}


def word_vocabulary(examples: Iterable[Example]) -> set[str]:
    """The texts of all spans (words) in ``examples``."""
    return {s.text_of(ex.text) for ex in examples for s in ex.spans}


def seg_scores(
    gold: Sequence[Example], pred: Sequence[Example], train_vocab: set[str] | None = None
) -> dict:
    """Word-level P/R/F1 by exact (start, end) match (labels ignored), OOV/IV recall."""
    out = _check(gold, pred)
    correct = n_gold = n_pred = 0
    found = {True: 0, False: 0}  # keyed by "is OOV"
    total = {True: 0, False: 0}
    for g, p in zip(gold, pred):
        gb, pb = _bounds(g), _bounds(p)
        correct, n_gold, n_pred = correct + len(gb & pb), n_gold + len(gb), n_pred + len(pb)
        if train_vocab is not None:
            for start, end in gb:
                oov = g.text[start:end] not in train_vocab
                total[oov] += 1
                found[oov] += (start, end) in pb
    precision, recall, f1 = _prf(correct, n_pred, n_gold)
    out.update(precision=precision, recall=recall, f1=f1, word_f1=f1)
    out.update(oov_recall=_pct(found[True], total[True]))
    out.update(iv_recall=_pct(found[False], total[False]))
    out.update(oov_rate=_pct(total[True], n_gold), gold_words=n_gold, pred_words=n_pred)
    return out


def pos_scores(
    gold: Sequence[Example], pred: Sequence[Example], train_vocab: set[str] | None = None
) -> dict:
    """Joint segmentation + tag P/R/F1, word-only P/R/F1 and ``pos_accuracy``.

    ``pos_accuracy`` is the share of correctly segmented words whose tag is also
    right. ``oov_recall``/``iv_recall``/``oov_rate`` are segmentation-level (as
    in :func:`seg_scores`).
    """
    seg = seg_scores(gold, pred, train_vocab)
    joint = sum(len(_labelled(g) & _labelled(p)) for g, p in zip(gold, pred))
    word_correct = sum(len(_bounds(g) & _bounds(p)) for g, p in zip(gold, pred))
    precision, recall, f1 = _prf(joint, seg["pred_words"], seg["gold_words"])
    out = {k: seg[k] for k in ("sentences", "chars", "oov_recall", "iv_recall", "oov_rate")}
    out.update(precision=precision, recall=recall, f1=f1, pos_accuracy=_pct(joint, word_correct))
    out.update(word_precision=seg["precision"], word_recall=seg["recall"], word_f1=seg["f1"])
    out.update(gold_words=seg["gold_words"], pred_words=seg["pred_words"])
    return out


def _char_tags(ex: Example) -> list[str]:
    spans = [(s.start, s.end, s.label) for s in ex.spans]
    return spans_to_tags(spans, len(ex.text), TagScheme.BIOES)


def ner_scores(gold: Sequence[Example], pred: Sequence[Example], train_entities: set[str] | None = None) -> dict:
    """seqeval strict (IOBES) entity micro P/R/F1 on per-character tags, and ``per_type``; with
    ``train_entities`` (the entity texts of the training corpus) also the recall of gold entities seen and
    unseen there (``seen_recall``, ``unseen_recall``, ``unseen_rate``)."""
    # imported here: seqeval pulls in scikit-learn (~0.7 s), which `seqtag predict` never needs
    from seqeval.metrics.v1 import precision_recall_fscore_support, unique_labels
    from seqeval.scheme import IOBES

    out = _check(gold, pred)
    # seqeval rejects an empty outer list; one empty sentence scores the same.
    y_true = [_char_tags(g) for g in gold] or [[]]
    y_pred = [_char_tags(p) for p in pred] or [[]]
    kwargs = dict(scheme=IOBES, zero_division=0)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", **kwargs)
    out.update(precision=float(100 * p), recall=float(100 * r), f1=float(100 * f))
    labels = unique_labels(y_true, y_pred, IOBES)
    per = precision_recall_fscore_support(y_true, y_pred, average=None, **kwargs)
    out["per_type"] = {
        label: {"precision": 100 * float(lp), "recall": 100 * float(lr), "f1": 100 * float(lf),
                "support": int(ls)}
        for label, lp, lr, lf, ls in zip(labels, *per)
    }
    if train_entities is not None:
        found = {True: 0, False: 0}  # keyed by "is unseen"
        total = {True: 0, False: 0}
        for g, p in zip(gold, pred):
            predicted = _labelled(p)
            for span in g.spans:
                unseen = span.text_of(g.text) not in train_entities
                total[unseen] += 1
                found[unseen] += (span.start, span.end, span.label) in predicted
        out.update(seen_recall=_pct(found[False], total[False]), unseen_recall=_pct(found[True], total[True]),
                   unseen_rate=_pct(total[True], total[True] + total[False]))
    return out


def scores_for_task(
    task: str, gold: Sequence[Example], pred: Sequence[Example], train_vocab: set[str] | None = None
) -> dict:
    """Dispatch on ``task`` (``seg``, ``pos`` or ``ner``; for NER ``train_vocab`` is the training entities)."""
    if task == "seg":
        return seg_scores(gold, pred, train_vocab)
    if task == "pos":
        return pos_scores(gold, pred, train_vocab)
    if task == "ner":
        return ner_scores(gold, pred, train_vocab)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
