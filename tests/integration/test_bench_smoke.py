"""The benchmark suite runs end to end in --smoke mode (tiny sizes; no timing is checked)."""

from __future__ import annotations

from bench import inprocess, service, training
from bench.inprocess import encoder_flops_per_pass
from bench.run import main
from seqtag.models.tagger import Tagger, TaggerConfig

HEADER_KEYS = ("date", "machine", "GPU", "Python", "torch", "tokenizers", "git commit")


def test_smoke_run_writes_every_table(tmp_path):
    out = tmp_path / "B.md"
    # the load benchmark has its own smoke test (test_bench_load_smoke.py)
    assert main(["--smoke", "--only", "inprocess", "service", "training", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# seqtag benchmarks")
    for key in HEADER_KEYS:
        assert f"\n| {key} | " in text, key
    for title in (*inprocess.TITLES, *service.TITLES, *training.TITLES):
        assert f"\n## {title}\n" in text, title
    assert ": failed\n" not in text
    # the measured tables have rows (only the Viterbi-placement one may be empty, on a machine without CUDA;
    # smoke runs take the large-batch path on any device)
    for title in ("In-process tagging throughput", "Service throughput and latency", "Training throughput",
                  "Dynamic int8: accuracy and batch-mates", "Large batches on CUDA"):
        section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
        assert "\n|---" in section, title
    # float32 answers never depend on the batch
    mates = text.split("\n## Dynamic int8: accuracy and batch-mates\n", 1)[1].split("\n## ", 1)[0]
    floats = [row for row in mates.splitlines() if row.startswith("| ") and " | float32 | " in row]
    assert floats and all(row.rstrip(" |").split(" | ")[-1].startswith("0 of ") for row in floats), floats


def test_encoder_flops_formula():
    # LSTM, 2 layers, bidirectional, H=3, unit_dim 4 + 2 bigrams of 2, 4 tags:
    # layer 1: 2 dirs * 2 * 4 gates * 3 * (8 + 3) = 528; layer 2: 2 * 2 * 4 * 3 * (6 + 3) = 432 per real unit;
    # projection: 2 * 6 * 4 = 48 per padded position
    tagger = Tagger(TaggerConfig(unit_dim=4, bigram_dim=2, hidden=3, layers=2), num_units=10, num_bigrams=5,
                    num_tags=4)
    assert encoder_flops_per_pass(tagger, real_units=10, padded_units=12) == 10 * (528 + 432) + 12 * 48


def test_encoder_flops_formula_cnn():
    # CNN, C=3 channels, kernel 3, 2 blocks, 4 tags, every padded position: the input layer is folded into
    # the embedding tables at inference (no products); blocks 2 * (2 * 9 * 6) = 216; projection 2 * 3 * 4 = 24
    tagger = Tagger(TaggerConfig(unit_dim=4, bigram_dim=2, hidden=3, layers=2, encoder="cnn"), num_units=10,
                    num_bigrams=5, num_tags=4)
    assert encoder_flops_per_pass(tagger, real_units=10, padded_units=12) == 12 * (216 + 24)
