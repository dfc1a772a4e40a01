"""``seqtag bulk`` on a local Ray cluster: the same spans as ``seqtag predict`` (Pipeline.predict with its
window) from text, JSON-lines and Parquet inputs, scores, dictionaries; SeqtagPredictor on a pandas batch (the
Spark path); and the one-line error without Ray."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from seqtag.cli import main
from seqtag.models.textsplit import DEFAULT_WINDOW
from tests.conftest import CORPORA

MODEL = "zh-seg"  # shipped, and int8 on a CPU: its spans depend on batch-mates, so the chunks must match too


def sample_texts() -> list[str]:
    """200 lines of CTB6 dev without spaces (or written here), an empty line and one past the window."""
    dev = CORPORA / "ctb6" / "dev.seg"
    if dev.exists():
        with open(dev, encoding="utf-8") as fh:
            texts = ["".join(line.split()) for _, line in zip(range(200), fh)]
    else:
        texts = [f"第{i}次会议在北京举行，代表们讨论了经济建设和对外开放的问题。" for i in range(200)]
    texts[7] = ""
    texts[11] = "。".join(texts[12:24]) + "。"  # a few hundred characters: cut by the window
    assert len(texts[11]) > DEFAULT_WINDOW
    return texts


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_texts()


@pytest.fixture(scope="module")
def pipeline():
    import seqtag

    return seqtag.load(MODEL)


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    pytest.importorskip("pyarrow")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def spans_of(table) -> list[list[tuple[int, int, str]]]:
    return [list(zip(s, e, lab)) for s, e, lab in zip(table.column("starts").to_pylist(),
                                                        table.column("ends").to_pylist(),
                                                        table.column("labels").to_pylist())]


def expected(pipeline, texts, **options) -> list[list[tuple[int, int, str]]]:
    """What `seqtag predict` tags (one chunk: fewer than 4096 lines)."""
    return [[(s.start, s.end, s.label) for s in row]
            for row in pipeline.predict(texts, window=DEFAULT_WINDOW, **options)]


def bulk(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(["bulk", MODEL, *argv]) == 0
    return capsys.readouterr().err


@pytest.mark.slow
def test_text_lines_as_seqtag_predict(cluster, capsys, tmp_path, texts, pipeline):
    from seqtag.ray import read_output

    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    err = bulk(capsys, str(source), str(tmp_path / "out"))
    assert "seqtag bulk: wrote" in err and f"{len(texts)} rows" in err
    table = read_output(tmp_path / "out")
    assert table.column_names == ["text", "starts", "ends", "labels"]
    assert table.column("text").to_pylist() == texts
    assert spans_of(table) == expected(pipeline, texts)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]  # renamed into place

    # an existing output is not overwritten unless asked
    with pytest.raises(SystemExit) as exit_info:
        main(["bulk", MODEL, str(source), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_jsonl_two_actors_scores_and_dictionary(cluster, capsys, tmp_path, texts, pipeline):
    from seqtag.ray import read_output

    source = tmp_path / "in.jsonl"
    with open(source, "w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"id": i, "body": text}, ensure_ascii=False) + "\n")
    words = tmp_path / "words.txt"
    words.write_text("浦东开发\n", encoding="utf-8")
    # batches of 50 texts over 2 actors: the reference tags the same chunks
    bulk(capsys, str(source), str(tmp_path / "out"), "--text-column", "body", "--actors", "2", "--scores",
         "--batch-size", "50", "--dictionary", str(words), "--format", "jsonl")
    table = read_output(tmp_path / "out")
    assert table.column("id").to_pylist() == list(range(len(texts)))
    want, scores = [], []
    for start in range(0, len(texts), 50):
        rows = pipeline.predict(texts[start : start + 50], window=DEFAULT_WINDOW, scores=True,
                                dictionary=["浦东开发"])
        want += [[(s.start, s.end, s.label) for s in row] for row in rows]
        scores += [[s.score for s in row] for row in rows]
    assert spans_of(table) == want
    got_scores = table.column("scores").to_pylist()
    assert [len(row) for row in got_scores] == [len(row) for row in scores]
    flat = lambda rows: [x for row in rows for x in row]  # noqa: E731
    assert flat(got_scores) == pytest.approx(flat(scores), abs=1e-9)  # JSON keeps 10 digits
    if any("浦东开发" in t for t in texts):
        assert any(t[s:e] == "浦东开发" for t, row in zip(texts, want) for s, e, _ in row)


@pytest.mark.slow
def test_parquet_directory_in_jsonl_out(cluster, capsys, tmp_path, texts, pipeline):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"text": texts}), folder / "part-0.parquet")
    bulk(capsys, str(folder), str(tmp_path / "out"), "--format", "jsonl")
    rows = [json.loads(line) for p in sorted((tmp_path / "out").iterdir())
            for line in p.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == texts
    assert [list(zip(r["starts"], r["ends"], r["labels"])) for r in rows] == expected(pipeline, texts)


def test_predictor_on_a_pandas_batch(texts, pipeline):
    """The Spark path (mapInPandas): the same class on a DataFrame, no Ray involved."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from seqtag.ray import SeqtagPredictor

    frame = pd.DataFrame({"doc": list(range(20)), "text": texts[:20]})
    out = SeqtagPredictor(MODEL, threads=1)(frame)
    assert list(out.columns) == ["doc", "text", "starts", "ends", "labels"]
    got = [list(zip(s, e, lab)) for s, e, lab in zip(out["starts"], out["ends"], out["labels"])]
    assert got == expected(pipeline, texts[:20])


def test_without_ray_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    source = tmp_path / "in.txt"
    source.write_text("上海浦东开发与法制建设同步\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["bulk", MODEL, str(source), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seqtag: error:") and "pip install seqtag[ray]" in err and "\n" not in err
    assert not Path(tmp_path / "out").exists()
