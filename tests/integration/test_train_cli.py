"""The ``seqtag`` command line end to end on tiny made-up corpora: train, evaluate, predict,
resume, fine-tune with a new label, and the one-line errors (exit status 2, no traceback)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqtag.models.codec import Encoded
from seqtag.models.pipeline import Pipeline
from tests.fixtures import (
    TINY_FLAGS,
    train_tiny,
    write_corpora,
    write_ner_org_corpus,
    write_seg_corpus,
)
from seqtag.cli import main

PREDICT_LINES = ["我们喜欢看书。", "", "   ", "他在北京工作iPhone15很贵！", "\u3000", "张伟明明天去上海。"]


# ---- runs shared by the module --------------------------------------------------



@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("seg"), "seg", epochs=2)


@pytest.fixture(scope="module")
def pos_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("pos"), "pos", epochs=2)


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("ner"), "ner", epochs=2)


def dev_file(run: Path) -> Path:
    return Path(json.loads((run / "best" / "config.json").read_text(encoding="utf-8"))["training"]["dev"])


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what came before
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def cli_error(capsys, *argv: str) -> str:
    """Run a command that must fail; return its one error line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    assert info.value.code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.startswith("seqtag:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("seqtag: error: ")
    # the error line is the last thing written, and it is one line
    assert err.endswith(lines[0] + "\n"), err
    return lines[0]


# ---- train ---------------------------------------------------------------------


def test_train_writes_run_directory(seg_run):
    for name in ("best", "last"):
        assert {p.name for p in (seg_run / name).iterdir()} >= {
            "codec.json", "config.json", "model.safetensors", "tokenizer.json", "seen.json"}
    assert (seg_run / "last" / "trainer_state.json").exists()
    assert (seg_run / "last" / "trainer_state.safetensors").exists()
    assert not list(seg_run.glob(".*")), "temporary directories left behind"
    rows = [json.loads(line) for line in (seg_run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["step"] > rows[0]["step"] > 0
    for row in rows:
        assert math.isfinite(row["loss"]) and row["loss"] > 0
        assert 0 <= row["dev"]["f1"] <= 100
        assert {"precision", "recall", "word_f1", "oov_recall", "iv_recall"} <= row["dev"].keys()
    assert rows[0]["is_best"] is True
    assert rows[-1]["best_f1"] == max(r["dev"]["f1"] for r in rows)
    png = seg_run / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_records_training_config_and_corpora(seg_run):
    config = json.loads((seg_run / "best" / "config.json").read_text(encoding="utf-8"))
    assert config["task"] == "seg" and config["scheme"] == "bmes"
    assert config["tags"] == ["B", "M", "E", "S"] and config["labels"] == []
    assert config["tagger"]["hidden"] == 16 and config["tagger"]["unit_dim"] == 16
    training = config["training"]
    assert training["task"] == "seg" and training["format"] == "seg"
    assert training["model"] == config["tagger"]
    assert training["optim"]["epochs"] == 2 and training["optim"]["batch_size"] == 8
    assert training["optim"]["lr"] == 0.02 and training["optim"]["warmup_steps"] == 0
    assert training["run"]["device"] == "cpu" and training["run"]["threads"] == 1
    assert training["run"]["progress"] is False
    assert training["out"] == str(seg_run)
    for split in ("train", "dev"):
        path = Path(training[split])
        assert config["corpora"][split] == {
            "path": str(path), "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    best_epoch = config["epoch"]
    rows = [json.loads(line) for line in (seg_run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert config["dev_metrics"]["f1"] == rows[best_epoch - 1]["dev"]["f1"]


def test_best_checkpoint_predicts_the_same_twice(seg_run):
    texts = [line for line in PREDICT_LINES] + ["电脑很认识朋友！"] * 3
    first = Pipeline.load(seg_run / "best", "cpu")
    second = Pipeline.load(seg_run / "best", "cpu")
    a = first.predict(texts, scores=True)
    b = second.predict(texts, scores=True)
    assert a == b
    assert [[s.score for s in row] for row in a] == [[s.score for s in row] for row in b]
    assert first.predict(texts) == a  # and again from the same pipeline, in another batch plan
    assert first.predict(texts, max_batch=2) == a


def test_training_learns_something(seg_run):
    rows = [json.loads(line) for line in (seg_run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["best_f1"] > 30  # a fixed little grammar; random would be far lower


def test_training_without_dev_still_saves_best(tmp_path, capsys):
    train = write_seg_corpus(tmp_path, n=16)
    out = tmp_path / "run"
    status, _, err = run_cli(capsys, "train", "--task", "seg", "--train", str(train), "--out", str(out),
                             "--epochs", "2", *TINY_FLAGS)
    assert status == 0
    assert "dev: 0" in err
    Pipeline.load(out / "best", "cpu")  # the final epoch's model
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((out / "best" / "config.json").read_text(encoding="utf-8"))["epoch"] == 2


def test_fresh_run_in_used_directory_restarts_the_log(tmp_path):
    run = train_tiny(tmp_path, "seg", epochs=2)
    run = train_tiny(tmp_path, "seg", epochs=1)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert json.loads((run / "last" / "trainer_state.json").read_text())["state"]["epoch"] == 1


def test_config_file_and_flags(tmp_path, capsys):
    """A JSON --config fills the settings; flags override it; the result is stored verbatim."""
    train, dev = write_corpora(tmp_path, "seg")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"task": "seg", "train": str(train), "dev": str(dev),
                                  "model": {"hidden": 12, "layers": 1, "encoder": "gru"},
                                  "optim": {"epochs": 5, "schedule": "constant"}}), encoding="utf-8")
    out = tmp_path / "run"
    status, _, _ = run_cli(capsys, "train", "--config", str(config), "--out", str(out), *TINY_FLAGS,
                           "--epochs", "1", "--hidden", "8")
    assert status == 0
    saved = json.loads((out / "best" / "config.json").read_text(encoding="utf-8"))
    assert saved["tagger"]["hidden"] == 8 and saved["tagger"]["encoder"] == "gru"
    assert saved["training"]["optim"]["epochs"] == 1 and saved["training"]["optim"]["schedule"] == "constant"


# ---- evaluate ------------------------------------------------------------------


def check_scores(scores: dict, task: str) -> None:
    for key in ("precision", "recall", "f1"):
        assert 0 <= scores[key] <= 100, key
    assert scores["sentences"] == 12 and scores["chars"] > 12
    assert scores["seconds"] >= 0
    if task in ("seg", "pos"):
        for key in ("word_f1", "oov_recall", "iv_recall"):
            assert 0 <= scores[key] <= 100, key
    if task == "pos":
        assert 0 <= scores["pos_accuracy"] <= 100
    if task == "ner":
        assert set(scores["per_type"]) <= {"PER", "LOC"}
        for row in scores["per_type"].values():
            assert {"precision", "recall", "f1", "support"} <= row.keys()
        assert sum(row["support"] for row in scores["per_type"].values()) > 0


@pytest.mark.parametrize("task", ["seg", "pos", "ner"])
def test_evaluate_json(task, request, capsys):
    run = request.getfixturevalue(f"{task}_run")
    status, out, _ = run_cli(capsys, "evaluate", str(run / "best"), str(dev_file(run)), "--json", "--device", "cpu")
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 1
    scores = json.loads(lines[0])
    check_scores(scores, task)
    # the same data and model as the trainer's last dev evaluation of the best epoch
    saved = json.loads((run / "best" / "config.json").read_text(encoding="utf-8"))["dev_metrics"]
    assert scores["f1"] == pytest.approx(saved["f1"])
    if task in ("seg", "pos"):
        assert scores["word_f1"] == pytest.approx(saved["word_f1"])
        assert scores["oov_recall"] == pytest.approx(saved["oov_recall"])


def test_evaluate_text(seg_run, capsys):
    status, out, _ = run_cli(capsys, "evaluate", str(seg_run / "best"), str(dev_file(seg_run)), "--device", "cpu")
    assert status == 0
    first, second = out.splitlines()
    assert first.startswith("precision ") and "f1 " in first and "oov_recall " in first
    assert second.startswith("12 sentences, ")


def test_evaluate_pos_model_on_words_only(pos_run, capsys):
    """--tag-column none reads the gold without tags: the words are scored alone (no tag metrics of 0)."""
    args = ["evaluate", str(pos_run / "best"), str(dev_file(pos_run)), "--json", "--device", "cpu"]
    full = json.loads(run_cli(capsys, *args)[1])
    words_only = json.loads(run_cli(capsys, *args, "--tag-column", "none")[1])
    assert "pos_accuracy" not in words_only
    assert words_only["f1"] == words_only["word_f1"] == full["word_f1"] > 0


# ---- predict -------------------------------------------------------------------


def predict_outputs(capsys, monkeypatch, tmp_path, model: Path, fmt: str | None) -> tuple[str, str, str]:
    """Output of the same input from a file, from stdin and into --output."""
    data = tmp_path / "input.txt"
    data.write_text("\n".join(PREDICT_LINES) + "\n", encoding="utf-8")
    flags = ["--device", "cpu"] + (["--format", fmt] if fmt else [])
    status, from_file, _ = run_cli(capsys, "predict", str(model), str(data), *flags)
    assert status == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(PREDICT_LINES) + "\n"))
    status, from_stdin, _ = run_cli(capsys, "predict", str(model), *flags)
    assert status == 0
    target = tmp_path / "out.txt"
    status, printed, _ = run_cli(capsys, "predict", str(model), str(data), "-o", str(target), *flags)
    assert status == 0 and printed == ""
    return from_file, from_stdin, target.read_text(encoding="utf-8")


def check_seg(output: str) -> None:
    lines = output.split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(PREDICT_LINES)
    for got, text in zip(lines, PREDICT_LINES):
        assert "".join(got.split(" ")) == "".join(text.split())
        assert got == got.strip() and "  " not in got
    assert lines[1] == "" and lines[2] == "" and lines[4] == ""


def check_column(output: str, tags: list[str]) -> None:
    blocks = [b for b in output.split("\n\n") if b]
    texts = [t for t in PREDICT_LINES if t.strip()]
    assert len(blocks) == len(texts)
    for block, text in zip(blocks, texts):
        rows = [row.split(" ") for row in block.strip("\n").split("\n")]
        assert "".join(ch for ch, _ in rows) == "".join(text.split())
        assert {tag for _, tag in rows} <= set(tags) | {"O"}


def check_jsonl(output: str, labels: set[str]) -> None:
    records = [json.loads(line) for line in output.splitlines()]
    assert [r["text"] for r in records] == PREDICT_LINES
    for record in records:
        text = record["text"]
        for start, end, label in record["spans"]:
            assert 0 <= start < end <= len(text)
            assert text[start:end].strip() == text[start:end]
            assert label in labels
        if not text.strip():
            assert record["spans"] == []


@pytest.mark.parametrize("fmt", [None, "seg", "column", "jsonl"])
def test_predict_seg_model(seg_run, fmt, tmp_path, capsys, monkeypatch):
    from_file, from_stdin, written = predict_outputs(capsys, monkeypatch, tmp_path, seg_run / "best", fmt)
    assert from_file == from_stdin == written
    if fmt in (None, "seg"):
        check_seg(from_file)
        # the words tile every non-space character
        assert from_file.split("\n")[0].replace(" ", "") == PREDICT_LINES[0]
    elif fmt == "column":
        check_column(from_file, ["B", "M", "E", "S"])
    else:
        check_jsonl(from_file, {""})
        for record in map(json.loads, from_file.splitlines()):
            covered = "".join(record["text"][s:e] for s, e, _ in record["spans"])
            assert covered == "".join(record["text"].split())


@pytest.mark.parametrize("fmt", [None, "seg", "column", "jsonl"])
def test_predict_ner_model(ner_run, fmt, tmp_path, capsys, monkeypatch):
    from_file, from_stdin, written = predict_outputs(capsys, monkeypatch, tmp_path, ner_run / "best", fmt)
    assert from_file == from_stdin == written
    tags = json.loads((ner_run / "best" / "config.json").read_text(encoding="utf-8"))["tags"]
    if fmt in (None, "jsonl"):  # jsonl is the default for NER
        check_jsonl(from_file, {"PER", "LOC"})
    elif fmt == "column":
        check_column(from_file, tags)
    else:
        lines = from_file.split("\n")
        assert len(lines) - 1 == len(PREDICT_LINES) and lines[1] == lines[2] == lines[4] == ""


def test_predict_pos_model_jsonl(pos_run, tmp_path, capsys, monkeypatch):
    from_file, from_stdin, _ = predict_outputs(capsys, monkeypatch, tmp_path, pos_run / "best", "jsonl")
    assert from_file == from_stdin
    check_jsonl(from_file, {"NOUN", "VERB", "PRON", "ADV", "PUNCT"})


def test_predict_pos_model_wordpos(pos_run, seg_run, tmp_path, capsys, monkeypatch):
    """word_TAG output, one line per input line, reads back as the same words and tags as the jsonl output."""
    from seqtag.training.readers import read_corpus

    from_file, from_stdin, written = predict_outputs(capsys, monkeypatch, tmp_path, pos_run / "best", "wordpos")
    assert from_file == from_stdin == written and len(from_file.split("\n")) - 1 == len(PREDICT_LINES)
    path = tmp_path / "out.wordpos"
    path.write_text(from_file, encoding="utf-8")
    jsonl, _, _ = predict_outputs(capsys, monkeypatch, tmp_path, pos_run / "best", "jsonl")
    expected = [[(r["text"][a:z], tag) for a, z, tag in r["spans"]] for r in map(json.loads, jsonl.splitlines())]
    back = [[(e.text[s.start:s.end], s.label) for s in e.spans] for e in read_corpus(path, "wordpos")]
    assert back == [words for words in expected if words]  # (blank lines are not examples)
    line = cli_error(capsys, "predict", str(seg_run / "best"), str(tmp_path / "in.txt"), "--format", "wordpos")
    assert "needs a pos model" in line


def test_predict_column_uses_the_model_scheme(ner_run, tmp_path, capsys, monkeypatch):
    """Column output of a BIOES NER model is written in BIOES (I-PER), not BMES (M-PER)."""
    import seqtag.cli as cli
    from seqtag.models.spans import Span, SpanTable

    real = cli._load_pipeline

    def fake_load(model, device, int8=True):
        pipeline = real(model, device, int8)
        pipeline.predict_table = lambda texts, **kw: SpanTable.from_lists(
            [[Span(0, 3, "PER")] if len(t) >= 3 else [] for t in texts])
        return pipeline

    monkeypatch.setattr(cli, "_load_pipeline", fake_load)
    data = tmp_path / "in.txt"
    data.write_text("张伟明在北京。\n", encoding="utf-8")
    status, out, _ = run_cli(capsys, "predict", str(ner_run / "best"), str(data), "--format", "column")
    assert status == 0
    assert [row.split(" ")[1] for row in out.strip().split("\n")[:4]] == ["B-PER", "I-PER", "E-PER", "O"]


def test_predict_only_blank_lines(seg_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n \n\t\n"))
    status, out, _ = run_cli(capsys, "predict", str(seg_run / "best"), "--format", "jsonl", "--device", "cpu")
    assert status == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"text": "", "spans": []}, {"text": " ", "spans": []}, {"text": "\t", "spans": []}]
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    status, out, _ = run_cli(capsys, "predict", str(seg_run / "best"), "--device", "cpu")
    assert status == 0 and out == ""


# ---- resume ----------------------------------------------------------------------


def test_resume_continues_training(tmp_path, capsys):
    flags = ("--schedule", "constant")
    run = train_tiny(tmp_path / "a", "seg", epochs=1, extra_flags=flags)
    state1 = json.loads((run / "last" / "trainer_state.json").read_text(encoding="utf-8"))["state"]
    assert state1["epoch"] == 1 and state1["step"] > 0

    status, _, _ = run_cli(capsys, "train", "--resume", "--out", str(run), "--epochs", "2", "--no-progress")
    assert status == 0
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    state2 = json.loads((run / "last" / "trainer_state.json").read_text(encoding="utf-8"))["state"]
    assert state2["epoch"] == 2
    assert state2["step"] == 2 * state1["step"]
    assert rows[1]["step"] == state2["step"]
    saved = json.loads((run / "last" / "config.json").read_text(encoding="utf-8"))
    assert saved["training"]["optim"]["epochs"] == 2  # the config the run now has

    # resuming restores weights, optimizer, RNG and counters: the same as one uninterrupted run
    straight = train_tiny(tmp_path / "b", "seg", epochs=2, extra_flags=flags)
    rows_b = [json.loads(line) for line in (straight / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in rows_b], rel=1e-5)
    assert [r["dev"]["f1"] for r in rows] == pytest.approx([r["dev"]["f1"] for r in rows_b])

    # nothing left to do: resuming a finished run is a no-op
    status, _, _ = run_cli(capsys, "train", "--resume", "--out", str(run), "--no-progress")
    assert status == 0
    assert len((run / "log.jsonl").read_text(encoding="utf-8").splitlines()) == 2


def test_adversarial_step_adds_a_gradient_and_puts_the_embeddings_back(tmp_path):
    from seqtag.training.config import build_config
    from seqtag.training.trainer import Trainer

    train, dev = write_corpora(tmp_path, "seg")
    config = build_config({
        "task": "seg", "train": str(train), "dev": str(dev), "out": str(tmp_path / "run"),
        "model": {"hidden": 16, "unit_dim": 16, "bigram_dim": 8},
        "optim": {"adversarial": 0.5}, "run": {"device": "cpu", "threads": 1, "progress": False},
    })
    trainer = Trainer(config)
    idx = list(range(8))
    batch, tags = trainer._tensors(idx, torch.Generator().manual_seed(0))
    (trainer.model(batch, tags) / len(idx)).backward()
    tables = trainer.tagger.embeddings()
    assert len(tables) == 2  # units and bigrams
    weights = [t.weight.detach().clone() for t in tables]
    grads = [t.weight.grad.clone() for t in tables]
    trainer._adversarial_step(batch, tags, len(idx))
    for table, weight, grad in zip(tables, weights, grads):
        assert torch.allclose(table.weight, weight, atol=1e-6)  # moved back
        assert not torch.equal(table.weight.grad, grad)  # the perturbed loss's gradient was added


@pytest.mark.parametrize("lexicon_dropout", [None, 0.0])
def test_lexicon_dropout_defaults_to_unit_dropout_and_can_be_set_apart(tmp_path, lexicon_dropout):
    from seqtag.training.config import build_config
    from seqtag.training.trainer import Trainer

    train, dev = write_corpora(tmp_path, "seg")
    words = sorted({w for line in train.read_text(encoding="utf-8").splitlines() for w in line.split()})
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("\n".join(words) + "\n", encoding="utf-8")
    optim = {"unit_dropout": 0.5} | ({} if lexicon_dropout is None else {"lexicon_dropout": lexicon_dropout})
    config = build_config({
        "task": "seg", "train": str(train), "dev": str(dev), "out": str(tmp_path / "run"), "lexicon": [str(lexicon)],
        "model": {"hidden": 16, "unit_dim": 16, "bigram_dim": 8}, "optim": optim,
        "run": {"device": "cpu", "threads": 1, "progress": False},
    })
    trainer = Trainer(config)
    idx = list(range(8))
    full = trainer.codec.batch(Encoded(offsets=[], ids=[trainer.data.ids[i] for i in idx],
                                       lexicon=[trainer.data.lexicon[i] for i in idx]))
    batch, _ = trainer._tensors(idx, torch.Generator().manual_seed(0))
    assert (batch.unit_ids != full.unit_ids).any()  # units are hidden either way
    if lexicon_dropout is None:
        assert (batch.lexicon != full.lexicon).any()
    else:
        assert torch.equal(batch.lexicon, full.lexicon)


def test_adversarial_training_end_to_end(tmp_path):
    run = train_tiny(tmp_path, "ner", epochs=1, extra_flags=("--adversarial", "0.5"))
    saved = json.loads((run / "best" / "config.json").read_text(encoding="utf-8"))
    assert saved["training"]["optim"]["adversarial"] == 0.5
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert math.isfinite(rows[0]["loss"])


def test_replace_mentions_swaps_labelled_spans_and_moves_offsets():
    import numpy as np

    from seqtag.models.spans import Example, Span
    from seqtag.training.trainer import replace_mentions

    examples = [
        Example("张三在北京工作。", [Span(0, 2, "PER"), Span(3, 5, "LOC")]),
        Example("欧阳修去了上海市。", [Span(0, 3, "PER"), Span(5, 8, "LOC")]),
        Example("我们很好。", [Span(0, 2, ""), Span(2, 3, ""), Span(3, 4, "")]),  # unlabelled: left alone
    ]
    out = replace_mentions(examples, 1.0, np.random.default_rng(0))
    assert out[2] is examples[2]
    by_label = {"PER": {"张三", "欧阳修"}, "LOC": {"北京", "上海市"}}
    for before, after in zip(examples[:2], out[:2]):
        assert [s.label for s in after.spans] == [s.label for s in before.spans]
        for s in after.spans:
            assert after.text[s.start:s.end] in by_label[s.label]
        # the context between and around the spans is unchanged
        gaps = lambda ex: [ex.text[a.end:b.start] for a, b in zip(ex.spans, ex.spans[1:])] + [ex.text[ex.spans[-1].end:]]
        assert gaps(after) == gaps(before)
    assert replace_mentions(examples, 0.0, np.random.default_rng(0)) == examples
    # a vetting function that fits nothing leaves every text as it is; one that sees the edges gets them
    assert [e.text for e in replace_mentions(examples, 1.0, np.random.default_rng(0), lambda *a: False)] == \
        [e.text for e in examples]
    seen_edges = []
    replace_mentions(examples[:2], 1.0, np.random.default_rng(0), lambda l, m, r: seen_edges.append((l, r)) or True)
    assert seen_edges[:2] == [("", "在"), ("在", "工")]


def test_mention_composition_swaps_the_head_of_a_name():
    import numpy as np

    from seqtag.models.spans import Example, Span
    from seqtag.training.trainer import replace_mentions

    examples = [
        Example("山东省人民政府发文。", [Span(0, 7, "ORG")]),
        Example("京剧院", [Span(0, 3, "ORG")]),  # 京 is a one-character place of the file: not a head
        Example("京", [Span(0, 1, "LOC")]),
        Example("他去了四川省。", [Span(3, 6, "LOC")]),
        Example("他去了山东省。", [Span(3, 6, "LOC")]),
        Example("中国科学院在北京。", [Span(0, 5, "ORG"), Span(6, 8, "LOC")]),
    ]
    out = replace_mentions(examples, 1.0, np.random.default_rng(0), compose=1.0)
    # the organisation keeps its body; its head (a place of the file) becomes another place of the file
    org = out[0].text[out[0].spans[0].start:out[0].spans[0].end]
    assert org.endswith("人民政府") and org[:-4] in {"四川省", "北京"}
    assert out[0].text.endswith("发文。") and out[0].spans[0].label == "ORG"
    assert not out[1].text.endswith("剧院") or out[1].text == "京剧院"  # swapped whole, never at the one-character head
    # a head of the same label, or one character long, is not swapped; heads that fit nothing stay
    same = replace_mentions([Example("中国科学院", [Span(0, 5, "ORG")]), Example("中国", [Span(0, 2, "ORG")])],
                            1.0, np.random.default_rng(0), compose=1.0)
    assert {e.text for e in same} <= {"中国科学院", "中国"}
    kept = replace_mentions(examples, 1.0, np.random.default_rng(0), fits=lambda a, m, b: False, compose=1.0)
    assert [e.text for e in kept] == [e.text for e in examples]
    # a junction the vocabulary does not know is vetted like an edge
    seen = []
    replace_mentions(examples, 1.0, np.random.default_rng(0), fits=lambda a, m, b: seen.append((a, m, b)) or True,
                     compose=1.0)
    assert any(b == "人" and a == "" for a, m, b in seen)


def test_mention_replacement_can_draw_names_from_a_typed_lexicon(tmp_path):
    import numpy as np
    import pytest

    from seqtag.training.config import build_config
    from seqtag.training.trainer import Trainer, replace_mentions

    train, dev = write_corpora(tmp_path, "ner")
    lexicon = tmp_path / "names.txt"
    lexicon.write_text("王伟明 nr\n北京市 ns\n一个愿挨 nr\n王 nr\n开会 v\n", encoding="utf-8")
    layer = {
        "task": "ner", "format": "column", "train": str(train), "dev": str(dev), "out": str(tmp_path / "run"),
        "lexicon": [str(lexicon)], "codec": {"bigrams": False}, "model": {"hidden": 16, "unit_dim": 16},
        "optim": {"mention_replace": 1.0, "mention_lexicon": 1.0}, "run": {"device": "cpu", "threads": 1, "progress": False},
    }
    trainer = Trainer(build_config(layer))
    # one-character and untyped words are left out, and words whose edges no name of the file has (一…挨);
    # each label draws from its own group
    assert {k: v.tolist() for k, v in trainer._lexicon_names.items()} == {"PER": ["王伟明"], "LOC": ["北京市"]}
    out = replace_mentions(trainer.train_examples, 1.0, np.random.default_rng(0), outside=trainer._lexicon_names,
                           outside_share=1.0)
    assert {(ex.text[s.start:s.end], s.label) for ex in out for s in ex.spans} == {("王伟明", "PER"), ("北京市", "LOC")}
    # the trainer's own epoch variant has them too: every sentence with a person now holds 王伟明's units
    name = trainer.codec.encode(["王伟明"]).ids[0].tolist()
    for ex, ids in zip(trainer.train_examples, trainer._epoch_data(0).ids):
        ids = ids.tolist()
        has = any(ids[i:i + 3] == name for i in range(len(ids)))
        assert has == any(s.label == "PER" for s in ex.spans)
    # options that would do nothing are refused
    for optim, message in [({"mention_replace": 0.0, "mention_lexicon": 0.5}, "set mention_replace"),
                           ({"mention_replace": 0.0, "mention_compose": 0.5}, "set mention_replace")]:
        with pytest.raises(ValueError, match=message):
            build_config(layer, {"optim": optim})
    with pytest.raises(ValueError, match="needs a typed lexicon"):
        build_config(layer, {"lexicon": []})
    with pytest.raises(ValueError, match="needs a typed lexicon"):
        build_config(layer, {"codec": {"lexicon_typed": False}})
    with pytest.raises(ValueError, match="task ner only"):
        build_config(layer, {"task": "pos"})


def test_mention_replacement_makes_no_unknown_bigrams(tmp_path):
    from seqtag.training.config import build_config
    from seqtag.training.trainer import Trainer

    train, dev = write_corpora(tmp_path, "ner")
    config = build_config({
        "task": "ner", "format": "column", "train": str(train), "dev": str(dev), "out": str(tmp_path / "run"),
        "codec": {"bigram_min_freq": 1}, "model": {"hidden": 16, "unit_dim": 16, "bigram_dim": 8},
        "optim": {"mention_replace": 1.0}, "run": {"device": "cpu", "threads": 1, "progress": False},
    })
    trainer = Trainer(config)
    variant = trainer._epoch_data(3)
    assert [x.tolist() for x in variant.ids] != [x.tolist() for x in trainer.gold_data.ids]
    for ids in variant.ids:  # every bigram of the variant is one the vocabulary knows, as in the file itself
        batch = trainer.codec.batch(type(trainer.codec.encode(["x"]))(offsets=[], ids=[ids]))
        assert not bool((batch.bigram_ids == 1).any())


def test_mention_replacement_trains_on_a_fresh_variant_each_epoch(tmp_path):
    from seqtag.training.config import build_config
    from seqtag.training.trainer import Trainer

    train, dev = write_corpora(tmp_path, "ner")
    config = build_config({
        "task": "ner", "format": "column", "train": str(train), "dev": str(dev), "out": str(tmp_path / "run"),
        "model": {"hidden": 16, "unit_dim": 16, "bigram_dim": 8},
        "optim": {"mention_replace": 0.5, "epochs": 2}, "run": {"device": "cpu", "threads": 1, "progress": False},
    })
    trainer = Trainer(config)
    first, again, second = trainer._epoch_data(0), trainer._epoch_data(0), trainer._epoch_data(1)
    gold = [x.tolist() for x in trainer.gold_data.ids]
    assert [x.tolist() for x in first.ids] == [x.tolist() for x in again.ids]  # the same after a resume
    assert [x.tolist() for x in first.ids] != gold
    assert [x.tolist() for x in second.ids] != [x.tolist() for x in first.ids]
    records = list(trainer.train())
    assert len(records) == 2 and all(math.isfinite(r["loss"]) for r in records)


# ---- fine-tuning with a new label ---------------------------------------------------


def test_init_from_adds_a_new_label(ner_run, tmp_path):
    old_config = json.loads((ner_run / "best" / "config.json").read_text(encoding="utf-8"))
    old_tags = old_config["tags"]
    assert "B-ORG" not in old_tags
    data = tmp_path / "org"
    train = write_ner_org_corpus(data, name="train.bmes", n=40, seed=5)
    dev = write_ner_org_corpus(data, name="dev.bmes", n=10, seed=6)
    run = train_tiny(tmp_path, "ner", epochs=1, extra_flags=(
        "--init-from", str(ner_run / "best"), "--train", str(train), "--dev", str(dev)))
    new = Pipeline.load(run / "best", "cpu")
    tags = new.meta.tags
    assert tags[: len(old_tags)] == old_tags  # old tags keep their index
    assert tags[len(old_tags):] == ["B-ORG", "I-ORG", "E-ORG", "S-ORG"]
    assert new.meta.labels == ["LOC", "ORG", "PER"]
    n = len(tags)
    assert new.tagger.project.out_features == n
    assert new.tagger.crf.num_tags == n
    assert tuple(new.tagger.crf.transitions.shape) == (n, n)
    assert tuple(new.tagger.crf.allowed.shape) == (n + 2, n + 2)
    # the constraints cover the new tags: I-ORG may follow B-ORG, never O
    i_org, b_org, o = tags.index("I-ORG"), tags.index("B-ORG"), tags.index("O")
    assert new.tagger.crf.allowed[b_org, i_org] and not new.tagger.crf.allowed[o, i_org]
    # the codec grew without renumbering what the old model knew
    old = Pipeline.load(ner_run / "best", "cpu")
    old_vocab, new_vocab = old.codec.tokenizer.get_vocab(), new.codec.tokenizer.get_vocab()
    assert all(new_vocab[unit] == i for unit, i in old_vocab.items())
    assert len(new_vocab) > len(old_vocab)  # ORG names bring new characters
    assert new.codec.bigram_list[: len(old.codec.bigram_list)] == old.codec.bigram_list
    # the architecture comes from the old model, whatever the flags say
    assert new.tagger.config == old.tagger.config
    # and it predicts with the grown tag set
    spans = new.predict(["华星公司位于北京。"])
    assert all(s.label in {"PER", "LOC", "ORG"} for s in spans[0])
    # it records how the model it started from was trained, and its card shows both commands in order
    from seqtag.training.modelcard import render_card

    config = json.loads((run / "best" / "config.json").read_text(encoding="utf-8"))
    first = old_config["command"] or f"(not recorded: the model in {ner_run / 'best'})"  # (run in-process here)
    assert config["earlier_commands"] == [first]
    card = render_card(run / "best", "zh-ner", "msra-news")
    assert card.index(first) < card.index("Then, from that model") < card.index(config["command"] or "(not recorded)")
    # its recorded training config gives the codec and architecture it really has (the old model's)
    assert config["training"]["codec"] == new.codec.config.model_dump(mode="json")
    assert config["training"]["model"] == new.tagger.config.model_dump(mode="json")


def test_init_from_a_model_of_another_task(seg_run, tmp_path, capsys):
    line = cli_error(capsys, "train", "--task", "ner", "--train", str(write_corpora(tmp_path, "ner")[0]),
                     "--out", str(tmp_path / "run"), "--init-from", str(seg_run / "best"), *TINY_FLAGS)
    assert "seg model, not ner" in line


# ---- errors ----------------------------------------------------------------------


def test_missing_training_file(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    line = cli_error(capsys, "train", "--task", "seg", "--train", str(missing), "--out", str(tmp_path / "run"))
    assert str(missing) in line and "file not found" in line
    assert not (tmp_path / "run").exists()


def test_malformed_conllu_line(tmp_path, capsys):
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\t我\t我\tPRON\tPRON\t_\t0\troot\t_\t_\n2\t喜欢\tVERB\n", encoding="utf-8")
    line = cli_error(capsys, "train", "--task", "pos", "--train", str(bad), "--out", str(tmp_path / "run"))
    assert f"{bad}:2:" in line and "expected 10 tab-separated columns" in line


def test_malformed_column_line(tmp_path, capsys):
    bad = tmp_path / "bad.bmes"
    bad.write_text("张 B-PER\n三 E-PER\n去 Q-LOC\n", encoding="utf-8")
    line = cli_error(capsys, "train", "--task", "ner", "--train", str(bad), "--out", str(tmp_path / "run"))
    assert f"{bad}:3:" in line and "Q-LOC" in line


def test_malformed_dev_file(tmp_path, capsys):
    train, _ = write_corpora(tmp_path, "ner")
    bad = tmp_path / "dev.bmes"
    bad.write_text("张\n", encoding="utf-8")
    line = cli_error(capsys, "train", "--task", "ner", "--train", str(train), "--dev", str(bad),
                     "--out", str(tmp_path / "run"))
    assert f"{bad}:1:" in line and "expected 'token TAG'" in line


@pytest.mark.parametrize("mapping", ["NR=PER,NS", "=PER", "NR=PER,NR=LOC", "A=B=C"])
def test_bad_label_map(tmp_path, capsys, mapping):
    train, _ = write_corpora(tmp_path, "ner")
    line = cli_error(capsys, "train", "--task", "ner", "--train", str(train), "--out", str(tmp_path / "run"),
                     "--label-map", mapping)
    assert "label" in line and mapping in line


@pytest.mark.parametrize(
    "content, words",
    [
        ({"optim": {"epochz": 3}}, ["optim.epochz", "Extra inputs are not permitted"]),
        ({"colour": "red"}, ["colour", "Extra inputs are not permitted"]),
        ({"model": {"hidden": -3}}, ["model.hidden", "greater than or equal to 1"]),
        ({"optim": {"epochz": 3}, "run": {"sead": 1}}, ["optim.epochz", "run.sead"]),
        ("{not json", ["not valid JSON"]),
        ([1, 2], ["must be an object"]),
    ],
)
def test_bad_config_file(tmp_path, capsys, content, words):
    train, _ = write_corpora(tmp_path, "seg")
    config = tmp_path / "config.json"
    config.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    line = cli_error(capsys, "train", "--task", "seg", "--train", str(train), "--out", str(tmp_path / "run"),
                     "--config", str(config))
    for word in words:
        assert word in line
    if content == {"optim": {"epochz": 3}}:
        assert line == "seqtag: error: invalid training config: optim.epochz: Extra inputs are not permitted"


def test_missing_config_file(tmp_path, capsys):
    line = cli_error(capsys, "train", "--task", "seg", "--config", str(tmp_path / "none.toml"))
    assert "cannot read config file" in line


def test_task_is_required(tmp_path, capsys):
    line = cli_error(capsys, "train", "--train", "x", "--out", str(tmp_path / "run"))
    assert "--task is required" in line


def test_resume_without_snapshot(tmp_path, capsys):
    line = cli_error(capsys, "train", "--resume", "--out", str(tmp_path / "nothing"))
    assert "--resume" in line and "last/" in line


@pytest.fixture
def corrupt_model(seg_run, tmp_path) -> Path:
    import shutil

    model = tmp_path / "corrupt"
    shutil.copytree(seg_run / "best", model)
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 3])
    return model


def test_evaluate_corrupt_checkpoint(corrupt_model, seg_run, capsys):
    line = cli_error(capsys, "evaluate", str(corrupt_model), str(dev_file(seg_run)), "--json")
    assert "model.safetensors" in line and "corrupt" in line


def test_predict_corrupt_checkpoint(corrupt_model, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("我们喜欢看书。\n"))
    line = cli_error(capsys, "predict", str(corrupt_model))
    assert "model.safetensors" in line and "corrupt" in line


@pytest.mark.parametrize("breakage", ["no_config", "newer", "pickle", "bad_tags", "bad_tagger"])
def test_predict_broken_checkpoints(seg_run, tmp_path, capsys, monkeypatch, breakage):
    import shutil

    model = tmp_path / "broken"
    shutil.copytree(seg_run / "best", model)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    if breakage == "no_config":
        (model / "config.json").unlink()
        words = ["not a seqtag checkpoint", "config.json"]
    elif breakage == "newer":
        config["format_version"] = 99
        words = ["format_version 99", "upgrade seqtag"]
    elif breakage == "pickle":
        (model / "model.safetensors").unlink()
        (model / "pytorch_model.bin").write_bytes(b"\x80\x04.")
        words = ["refusing pickled weights"]
    elif breakage == "bad_tags":
        config["tags"] = ["B", "X"]
        words = ["invalid checkpoint config"]
    else:
        config["tagger"] = {"hidden": "big"}
        words = ["invalid checkpoint config", "hidden"]
    if (model / "config.json").exists():
        (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO("我们喜欢看书。\n"))
    line = cli_error(capsys, "predict", str(model))
    for word in words:
        assert word in line


def test_evaluate_missing_data(seg_run, tmp_path, capsys):
    line = cli_error(capsys, "evaluate", str(seg_run / "best"), str(tmp_path / "gold.txt"))
    assert "gold.txt" in line and "file not found" in line


def test_predict_and_evaluate_with_parallel_batches(seg_run, tmp_path, capsys):
    """--workers tags several batches at once: the same output as one at a time; 0 is a usage error."""
    data = tmp_path / "input.txt"
    data.write_text("\n".join(PREDICT_LINES * 3) + "\n", encoding="utf-8")
    threads = torch.get_num_threads()
    try:
        outputs = []
        for workers in ("1", "3"):
            status, out, _ = run_cli(capsys, "predict", str(seg_run / "best"), str(data), "--device", "cpu",
                                     "--batch-size", "2", "--workers", workers, "--format", "jsonl")
            assert status == 0
            outputs.append(out)
        assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == 3 * len(PREDICT_LINES)
        assert torch.get_num_threads() == max(1, len(os.sched_getaffinity(0)) // 3)  # cores shared out
        gold = tmp_path / "gold.seg"
        gold.write_text("我们 在 北京 工作 。\n他 喜欢 音乐 。\n", encoding="utf-8")
        status, out, _ = run_cli(capsys, "evaluate", str(seg_run / "best"), str(gold), "--workers", "2", "--json")
        assert status == 0 and json.loads(out)["sentences"] == 2
        line = cli_error(capsys, "predict", str(seg_run / "best"), str(data), "--workers", "0")
        assert "--workers must be at least 1" in line
    finally:
        torch.set_num_threads(threads)


def test_the_program_flushes_before_its_quick_exit(seg_run, tmp_path):
    """As a program, predict and evaluate skip the interpreter's teardown: every line must still come out, a
    reader that stops early ends it quietly (status 141, as SIGPIPE), and errors still exit 2."""
    data = tmp_path / "input.txt"
    lines = [f"我们在北京工作{i}。" for i in range(3000)]  # far more than one stdout buffer
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    program = [sys.executable, "-m", "seqtag.cli"]
    done = subprocess.run([*program, "predict", str(seg_run / "best"), str(data), "--device", "cpu"],
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout.split("\n")
    assert len(out) == 3001 and out[-1] == "" and out[-2].replace(" ", "") == lines[-1]
    gold = tmp_path / "gold.seg"
    gold.write_text("我们 在 北京 工作 。\n", encoding="utf-8")
    done = subprocess.run([*program, "evaluate", str(seg_run / "best"), str(gold), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout)["sentences"] == 1, done.stderr
    big = tmp_path / "big.txt"  # output far beyond a pipe's buffer, so the writer meets the closed pipe
    big.write_text("\n".join(lines * 10) + "\n", encoding="utf-8")
    reader = subprocess.Popen([*program, "predict", str(seg_run / "best"), str(big), "--device", "cpu"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.readline()
    reader.stdout.close()  # like `| head -1`
    assert reader.wait(timeout=120) == 141
    assert b"Traceback" not in reader.stderr.read()
    reader.stderr.close()
    done = subprocess.run([*program, "predict", str(tmp_path / "no-model"), str(data)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("seqtag: error:")


def test_predict_missing_input(seg_run, tmp_path, capsys):
    line = cli_error(capsys, "predict", str(seg_run / "best"), str(tmp_path / "in.txt"))
    assert "in.txt" in line


def test_predict_not_utf8(seg_run, tmp_path, capsys):
    data = tmp_path / "latin1.txt"
    data.write_bytes("café\n".encode("latin-1"))
    line = cli_error(capsys, "predict", str(seg_run / "best"), str(data))
    assert "not UTF-8" in line


def test_cuda_requested_without_cuda(seg_run, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "stdin", io.StringIO("我\n"))
    line = cli_error(capsys, "predict", str(seg_run / "best"), "--device", "cuda")
    assert "CUDA" in line


# ---- user dictionaries ------------------------------------------------------------------------

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints"


def test_predict_and_evaluate_with_a_user_dictionary(tmp_path, capsys):
    """--dictionary forces its words whole (text lines, jieba's format, or the service's JSON; later files
    win); --dictionary-words-only drops labels the model does not have; evaluate scores with it."""
    data = tmp_path / "input.txt"
    data.write_text("华星公司在南京发布了新手机\n阿里云很好\n", encoding="utf-8")
    jieba = tmp_path / "userdict.txt"
    jieba.write_text("华星公司 10 nt\n阿里云 5 nz\n", encoding="utf-8")
    model = str(SHIPPED / "zh-seg")
    status, plain, _ = run_cli(capsys, "predict", model, str(data), "--device", "cpu")
    assert status == 0 and plain.splitlines()[0].startswith("华星 公司 ")
    # a segmenter takes a labelled entry's word (jieba's tags are not its labels, and it has none)
    status, labelled, _ = run_cli(capsys, "predict", model, str(data), "--dictionary", str(jieba), "--device", "cpu")
    assert status == 0 and labelled.splitlines() == ["华星公司 在 南京 发布 了 新 手机", "阿里云 很 好"]
    status, out, _ = run_cli(capsys, "predict", model, str(data), "--dictionary", str(jieba),
                             "--dictionary-words-only", "--device", "cpu")
    assert status == 0 and out == labelled

    stored = tmp_path / "brands.json"
    stored.write_text(json.dumps({"entries": [{"text": "华星公司", "label": "LOC"}]}), encoding="utf-8")
    later = tmp_path / "later.txt"
    later.write_text("华星公司\tORG\n", encoding="utf-8")
    status, out, _ = run_cli(capsys, "predict", str(SHIPPED / "zh-ner"), str(data), "--dictionary", str(stored),
                             "--dictionary", str(later), "--device", "cpu")
    assert status == 0 and json.loads(out.splitlines()[0])["spans"][0] == [0, 4, "ORG"]

    gold = tmp_path / "gold.seg"
    gold.write_text("华星公司 在 南京 发布 了 新 手机\n", encoding="utf-8")
    scores = []
    for extra in ([], ["--dictionary", str(jieba), "--dictionary-words-only"]):
        status, out, _ = run_cli(capsys, "evaluate", model, str(gold), "--json", *extra)
        scores.append(json.loads(out)["f1"])
    assert scores[1] == 100.0 > scores[0]


def test_bad_dictionary_files_are_one_line_errors(tmp_path, capsys):
    data = tmp_path / "input.txt"
    data.write_text("阿里云很好\n", encoding="utf-8")
    model = str(SHIPPED / "zh-seg")
    bad = tmp_path / "bad.txt"
    bad.write_text("阿里云\n阿 里 云 很\n", encoding="utf-8")
    assert "bad.txt, line 2: expected 'word'" in cli_error(capsys, "predict", model, str(data), "--dictionary", str(bad))
    bad.write_bytes(b'{"entries": [1, 2]}')
    assert "bad.txt: entry 0" in cli_error(capsys, "predict", model, str(data), "--dictionary", str(bad))
    bad.write_bytes(b"\xff\xfe\x00\x00")
    assert "not UTF-8" in cli_error(capsys, "evaluate", model, str(data), "--dictionary", str(bad))
    assert "missing.txt" in cli_error(capsys, "predict", model, str(data), "--dictionary", str(tmp_path / "missing.txt"))


def test_predict_tags_lines_in_sentence_pieces(seg_run, tmp_path, capsys):
    """seqtag predict cuts each line as the service does (every sentence end, pieces of at most --window
    characters): a line of two sentences comes out as the two sentences would alone; --window 0 keeps lines
    whole; evaluate scores lines whole unless given --window."""
    first, second = "我们喜欢看书。", "他在北京工作iPhone15很贵！"
    data = tmp_path / "input.txt"
    data.write_text(f"{first}{second}\n{first}\n{second}\n", encoding="utf-8")
    model = str(seg_run / "best")
    status, out, _ = run_cli(capsys, "predict", model, str(data), "--format", "jsonl")
    joined, alone1, alone2 = [json.loads(line)["spans"] for line in out.splitlines()]
    assert status == 0 and joined == alone1 + [[a + len(first), b + len(first), t] for a, b, t in alone2]
    status, whole, _ = run_cli(capsys, "predict", model, str(data), "--format", "jsonl", "--window", "0")
    assert status == 0 and whole.splitlines()[1:] == out.splitlines()[1:]
    status, tiny, _ = run_cli(capsys, "predict", model, str(data), "--window", "3")
    assert status == 0 and all(len(word) <= 3 or word == "iPhone15" for word in tiny.split())
    assert "--window must be 0" in cli_error(capsys, "predict", model, str(data), "--window", "-1")
    gold = tmp_path / "gold.seg"
    gold.write_text("我们 喜欢 看 书 。 他 在 北京 工作 。\n", encoding="utf-8")
    for window in ("0", "256"):
        status, out, _ = run_cli(capsys, "evaluate", model, str(gold), "--json", "--window", window)
        assert status == 0 and json.loads(out)["sentences"] == 1


def test_the_program_freezes_loaded_objects_out_of_the_collector(seg_run, monkeypatch):
    """As the `seqtag` program, loading a model ends with gc.freeze() (full collections would otherwise walk
    torch's objects, ~30 ms each); called from Python, main() leaves the caller's collector alone."""
    import gc

    import seqtag.cli as cli

    gc.unfreeze()
    try:
        cli._load_pipeline(str(seg_run / "best"), "cpu")
        assert gc.get_freeze_count() == 0
        monkeypatch.setattr(cli, "_program", True)
        cli._load_pipeline(str(seg_run / "best"), "cpu")
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


def test_predict_jsonl_with_scores(seg_run, tmp_path, capsys):
    """--scores adds each span's confidence to the jsonl records (same order as "spans"); the output still
    reads back as the same spans; other formats refuse it."""
    from seqtag.training.readers import read_corpus

    data = tmp_path / "input.txt"
    data.write_text("\n".join(PREDICT_LINES) + "\n", encoding="utf-8")
    model = str(seg_run / "best")
    status, plain, _ = run_cli(capsys, "predict", model, str(data), "--format", "jsonl")
    status, scored, _ = run_cli(capsys, "predict", model, str(data), "--format", "jsonl", "--scores")
    assert status == 0
    records = [json.loads(line) for line in scored.splitlines()]
    assert [r["spans"] for r in records] == [json.loads(line)["spans"] for line in plain.splitlines()]
    assert all(len(r["scores"]) == len(r["spans"]) and all(0 <= x <= 1 for x in r["scores"]) for r in records)
    assert sum(len(r["scores"]) for r in records) > 0
    path = tmp_path / "scored.jsonl"
    path.write_text(scored, encoding="utf-8")
    assert [[(s.start, s.end, s.label) for s in e.spans] for e in read_corpus(path, "jsonl")] == [
        [tuple(sp) for sp in r["spans"]] for r in records if r["text"]]
    assert "--scores needs --format jsonl" in cli_error(capsys, "predict", model, str(data), "--format", "column",
                                                        "--scores")
