"""A newcomer's first hour with `seqtag train` and `seqtag evaluate`: what the commands say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import TINY_FLAGS, train_tiny, write_corpora
from seqtag.cli import build_parser, main



def test_train_help_describes_every_option_with_its_real_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "PydanticUndefined" not in text
    assert "OPTIM." not in text and "TOP." not in text
    assert "(default: 30; ner: 50)" in text and "(default: 256; ner: 200)" in text
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if "--epochs" in a.option_strings)
    assert train.help.startswith("passes over")
    actions = build_parser()._subparsers._group_actions[0].choices["train"]._actions
    for action in actions:
        assert action.help and action.help.strip(), action.option_strings
    for action in actions:
        if {"--init-from", "--export"} & set(action.option_strings):
            assert "default" not in action.help


def test_training_without_dev_says_what_it_keeps(tmp_path, capsys):
    train, _ = write_corpora(tmp_path, "seg")
    status = main(["train", "--task", "seg", "--train", str(train), "--out", str(tmp_path / "run"),
                   "--epochs", "1", *TINY_FLAGS])
    err = capsys.readouterr().err
    assert status == 0
    assert "-1.00" not in err and "no --dev file" in err and "last epoch" in err
    assert err.strip().splitlines()[-1].startswith(f"serve it: seqtag serve --models {tmp_path / 'run' / 'best'}")


def test_warm_up_is_capped_for_a_small_corpus(tmp_path, capsys):
    train_tiny(tmp_path, "seg", epochs=1, extra_flags=("--warmup-steps", "200"))
    err = capsys.readouterr().err
    assert "warm-up shortened to 0 steps" in err  # 5 steps in all: a tenth is 0


def test_export_of_an_untrained_model_warns(tmp_path, capsys):
    train_tiny(tmp_path, "ner", epochs=1, extra_flags=("--lr", "1e-9", "--export", str(tmp_path / "exported")))
    err = capsys.readouterr().err
    assert "exported to" in err
    assert "has likely not learned yet" in err


@pytest.fixture(scope="module")
def pos_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("pos"), "pos", epochs=1)


def test_evaluate_a_pos_model_on_words_only_scores_the_words(pos_run, capsys):
    dev = json.loads((pos_run / "best" / "config.json").read_text(encoding="utf-8"))["training"]["dev"]
    capsys.readouterr()
    main(["evaluate", str(pos_run / "best"), dev, "--tag-column", "none", "--json"])
    scores = json.loads(capsys.readouterr().out)
    assert "pos_accuracy" not in scores and scores["f1"] == scores["word_f1"] > 0


def test_evaluate_warns_when_no_label_can_match(pos_run, tmp_path, capsys):
    other = tmp_path / "ctb.wordpos"
    other.write_text("我_PN 喜欢_VV 音乐_NN 。_PU\n", encoding="utf-8")
    capsys.readouterr()
    main(["evaluate", str(pos_run / "best"), str(other), "--format", "wordpos"])
    err = capsys.readouterr().err
    assert "seqtag: warning: none of the file's labels" in err and "--tag-column none" in err


def test_a_few_spans_inside_a_latin_run_are_left_out_not_fatal(tmp_path, capsys):
    """Weibo's case: a handful of gold spans end inside a Latin/digit run. Training goes on without their
    sentences and says so; past the threshold it stops and suggests --units chars."""
    from tests.fixtures import write_ner_corpus

    train = write_ner_corpus(tmp_path, "train.bmes", n=150, seed=3)
    odd = "".join(f"{c} {t}\n" for c, t in zip("买iPhone15了", ["O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "I-ORG",
                                                             "E-ORG", "O", "O", "O"]))
    train.write_text(train.read_text(encoding="utf-8") + "\n" + odd, encoding="utf-8")
    status = main(["train", "--task", "ner", "--train", str(train), "--out", str(tmp_path / "run"), "--epochs", "1",
                   *TINY_FLAGS])
    err = capsys.readouterr().err
    assert status == 0 and "1 gold span(s) end inside a unit" in err and "1 sentence(s) are left out" in err
    with pytest.raises(SystemExit):
        main(["train", "--task", "ner", "--train", str(train), "--out", str(tmp_path / "run2"), "--epochs", "1",
              "--max-misaligned", "0.001", *TINY_FLAGS])
    assert "--units chars" in capsys.readouterr().err
