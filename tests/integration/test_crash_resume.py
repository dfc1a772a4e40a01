"""Crash-safe training: SIGKILL a real training process mid-epoch, then --resume it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqtag.models.checkpoint import load_checkpoint
from tests.fixtures import TINY_FLAGS, write_corpora

ROOT = Path(__file__).resolve().parents[2]


def _train_cmd(train: Path, dev: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "seqtag.cli", "train", "--task", "seg", "--train", str(train),
            "--dev", str(dev), "--out", str(out), *TINY_FLAGS, "--save-every", "3", *extra]


def _state(out: Path) -> dict:
    return json.loads((out / "last" / "trainer_state.json").read_text(encoding="utf-8"))["state"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    train, dev = write_corpora(tmp_path, "seg")
    # more sentences per epoch so a kill lands mid-epoch
    train.write_text(train.read_text(encoding="utf-8") * 6, encoding="utf-8")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_train_cmd(train, dev, out, "--epochs", "3"), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state_file = out / "last" / "trainer_state.json"
            if state_file.exists() and _state(out)["step"] >= 6 and _state(out)["epoch_step"] > 0:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("training never wrote a mid-epoch snapshot")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = _state(out)
    assert killed_at["epoch"] < 3
    # what is on disk is whole: both checkpoints load, no temp dirs were left half-renamed into place
    load_checkpoint(out / "last")
    if (out / "best").exists():
        load_checkpoint(out / "best")
    resumed = subprocess.run(_train_cmd(train, dev, out, "--epochs", "3", "--resume"), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = _state(out)
    assert final["epoch"] == 3
    # resumed from the snapshot, not from scratch: the step counter continued
    assert final["step"] > killed_at["step"]
    epochs = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 3
    load_checkpoint(out / "best")
