"""Bulk tagging on Ray Data (``seqtag bulk``) against ``seqtag predict`` on the same text and model: throughput
with 1 and 2 actors on a local Ray cluster, the output compared span for span, and Ray's cost per block."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
import time
from pathlib import Path

from bench.common import Context, Table, median, ratio, read_seg_lines, say_progress, skipped
from bench.inprocess import run_process
from seqtag.models.runtime import usable_cores

TITLES = ("Bulk tagging on Ray Data", "Ray Data: cost per block")
OVERHEAD_CHUNKS = (4096, 256)  # rows per block of the no-op pipeline: the difference gives the cost per block
SMOKE_OVERHEAD_CHUNKS = (64, 4)


def run(ctx: Context) -> list[Table]:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
        return skipped(TITLES, "not measured: Ray Data is not installed (`pip install -e .[ray]`)")
    model = ctx.seg_model()
    if model is None:
        return skipped(TITLES, ctx.no_models_note() if not ctx.models() else "not measured: no seg model")
    import ray

    from seqtag.ray import connect

    started = time.perf_counter()
    train, origin = ctx.train_file()
    lines = ["".join(line.split()) for line in read_seg_lines(train)]
    text_file = ctx.workdir / "bulk-input.txt"
    text_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    chars = sum(len(line) for line in lines)
    cores = usable_cores()
    owned = not ray.is_initialized()
    t0 = time.perf_counter()
    connect(num_cpus=cores)
    cluster_start = time.perf_counter() - t0
    try:
        return [throughput(ctx, model, text_file, lines, chars, origin, cores, cluster_start, started),
                block_overhead(ctx, text_file, len(lines), started)]
    finally:
        if owned:
            ray.shutdown()


def throughput(ctx: Context, model, text_file: Path, lines: list[str], chars: int, origin: str, cores: int,
               cluster_start: float, started: float) -> Table:
    from seqtag.ray import read_output, run_bulk

    table = Table(TITLES[0], ["command", "wall s (median)", "chars/s", "vs seqtag predict", "spans as predict"])
    predict_out = ctx.workdir / "bulk-predict.jsonl"
    predict_cmd = [sys.executable, "-m", "seqtag.cli", "predict", str(model.path), str(text_file),
                   "--format", "jsonl", "--output", str(predict_out), "--device", "cpu"]
    devnull = ctx.workdir / "bulk-stdout.out"
    run_process(predict_cmd, devnull)  # warm-up: file cache
    predict_s = [run_process(predict_cmd, devnull) for _ in range(ctx.repeats)]
    say_progress("bulk", started, f"seqtag predict: {median(predict_s):.2f} s")
    reference = [[tuple(span) for span in json.loads(line)["spans"]]
                 for line in predict_out.read_text(encoding="utf-8").splitlines()]

    runs: dict[int, list[float]] = {}
    same: dict[int, str] = {}
    for actors in (1, 2):
        out = ctx.workdir / f"bulk-out-{actors}"
        runs[actors] = []
        for _ in range(ctx.repeats):
            shutil.rmtree(out, ignore_errors=True)
            runs[actors].append(run_bulk([str(text_file)], out, str(model.path), actors=actors,
                                         device="cpu")["seconds"])
        same[actors] = identity(read_output(out), lines, reference)
        say_progress("bulk", started, f"seqtag bulk, {actors} actor(s): {median(runs[actors]):.2f} s, {same[actors]}")

    whole_cmd = [sys.executable, "-m", "seqtag.cli", "bulk", str(model.path), str(text_file),
                 str(ctx.workdir / "bulk-out-process"), "--device", "cpu"]
    whole_s = run_process(whole_cmd, devnull)  # its own local cluster: start-up and shut-down included

    base = median(predict_s)
    table.add("seqtag predict (whole process)", base, chars / base, "1.00×", "–")
    for actors in (1, 2):
        threads = max(1, cores // actors)
        wall = median(runs[actors])
        table.add(f"seqtag bulk, {actors} actor{'s' if actors > 1 else ''} × {threads} thread"
                  f"{'s' if threads > 1 else ''}, cluster running", wall, chars / wall, ratio(base, wall),
                  same[actors])
    table.add("seqtag bulk, 1 actor, whole process (starts its own local cluster)", whole_s, chars / whole_s,
              ratio(base, whole_s), "–")
    table.notes += [
        f"text: {origin} with the spaces removed, {len(lines):,} lines, {chars:,} characters; model "
        f"{model.name} on cpu ({cores} cores); {ctx.repeats_text}, after one warm-up run of seqtag predict",
        "seqtag predict: `python -m seqtag.cli predict MODEL FILE --format jsonl --output FILE`, start-up "
        "included; its output is the reference of the last column",
        f"seqtag bulk, cluster running: `run_bulk` (what `seqtag bulk --ray ADDRESS` runs) on a local Ray cluster "
        f"started once before (ray.init(num_cpus={cores}), {cluster_start:.1f} s, not counted); each run starts "
        "its actors and loads the model in each, reads the file in chunks of 4096 lines, tags, writes Parquet to "
        "a hidden directory and renames it into place; the time is all of that",
        "spans as predict: lines whose spans (start, end, label) are exactly seqtag predict's, out of all lines",
        "vs seqtag predict: seqtag predict's wall time over this row's (above 1: faster); the target is 0.80×",
    ]
    return table


def identity(output, lines: list[str], reference: list[list[tuple]]) -> str:
    texts = output.column("text").to_pylist()
    if texts != lines:
        return f"texts differ ({len(texts):,} rows out, {len(lines):,} lines in)"
    got = [list(zip(s, e, lab)) for s, e, lab in zip(output.column("starts").to_pylist(),
                                                      output.column("ends").to_pylist(),
                                                      output.column("labels").to_pylist())]
    equal = sum(1 for a, b in zip(got, reference) if [tuple(x) for x in a] == [tuple(x) for x in b])
    return f"{equal:,} of {len(reference):,}" + (" (identical)" if equal == len(reference) == len(got) else "")


class NoOp:
    """A map_batches actor that tags nothing: empty span columns, as cheap as a batch can be."""

    def __call__(self, batch):
        import pyarrow as pa

        from seqtag.ray import span_columns
        from seqtag.models.spans import SpanTable

        if pa.types.is_list(batch.schema.field("text").type):
            batch = pa.table({"text": pa.concat_arrays([c.flatten() for c in batch.column("text").chunks])})
        for name, column in zip(("starts", "ends", "labels"),
                                span_columns(SpanTable.empty(batch.num_rows, []), batch.num_rows)):
            batch = batch.append_column(name, column)
        return batch


def block_overhead(ctx: Context, text_file: Path, rows: int, started: float) -> Table:
    """The bulk pipeline's read -> cut -> map (one actor) -> write with a no-op actor, at two chunk sizes:
    (time with more blocks - time with fewer) / (the difference in blocks) is Ray's cost per block."""
    import ray

    from seqtag.ray import read_dataset

    table = Table(TITLES[1], ["rows per block", "blocks", "wall s (median)", "ms per block (all of it)"])
    times: dict[int, float] = {}
    chunks = SMOKE_OVERHEAD_CHUNKS if ctx.smoke else OVERHEAD_CHUNKS
    blocks = {chunk: math.ceil(rows / chunk) for chunk in chunks}
    for chunk in chunks:
        seconds = []
        for _ in range(ctx.repeats):
            out = ctx.workdir / f"noop-{chunk}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            ds = read_dataset([str(text_file)], "text", chunk).map_batches(
                NoOp, batch_size=None, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1),
                num_cpus=0.5)
            ds.write_parquet(str(out))
            seconds.append(time.perf_counter() - t0)
        times[chunk] = median(seconds)
        table.add(chunk, blocks[chunk], times[chunk], 1000 * times[chunk] / blocks[chunk])
    few, many = chunks
    per_block = (times[many] - times[few]) / max(1, blocks[many] - blocks[few])
    say_progress("bulk", started, f"cost per block {1000 * per_block:.1f} ms")
    table.notes += [
        f"Ray's cost per block: {1000 * per_block:.1f} ms = (wall at {many} rows per block - wall at {few}) / "
        f"({blocks[many]} - {blocks[few]} blocks), a no-op actor in place of the model (reads, cuts the file into "
        "one block per chunk, passes each block through the actor, writes Parquet: what every block of "
        "`seqtag bulk` costs besides the tagging); each run also pays a fixed cost (an actor's start, the "
        "dataset's planning), included in the wall time",
        f"with seqtag bulk's default of 4096 lines per block (~180k characters of CTB6 text) the cost per block "
        "is a small share of the block's tagging time (see the table above for chars/s)",
    ]
    return table
