"""Training: characters/s of optimisation steps with the zh-seg recipe through the Trainer, and the time a logged
run took to reach the dev target (read from its ``log.jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bench.common import REPO_ROOT, Context, Table, median, timed

RECIPE = REPO_ROOT / "training" / "recipes" / "ctb6-seg.toml"
TITLES = ("Training throughput", "Time to reach the dev target")
STEPS, SMOKE_STEPS = 20, 1  # optimisation steps per timed pass
SMOKE_BATCH_SIZE = 8  # sentences per step in --smoke mode (the recipe's is 32)


def run(ctx: Context) -> list[Table]:
    return [throughput(ctx), time_to_target(ctx)]


def throughput(ctx: Context) -> Table:
    from seqtag.cli import TASK_DEFAULTS
    from seqtag.training.config import build_config, load_config_file
    from seqtag.training.trainer import Trainer

    table = Table(TITLES[0], ["recipe", "device", "steps per pass", "sentences per step", "chars/s", "units/s",
                              "s per step", "first pass s per step"])
    train_file, origin = ctx.train_file()
    overrides: dict[str, Any] = {
        "train": str(train_file), "out": str(ctx.workdir / "train-run"),
        "run": {"device": str(ctx.device), "progress": False, "save_every": 0},
    }
    if ctx.smoke:
        overrides["optim"] = {"batch_size": SMOKE_BATCH_SIZE}
    config = build_config(TASK_DEFAULTS["seg"], load_config_file(RECIPE), overrides)
    steps = SMOKE_STEPS if ctx.smoke else STEPS
    threads = torch.get_num_threads()
    try:
        trainer = Trainer(config)  # the CPU trainer takes every core (run.threads 0), as `seqtag train` does
        used_threads = torch.get_num_threads()
        epoch = trainer._epoch_batches(0)
        chosen = [epoch[k % len(epoch)] for k in range(steps)]  # the same batches in every pass
        total = trainer.total_steps()
        generator = torch.Generator().manual_seed(config.run.seed)
        step = 0

        def one_pass() -> float:
            """Seconds for one optimisation step on each chosen batch."""
            nonlocal step
            seconds = 0.0
            for idx in chosen:
                lr = trainer.lr_at(step, total)
                seconds += timed(lambda: trainer._step(idx, lr, generator), sync=trainer.device)
                step += 1
            return seconds

        first = one_pass()
        seconds = [one_pass() for _ in range(ctx.repeats)]
    finally:
        torch.set_num_threads(threads)
    texts = [trainer.train_examples[k].text for k in trainer.data.kept]
    sentences = sum(len(idx) for idx in chosen)
    chars = sum(sum(not c.isspace() for c in texts[i]) for idx in chosen for i in idx)
    units = sum(len(trainer.data.ids[i]) for idx in chosen for i in idx)
    table.add(RECIPE.name, str(trainer.device), steps, sentences / steps, median([chars / s for s in seconds]),
              median([units / s for s in seconds]), median(seconds) / steps, first / steps)
    amp = " with bf16 autocast" if trainer.amp else ""
    if config.optim.adversarial:
        amp += f"; with the recipe's adversarial training (eps {config.optim.adversarial}), a second forward and backward"
    table.notes += [
        f"corpus: {origin}; {len(trainer.data.ids):,} sentences encoded, {len(epoch):,} batches per epoch "
        f"(batch size {config.optim.batch_size}, ≤ {config.optim.max_batch_units} padded units)"
        + (f"; --smoke: batch size {SMOKE_BATCH_SIZE} instead of the recipe's" if ctx.smoke else ""),
        f"the zh-seg recipe's model (hidden {config.model.hidden}, unit dim {config.model.unit_dim}, bigram dim "
        f"{config.model.bigram_dim}) built by `Trainer`; a pass is one `Trainer._step` (forward, CRF loss, backward, "
        f"clip, AdamW{amp}) on each of the first epoch's first {steps} batches; the first pass meets their shapes "
        f"for the first time (kernel set-up per shape), the others are timed: medians over {ctx.repeats_text}",
        f"{used_threads} torch threads on {trainer.device}; evaluation, snapshots and data loading are not timed",
    ]
    return table


def time_to_target(ctx: Context) -> Table:
    table = Table(TITLES[1], ["run", "target dev F1", "reached at epoch", "train s to target",
                              "train + eval s to target", "best dev F1 (epoch)", "epochs logged"])
    if ctx.run_dir is None:
        table.add("—", ctx.dev_target, "not measured in this run", None, None, None, None)
        table.notes.append("pass --run-dir RUN (a `seqtag train --out RUN` directory) to read RUN/log.jsonl")
        return table
    log = ctx.run_dir / "log.jsonl"
    if not log.exists():
        table.add(str(ctx.run_dir), ctx.dev_target, "not measured in this run", None, None, None, None)
        table.notes.append(f"{log} does not exist")
        return table
    records = read_log(log)
    reached, train_s, total_s = None, 0.0, 0.0
    for record in records:
        train_s += record.get("train_seconds", 0.0)
        total_s += record.get("train_seconds", 0.0) + record.get("dev", {}).get("seconds", 0.0)
        if record.get("dev", {}).get("f1", -1) >= ctx.dev_target:
            reached = record["epoch"]
            break
    best = max(records, key=lambda r: r.get("dev", {}).get("f1", -1), default=None)
    best_text = f"{best['dev']['f1']:.2f} ({best['epoch']})" if best and "dev" in best else None
    if reached is None:
        table.add(str(ctx.run_dir), ctx.dev_target, "not reached", None, None, best_text, len(records))
    else:
        table.add(str(ctx.run_dir), ctx.dev_target, reached, train_s, total_s, best_text, len(records))
    table.notes += [
        f"from {log}: epoch records of the run as it was trained (its own machine and device, not this run's); "
        "train s sums `train_seconds` of the epochs up to the first with dev F1 ≥ the target, train + eval s adds "
        "their dev evaluation `seconds` (snapshots and start-up are not logged)",
        "target: --dev-target (default 95.0 F1)",
    ]
    return table


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
