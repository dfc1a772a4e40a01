"""The HTTP service as deployed: real uvicorn processes on loopback, one with batching on (default settings) and
one with it off (``SEQTAG_MAX_BATCH_SIZE=1``), loaded side by side with bounded request loops; their memory; and
requests of 32 texts each (how bulk clients call it, and the GPU target's unit: sentences/s over HTTP)."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.common import (Context, MemoryWatch, ModelInfo, Table, http_inputs, median, percentile, ratio,
                          running_servers, skipped)
from seqtag.service.app import serving_threads

TITLES = ("Service throughput and latency", "Service batching ratios", "Service memory",
          "Service with requests of 32 texts")
CONFIGS = {"on": {}, "off": {"SEQTAG_MAX_BATCH_SIZE": "1"}}  # batching -> extra environment
CONCURRENCY = (1, 8, 32, 64)
SMOKE_CONCURRENCY = (1, 2)
RATIO_CONCURRENCY = 32  # where the batched/unbatched throughput ratio is read
BULK_TEXTS = 32  # texts per request in the bulk table
BULK_CONCURRENCY = (8, 32, 64)
# Bulk requests on CUDA: batches big enough for the GPU (the defaults suit a CPU); one and four uvicorn workers.
BULK_CUDA = {"SEQTAG_MAX_BATCH_SIZE": "2048", "SEQTAG_MAX_BATCH_UNITS": "262144", "SEQTAG_MAX_QUEUE": "8192"}
WARMUP_CONCURRENCY = 1  # one sentence per forward pass: the (1, length) shapes light traffic meets
ALONE_BATCH = 16  # the in-process comparison's batch: about what concurrency 32 gives (the batch_size metric)
ALONE_SENTENCES = 256


def run(ctx: Context) -> list[Table]:
    inputs = http_inputs(ctx)
    if isinstance(inputs, str):
        return skipped(TITLES, inputs)
    model, pool = inputs
    if ctx.gpu_only:
        return [bulk_table(ctx, model.name, pool)]
    models = [model] + [m for m in ctx.models() if m.task == "seg" and m.name != model.name]
    levels = SMOKE_CONCURRENCY if ctx.smoke else CONCURRENCY
    with running_servers(ctx, CONFIGS) as servers:  # named "on" and "off"
        memory = {name: MemoryWatch(server.proc.pid) for name, server in servers.items()}
        loaded = {name: server.models() for name, server in servers.items()}
        for watch in memory.values():
            watch.after_load = watch.rss()
            watch.start()
        results: dict[tuple[str, str, int], list[LoadResult]] = {}
        try:
            if not ctx.smoke:  # every sentence once per server and model, untimed: CPU kernels are set up per shape
                for m in models:
                    for server in servers.values():
                        asyncio.run(load(server.base, m.name, pool, WARMUP_CONCURRENCY,
                                         -(-len(pool) // WARMUP_CONCURRENCY), cap_s=600))
            for _ in range(ctx.repeats):  # interleaved: on, off, on, off... at each level
                for m in models:
                    for level in levels:
                        per_worker = requests_per_worker(ctx, level)
                        for name, server in servers.items():
                            result = asyncio.run(load(server.base, m.name, pool, level, per_worker,
                                                      cap_s=time_cap(ctx)))
                            results.setdefault((m.name, name, level), []).append(result)
        finally:
            for watch in memory.values():
                watch.stop()
        for watch in memory.values():
            watch.high_water = watch.vm_hwm()
    alone = {m.name: model_alone(ctx, m, pool) for m in models}  # the servers are gone: the machine is quiet
    return [
        load_table(ctx, [m.name for m in models], pool, levels, results),
        ratio_table(ctx, [m.name for m in models], levels, results, alone),
        memory_table(ctx, memory, loaded),
        bulk_table(ctx, model.name, pool),
    ]


def cuda_or(ctx: Context, on_cuda: int, on_cpu: int) -> int:
    return on_cuda if ctx.device.type == "cuda" else on_cpu


def bulk_configs(ctx: Context) -> dict[str, dict[str, str]]:
    if ctx.device.type == "cuda":  # several workers share the GPU; each gets a few CPU threads, not all
        threads = str(max(1, (os.cpu_count() or 8) // 8))
        return {"1 worker": dict(BULK_CUDA),
                **{f"{n} workers": {**BULK_CUDA, "SEQTAG_WORKERS": str(n), "SEQTAG_TORCH_THREADS": threads,
                                    "TOKENIZERS_PARALLELISM": "false"} for n in (4, 8)}}
    return {"1 worker": {}}


def bulk_table(ctx: Context, model: str, pool: list[str]) -> Table:
    """Requests of BULK_TEXTS sentences each: sentences/s over HTTP with batching on."""
    table = Table(TITLES[3], ["server", "concurrency", "requests", "errors", "sentences/s", "chars/s",
                              "p50 ms", "p99 ms"])
    table.columns[3] = "errors (status: count)"
    levels = SMOKE_CONCURRENCY if ctx.smoke else BULK_CONCURRENCY
    configs = bulk_configs(ctx)
    results: dict[tuple[str, int], list[LoadResult]] = {}
    for name, extra in configs.items():  # one server at a time: each gets the whole machine
        with running_servers(ctx, {name: extra}) as servers:
            base = servers[name].base
            if not ctx.smoke:  # warm-up: every sentence once, in bulk requests
                asyncio.run(load(base, model, pool, 8, -(-len(pool) // (8 * BULK_TEXTS)), cap_s=300,
                                 texts_per_request=BULK_TEXTS))
            for _ in range(ctx.repeats):
                for level in levels:
                    per_worker = 2 if ctx.smoke else max(cuda_or(ctx, 10, 3), -(-cuda_or(ctx, 640, 160) // level))
                    results.setdefault((name, level), []).append(asyncio.run(load(
                        base, model, pool, level, per_worker, cap_s=time_cap(ctx) / 2,
                        texts_per_request=BULK_TEXTS)))
    for name in configs:
        for level in levels:
            runs = results[(name, level)]
            statuses = sum((r.statuses for r in runs), Counter())
            errors = "; ".join(f"{code or 'transport'}: {n}" for code, n in sorted(statuses.items())) or "0"
            table.add(name, level, sum(r.ok for r in runs), errors,
                      median([r.texts / r.seconds for r in runs]), median([r.chars / r.seconds for r in runs]),
                      ms(median([percentile(r.latencies, 50) or 0 for r in runs])),
                      ms(median([percentile(r.latencies, 99) or 0 for r in runs])))
    settings = "; ".join(f"{name}: " + (", ".join(f"{k}={v}" for k, v in extra.items()) or "default settings")
                         for name, extra in configs.items())
    table.notes += [
        f"`POST /v1/segment` with {{\"texts\": [...{BULK_TEXTS} sentences]}} per request (model {model}), "
        f"sentences from {ctx.dev_texts().origin}; batching on, SEQTAG_DEVICE={ctx.device.type}; {settings}",
        "one `seqtag serve` process at a time on 127.0.0.1, warmed up by tagging every sentence once in bulk "
        "requests (untimed); same asyncio aiohttp client as above; requests: total answered 200 over all repeats, "
        "errors: the other answers by HTTP status (503 = over the admission budget, SEQTAG_QUEUE_BUDGET_CHARS "
        "characters in flight, or SEQTAG_MAX_QUEUE pieces already waiting); "
        f"sentences/s, chars/s, p50, p99: medians over {ctx.repeats_text}",
    ]
    if ctx.device.type == "cuda":
        table.notes.append(f"the client is one Python process on the same machine ({os.cpu_count()} cores): at the "
                           "top rows it may be the limit, not the server")
    return table


def time_cap(ctx: Context) -> float:
    """Seconds one load run may take before its workers stop sending."""
    return 10 if ctx.smoke else 60


def requests_per_worker(ctx: Context, concurrency: int) -> int:
    """Fixed per level: about 1,600 requests in all (runs of a second or more batched, ~5 s unbatched, on
    2 CPU cores: shorter runs were noisy), at least 20 per worker (3 in --smoke mode)."""
    return 3 if ctx.smoke else max(20, -(-1600 // concurrency))


# ---- load ----------------------------------------------------------------------------------------------------

@dataclass
class LoadResult:
    seconds: float
    latencies: list[float] = field(default_factory=list)  # of the 200 answers
    chars: int = 0
    texts: int = 0
    errors: int = 0
    statuses: Counter = field(default_factory=Counter)  # of the errors: HTTP status, 0 = transport error

    @property
    def ok(self) -> int:
        return len(self.latencies)


async def load(base: str, model: str, pool: list[str], concurrency: int, per_worker: int,
               cap_s: float, texts_per_request: int = 1) -> LoadResult:
    """``concurrency`` workers, each sending ``per_worker`` requests of ``texts_per_request`` sentences back to
    back (stopping early past ``cap_s``), sharing a pool of as many keep-alive connections as workers."""
    # aiohttp, not httpx: on this 2-core machine httpx's async client itself topped out near 450 requests/s
    # (even on GET /healthz, where aiohttp did 8,000), so it, not the server, set the measured ceiling.
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:
        async def post(texts: list[str]) -> int:
            body = {"text": texts[0]} if texts_per_request == 1 else {"texts": texts}
            async with client.post("/v1/segment", json={**body, "model": model}) as response:
                await response.read()
                return response.status

        def request(k: int) -> list[str]:  # the k-th request's sentences, cycling through the pool
            return [pool[(k * texts_per_request + j) % len(pool)] for j in range(texts_per_request)]

        await asyncio.gather(*(post(request(w)) for w in range(concurrency)))  # open connections
        result = LoadResult(0.0)
        deadline = time.perf_counter() + cap_s

        async def worker(w: int) -> None:
            for i in range(per_worker):
                if time.perf_counter() > deadline:
                    return
                texts = request(w * per_worker + i)
                start = time.perf_counter()
                try:
                    status = await post(texts)
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                if status == 200:
                    result.latencies.append(time.perf_counter() - start)
                    result.chars += sum(map(len, texts))
                    result.texts += len(texts)
                else:
                    result.errors += 1
                    result.statuses[status] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


def load_table(ctx: Context, models: list[str], pool: list[str], levels, results) -> Table:
    table = Table(TITLES[0], ["model", "batching", "concurrency", "requests per worker", "ok", "errors", "texts/s",
                              "chars/s", "p50 ms", "p99 ms"])
    for model in models:
        for level in levels:
            for name in CONFIGS:
                runs = results[(model, name, level)]
                table.add(model, name, level, requests_per_worker(ctx, level), sum(r.ok for r in runs),
                          sum(r.errors for r in runs),
                          median([r.ok / r.seconds for r in runs]), median([r.chars / r.seconds for r in runs]),
                          ms(median([percentile(r.latencies, 50) or 0 for r in runs])),
                          ms(median([percentile(r.latencies, 99) or 0 for r in runs])))
    table.notes += [
        f"`POST /v1/segment` with one sentence per request (`\"model\"`: each of the seg models: "
        f"{', '.join(models)}), sentences from {ctx.dev_texts().origin}",
        "two `seqtag serve` processes (uvicorn, one worker each) on 127.0.0.1 started together: batching on = "
        f"default settings (SEQTAG_MAX_BATCH_SIZE {default('max_batch_size')}, SEQTAG_MAX_WAIT_MS "
        f"{default('max_wait_ms')}), off = SEQTAG_MAX_BATCH_SIZE=1; both with "
        f"SEQTAG_DEVICE={ctx.device.type}, SEQTAG_LOG_LEVEL=warning (no access log), other SEQTAG_* unset",
        "load: one asyncio aiohttp client in the benchmark process, a pool of as many keep-alive connections as workers, each worker "
        "sends its requests back to back; the loops are bounded by the requests per worker and a time cap "
        f"({time_cap(ctx):.0f} s); latency is client-side, send to answer",
        ("--smoke: no warm-up" if ctx.smoke else
         f"before the measurements each server tags every sentence once (untimed, concurrency {WARMUP_CONCURRENCY}), "
         "so the one-off kernel set-up for each new single-sentence shape is paid before timing (batches of "
         "other shapes may still meet it)"),
        f"texts/s, chars/s, p50, p99: medians over {ctx.repeats_text} (the two servers measured alternately); "
        "ok/errors: totals (errors = non-200 answers or transport errors)",
        f"the client shares the machine's {os.cpu_count()} cores with the server; at high concurrency it costs "
        "CPU time the server does not get",
    ]
    return table


def default(setting: str) -> object:
    """The service's default for one of its settings."""
    from seqtag.service.settings import Settings

    return Settings.model_fields[setting].default


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def ratio_table(ctx: Context, models: list[str], levels, results, alone: dict[str, tuple[float, float] | None]
                ) -> Table:
    table = Table(TITLES[1], ["model", "measure", "batching on / off"])

    def stat(model: str, name: str, level: int, fn) -> float | None:
        runs = results.get((model, name, level))
        return median([fn(r) for r in runs]) if runs else None

    level = RATIO_CONCURRENCY if RATIO_CONCURRENCY in levels else max(levels)
    throughput = lambda r: r.ok / r.seconds  # noqa: E731
    p50 = lambda r: percentile(r.latencies, 50) or 0  # noqa: E731
    for model in models:
        table.add(model, f"throughput (texts/s) at concurrency {level}",
                  ratio(stat(model, "on", level, throughput), stat(model, "off", level, throughput)))
        table.add(model, "p50 latency at concurrency 1", ratio(stat(model, "on", 1, p50), stat(model, "off", 1, p50)))
        times = alone.get(model)
        table.add(model, f"the model alone, in-process: time per sentence at batch 1 / at batch {ALONE_BATCH}",
                  ratio(*times) if times else "n/a")
    table.notes += [
        "ratios of the medians in the table above, measured in the same run; a throughput ratio above 1 means "
        "batching helps, a p50 ratio above 1 is what batching costs a lone request",
        f"the model alone: `Pipeline.predict` over {ALONE_SENTENCES} of the same sentences in the benchmark process "
        f"after the servers stopped, {serving_threads(0)} torch thread(s) as the servers use, best of 3; batching can "
        "only share the model's own per-batch cost, and each request's HTTP work is not shared, so over HTTP "
        "the throughput ratio stays under this one",
    ]
    if level != RATIO_CONCURRENCY:
        table.notes.append(f"concurrency {RATIO_CONCURRENCY} was not run (--smoke): the throughput ratio is read "
                           f"at concurrency {level}")
    return table


