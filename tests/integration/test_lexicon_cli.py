"""seqtag train --lexicon, evaluate's seen/unseen recall, and --dictionary-mode soft, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import PERSONS, PLACES, train_tiny
from seqtag.cli import main



@pytest.fixture(scope="module")
def lexicon_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lex") / "lexicon.txt"
    lines = [f"{p} 10 nr" for p in PERSONS[:3]] + [f"{p} 10 ns" for p in PLACES] + ["工作 5 vn", "# a comment"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ner_lex_run(tmp_path_factory, lexicon_file) -> Path:
    return train_tiny(tmp_path_factory.mktemp("nerlex"), "ner", epochs=2,
                      extra_flags=("--lexicon", str(lexicon_file), "--lexicon-dim", "8"))


@pytest.fixture(scope="module")
def ner_plain_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("nerplain"), "ner", epochs=1)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_the_checkpoint_carries_the_lexicon_and_the_training_entities(ner_lex_run, lexicon_file):
    best = ner_lex_run / "best"
    lexicon = json.loads((best / "lexicon.json").read_text(encoding="utf-8"))
    assert lexicon["groups"] == ["WORD", "PER", "LOC", "ORG"]
    assert lexicon["sources"] == [{"name": lexicon_file.name, "licence": "as given by the user", "words": 10}]
    seen = json.loads((best / "seen.json").read_text(encoding="utf-8"))["seen"].split("\n")
    assert set(seen) <= set(PERSONS) | set(PLACES) and seen
    config = json.loads((best / "config.json").read_text(encoding="utf-8"))
    assert config["training"]["lexicon"] == [str(lexicon_file)]


def test_evaluate_reports_seen_and_unseen_entity_recall(ner_lex_run, capsys, tmp_path):
    config = json.loads((ner_lex_run / "best" / "config.json").read_text(encoding="utf-8"))
    train = Path(config["training"]["train"])
    moved = tmp_path / "elsewhere.bmes"  # the training file is not needed: the entities travel with the model
    train.rename(moved)
    try:
        status, out, _ = _run(capsys, "evaluate", str(ner_lex_run / "best"), config["training"]["dev"], "--json")
    finally:
        moved.rename(train)
    scores = json.loads(out)
    assert status == 0 and {"seen_recall", "unseen_recall", "unseen_rate"} <= scores.keys()
    status, out, _ = _run(capsys, "evaluate", str(ner_lex_run / "best"), config["training"]["dev"])
    assert "seen_recall" in out and "unseen_recall" in out


def test_predict_with_a_soft_dictionary(ner_lex_run, capsys, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("马云在杭州工作。\n", encoding="utf-8")
    soft = tmp_path / "soft.txt"
    soft.write_text("马云 PER\n", encoding="utf-8")
    status, out, err = _run(capsys, "predict", str(ner_lex_run / "best"), str(text), "--dictionary", str(soft),
                            "--dictionary-mode", "soft")
    assert status == 0, err
    assert json.loads(out.splitlines()[0])["text"] == "马云在杭州工作。"


def test_soft_mode_on_a_model_without_a_lexicon_is_one_error_line(ner_plain_run, capsys, tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("马云在杭州。\n", encoding="utf-8")
    soft = tmp_path / "soft.txt"
    soft.write_text("马云 PER\n", encoding="utf-8")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["predict", str(ner_plain_run / "best"), str(text), "--dictionary", str(soft),
              "--dictionary-mode", "soft"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert "without lexicon features" in err


def test_a_missing_lexicon_file_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        train_tiny(tmp_path, "seg", epochs=1, extra_flags=("--lexicon", str(tmp_path / "nope.txt")))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "nope.txt" in err and "Traceback" not in err
