"""The models shipped in checkpoints/: cards match checkpoints, size limits, they load and tag."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from seqtag.models.checkpoint import read_config
from seqtag.models.pipeline import Pipeline
from seqtag.training.modelcard import CORPORA, render_card

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = ROOT / "checkpoints"
SHIPPED = {"zh-seg": ("seg", "ctb6"), "zh-seg-fast": ("seg", "ctb6"), "zh-pos": ("pos", "ud-gsd"),
           "zh-ner": ("ner", "msra-news")}
# Dev F1 each shipped model must keep (the tagging-core issue's targets; zh-seg-fast: the speed variant's bar)
DEV_TARGETS = {"zh-seg": 96.4, "zh-seg-fast": 95.5, "zh-pos": 90.0, "zh-ner": 90.0}
MAX_BYTES = 15 * 1000 * 1000  # the lexicon issue's bound: a model with its lexicon stays under 15 MB
SAMPLE = "张三在北京大学读书，后来去了上海的阿里巴巴工作。iPhone15 售价 5999 元。"


def shipped() -> list[Path]:
    return sorted(p for p in CHECKPOINTS.iterdir() if (p / "config.json").exists()) if CHECKPOINTS.exists() else []


def test_default_models_are_shipped():
    names = {p.name for p in shipped()}
    assert set(SHIPPED) <= names, f"missing shipped models: {set(SHIPPED) - names}"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_card_matches_checkpoint(name):
    directory = CHECKPOINTS / name
    config = read_config(directory)
    task, corpus = SHIPPED[name]
    assert config["task"] == task
    card = (directory / "README.md").read_text(encoding="utf-8")
    assert card == render_card(directory, name, corpus), "model card is stale: rerun python -m seqtag.training.modelcard"
    assert CORPORA[corpus]["licence"] in card
    f1 = config["dev_metrics"]["f1"]
    assert f"| f1 | {f1:.2f} |" in card
    assert config.get("command", "").startswith("seqtag train"), "the training command must be recorded"
    assert f1 >= DEV_TARGETS[name], f"{name}: dev F1 {f1:.2f} is below its target {DEV_TARGETS[name]}"
    network = "gated-CNN-CRF" if config["tagger"]["encoder"] == "cnn" else "Bi-LSTM-CRF"
    assert network in card.splitlines()[2]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_size_limit(name):
    size = sum(p.stat().st_size for p in (CHECKPOINTS / name).iterdir() if p.is_file())
    assert size <= MAX_BYTES, f"{name} is {size / 1e6:.1f} MB"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_loads_and_tags(name):
    pipeline = Pipeline.load(CHECKPOINTS / name, "cpu")
    [spans] = pipeline.predict([SAMPLE], scores=True)
    assert spans, f"{name} found nothing in the sample"
    for span in spans:
        assert SAMPLE[span.start:span.end].strip()
        assert 0.0 <= span.score <= 1.0 + 1e-4
    if pipeline.task == "ner":
        labels = {s.label for s in spans}
        assert labels <= {"PER", "LOC", "ORG"} and "PER" in labels
    else:
        covered = "".join(SAMPLE[s.start:s.end] for s in spans)
        assert covered == re.sub(r"\s", "", SAMPLE)


def test_readme_commands_exist():
    for target in ("serve", "test"):
        result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make serve" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^\s*make test\b", ci, re.M), ".ci/run must call the README's test command"


def test_readme_python_example_runs(capsys, monkeypatch):
    """The README's "In Python" block runs as written (from the repository root) and tags as it says."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("### In Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "'北京'" in printed[0]
    assert namespace["table"].counts.tolist() == [len(spans) for spans in namespace["nlp"].predict(namespace["texts"])]
    forced = namespace["nlp"].predict(namespace["texts"], forced=[[namespace["Span"](4, 7)], []])[0]
    assert (4, 7) in [(s.start, s.end) for s in forced]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_traditional_text_tags_like_its_simplified_form(name):
    """The shipped models learned simplified text; a traditional character they never saw looks up as its
    simplified form (the codec's t2s_unseen), so the same sentence in either script gets the same spans."""
    pipeline = Pipeline.load(CHECKPOINTS / name, "cpu")
    traditional, simplified = "我愛北京天安門，張三在臺灣大學讀書。", "我爱北京天安门，张三在台湾大学读书。"
    assert pipeline.predict([traditional]) == pipeline.predict([simplified])


def test_a_soft_dictionary_is_weighed_and_a_hard_one_obeyed():
    """zh-seg reads jieba's lexicon: a soft entry changes the words where the context agrees with it, the context
    overrules it where it does not, and a hard entry always wins."""
    nlp = Pipeline.load(CHECKPOINTS / "zh-seg", device="cpu")
    if nlp.codec.lexicon is None:
        pytest.skip("zh-seg ships without lexicon features")

    def words(text: str, **kw) -> list[str]:
        return [text[s.start:s.end] for s in nlp.predict([text], **kw)[0]]

    text = "李达康在京州市委工作。"  # a made-up city: the model alone splits it
    assert "京州" not in words(text)
    assert "京州" in words(text, dictionary=["京州"], dictionary_mode="soft")
    text = "北京大学生前来应聘。"  # students of Beijing, not Peking University: the context overrules a soft entry
    assert words(text, dictionary=["北京大学"], dictionary_mode="soft")[:2] == ["北京", "大学生"]
    assert words(text, dictionary=["北京大学"])[0] == "北京大学"  # hard always wins
    text = "易学习是吕州市委书记。"
    assert words(text, dictionary=["易学习"], dictionary_mode="soft")[:2] == ["易", "学习"]
    assert words(text, dictionary=["易学习"])[0] == "易学习"