def model_alone(ctx: Context, model: ModelInfo, pool: list[str]) -> tuple[float, float] | None:
    """Seconds per sentence of the model in this process at batch 1 and at batch ALONE_BATCH (best of 3)."""
    import torch

    from seqtag.models.pipeline import Pipeline

    sentences = pool[:16 if ctx.smoke else ALONE_SENTENCES]
    threads = torch.get_num_threads()
    torch.set_num_threads(serving_threads(0))
    try:
        pipeline = Pipeline.load(model.path, ctx.device)
        per_sentence = []
        for batch in (1, ALONE_BATCH):
            pipeline.predict(sentences, max_batch=batch)  # warm-up: kernels for these shapes
            best = math.inf
            for _ in range(3):
                start = time.perf_counter()
                pipeline.predict(sentences, max_batch=batch)
                best = min(best, time.perf_counter() - start)
            per_sentence.append(best / len(sentences))
        return per_sentence[0], per_sentence[1]
    finally:
        torch.set_num_threads(threads)


# ---- memory --------------------------------------------------------------------------------------------------

def memory_table(ctx: Context, memory: dict[str, MemoryWatch], loaded: dict[str, int]) -> Table:
    table = Table(TITLES[2], ["batching", "models loaded", "RSS after load (MiB)", "peak RSS under load (MiB)",
                              "VmHWM (MiB)"])
    mib = lambda b: None if b is None else b / 2**20  # noqa: E731
    for name, watch in memory.items():
        table.add(name, loaded[name], mib(watch.after_load), mib(watch.peak), mib(watch.high_water))
    source = next(iter(memory.values())).source
    table.notes += [
        f"every model in {ctx.models_dir} loaded (on {ctx.device.type}); RSS after load: read once the server "
        f"answered /readyz and /v1/models, before any tagging request; peak: sampled every 20 ms ({source}) "
        "during the warm-up and all the load runs; VmHWM: the kernel's peak RSS of the process at the end (Linux only)",
    ]
    if ctx.device.type == "cuda":
        table.notes.append("RSS is host memory only; GPU memory is not counted")
    return table
