"""Data-parallel training: 2 CPU processes on gloo through torchrun vs one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import TINY_FLAGS, write_corpora

ROOT = Path(__file__).resolve().parents[2]


def _best_f1(out: Path) -> float:
    return max(json.loads(line)["dev"]["f1"] for line in (out / "log.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    train, dev = write_corpora(tmp_path, "seg")
    train.write_text(train.read_text(encoding="utf-8") * 4, encoding="utf-8")
    args = ["train", "--task", "seg", "--train", str(train), "--dev", str(dev), *TINY_FLAGS, "--epochs", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "seqtag.cli", *args, "--out", str(single)],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    multi = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "seqtag.cli", *args, "--out", str(multi), "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # rank 0 alone wrote the run directory and the log
    assert (multi / "best" / "model.safetensors").exists() and (multi / "last").exists()
    lines = (multi / "log.jsonl").read_text().splitlines()
    assert len(lines) == 4
    # each rank saw half the batches per epoch
    single_steps = json.loads((single / "log.jsonl").read_text().splitlines()[0])["step"]
    assert json.loads(lines[0])["step"] == single_steps // 2
    assert _best_f1(multi) > 80 and abs(_best_f1(multi) - _best_f1(single)) < 10
