"""The service under sustained load, as deployed: real uvicorn processes on loopback serving a copy of the seg
model, driven by bounded request loops (fixed counts and time caps).

1. below capacity: single-sentence ``/v1/segment`` requests at high concurrency with default settings;
2. overload and recovery: a server with a tiny ``SEQTAG_MAX_QUEUE`` hammered until it sheds load (every refusal
   must be a 503 with ``Retry-After``), then one client alone, which must get only 200s;
3. memory growth: the server's RSS after a warm-up and after many more requests;
4. reload during load: ``POST /v1/models/reload`` while requests run, each after the checkpoint was re-saved
   with a changed ``config.json`` (so its content hash changes and the registry really swaps models).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.common import (Context, MemoryWatch, Server, Table, fmt, http_inputs, percentile, running_servers,
                          say_progress, skipped, stop_server)

TITLES = ("Load: below capacity", "Load: overload and recovery", "Load: memory growth", "Load: reload during load")
MEMORY_GROWTH_TARGET = 10.0  # percent


@dataclass(frozen=True)
class Sizes:
    below_s: float
    below_concurrency: int
    overload_s: float
    overload_concurrency: int
    overload_queue: int  # SEQTAG_MAX_QUEUE of the overload server
    recovery_s: float
    memory_warmup: int
    memory_requests: int
    memory_concurrency: int
    reload_s: float
    reload_concurrency: int
    reloads: int
    cap_s: float  # most seconds any one loop may run, whatever its count says


FULL = Sizes(below_s=60, below_concurrency=64, overload_s=20, overload_concurrency=64, overload_queue=8,
             recovery_s=5, memory_warmup=1_000, memory_requests=20_000, memory_concurrency=16,
             reload_s=10, reload_concurrency=16, reloads=5, cap_s=600)
# --smoke: concurrency 8 can never overflow a queue of 8 pieces (a client has one request in flight at a time),
# so the smoke overload server gets a queue of 2
SMOKE = Sizes(below_s=3, below_concurrency=4, overload_s=2, overload_concurrency=8, overload_queue=2,
              recovery_s=1, memory_warmup=50, memory_requests=300, memory_concurrency=4,
              reload_s=2, reload_concurrency=2, reloads=5, cap_s=30)
MAX_REQUESTS = 1_000_000  # the count bound of the timed loops
# The client retires a pooled connection idle this long (aiohttp's keepalive_timeout; httpx's default). The server's
# keep-alive (SEQTAG_KEEP_ALIVE_S) must be longer, or it may close an idle connection just as the client sends
# on it (a transport error: "Server disconnected", connection reset). The pool hands out its
# first idle connection, so with back-to-back workers some connections still sit idle for seconds.
CLIENT_KEEPALIVE_EXPIRY_S = 5.0


def sizes(ctx: Context) -> Sizes:
    return SMOKE if ctx.smoke else FULL


def server_keep_alive_s() -> float:
    """The servers' keep-alive (SEQTAG_KEEP_ALIVE_S is left at its default here)."""
    from seqtag.service.settings import Settings

    return Settings.model_fields["keep_alive_s"].default


def progress(started: float, message: str) -> None:
    say_progress("load", started, message)


def run(ctx: Context) -> list[Table]:
    inputs = http_inputs(ctx)
    if isinstance(inputs, str):
        return skipped(TITLES, inputs)
    model, pool = inputs
    size = sizes(ctx)
    # a private models dir holding only a copy of the seg model: the reload benchmark rewrites it
    models_dir = ctx.workdir / "load-models"
    if models_dir.exists():
        shutil.rmtree(models_dir)
    shutil.copytree(model.path, models_dir / model.name)
    configs = {"load-default": {}, "load-overload": {"SEQTAG_MAX_QUEUE": str(size.overload_queue)}}
    started = time.perf_counter()
    with running_servers(ctx, configs, models_dir=models_dir) as servers:
        progress(started, "both servers ready")
        default, overloaded = servers["load-default"], servers["load-overload"]
        watch = MemoryWatch(default.proc.pid)
        after_load = watch.rss()
        overload = asyncio.run(drive(overloaded.base, model.name, pool, size.overload_concurrency,
                                     seconds=size.overload_s, cap_s=size.cap_s))
        recovery = asyncio.run(drive(overloaded.base, model.name, pool, 1, seconds=size.recovery_s,
                                     cap_s=size.cap_s))
        stop_server(overloaded)  # the other parts have the machine to themselves
        progress(started, "overload and recovery done")
        memory = measure_memory(default, watch, model.name, pool, size, after_load)
        progress(started, "memory growth done")
        below = asyncio.run(drive(default.base, model.name, pool, size.below_concurrency, seconds=size.below_s,
                                  cap_s=size.cap_s))
        progress(started, "below capacity done")
        reload = asyncio.run(reload_under_load(default, model.name, models_dir / model.name, pool, size))
        progress(started, "reload during load done")
    common = [f"model {model.name} (a copy in a private models dir), sentences from {ctx.dev_texts().origin}, one "
              "sentence per `POST /v1/segment` request",
              f"`seqtag serve` (uvicorn, one worker) on 127.0.0.1, SEQTAG_DEVICE={ctx.device.type}, "
              "SEQTAG_LOG_LEVEL=warning, other SEQTAG_* unset unless named; the client (one asyncio aiohttp "
              f"client, a pool of as many keep-alive connections as workers, requests back to back, no think "
              f"time) shares the machine's {os.cpu_count()} cores with the server",
              f"keep-alive: the client retires a connection idle for {CLIENT_KEEPALIVE_EXPIRY_S:g} s, the server "
              f"closes one idle for {server_keep_alive_s():g} s (SEQTAG_KEEP_ALIVE_S), so the client always "
              "closes an idle connection first (a server closing one just as the client reuses it would cost "
              "that request a transport error)"]
    common.append("one run of each part (--repeats does not apply here)"
                  + ("; --smoke: tiny counts and durations, the numbers mean nothing" if ctx.smoke else ""))
    return [below_table(below, size, common), overload_table(overload, recovery, size, common),
            memory_table(memory, size, watch.source, common), reload_table(reload, size, common)]


# ---- the request loop ------------------------------------------------------------------------------------------

@dataclass
class Tally:
    """What one loop of requests got back."""

    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)  # HTTP status -> answers; 0 = transport error
    transport_errors: Counter = field(default_factory=Counter)  # "ExceptionType: message" -> count
    latencies: list[float] = field(default_factory=list)  # seconds, send to answer, of the 200 answers
    no_retry_after: int = 0  # 503 answers without a usable Retry-After header
    capped: bool = False  # stopped by the time cap before its count or duration was done

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return self.statuses[200]

    @property
    def not_ok(self) -> int:
        return self.sent - self.ok

    def count(self, status: int) -> int:
        return self.statuses[status]

    def describe(self) -> str:
        """``200: 1,234; 503: 56`` (``transport error`` for 0)."""
        if not self.statuses:
            return "none"
        return "; ".join(f"{'transport error' if s == 0 else s}: {n:,}" for s, n in sorted(self.statuses.items()))

    def throughput(self) -> float | None:
        return self.ok / self.seconds if self.seconds else None


def usable_retry_after(value: str | None) -> bool:
    """A Retry-After a client can act on: delay-seconds (RFC 9110), a non-negative integer."""
    return value is not None and value.strip().isdigit()


async def drive(base: str, model: str, pool: list[str], concurrency: int, *, seconds: float | None = None,
                requests: int | None = None, cap_s: float, busy: Callable[[], bool] | None = None,
                offset: int = 0) -> Tally:
    """``concurrency`` workers send single-sentence requests back to back until ``requests`` were sent in all,
    or ``seconds`` passed (and ``busy()``, if given, is false), or ``cap_s`` passed, whichever comes first."""
    # aiohttp, not httpx: on this 2-core machine httpx's async client itself topped out near 450 requests/s,
    # so it, not the server, set the measured throughput (see bench/service.py)
    import aiohttp

    limit = requests if requests is not None else MAX_REQUESTS
    tally = Tally()
    claimed = 0
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=CLIENT_KEEPALIVE_EXPIRY_S)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:
        start = time.perf_counter()
        end = None if seconds is None else start + seconds
        cap = start + cap_s

        def more() -> bool:
            now = time.perf_counter()
            if now > cap:
                tally.capped = True
                return False
            if end is not None and now > end and not (busy is not None and busy()):
                return False
            return claimed < limit

        async def worker() -> None:
            nonlocal claimed
            while more():
                text = pool[(offset + claimed) % len(pool)]
                claimed += 1
                sent = time.perf_counter()
                retry_after = None
                try:
                    async with client.post("/v1/segment", json={"text": text, "model": model}) as response:
                        await response.read()
                        status, retry_after = response.status, response.headers.get("retry-after")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = 0
                    tally.transport_errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                tally.statuses[status] += 1
                if status == 200:
                    tally.latencies.append(time.perf_counter() - sent)
                elif status == 503 and not usable_retry_after(retry_after):
                    tally.no_retry_after += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        tally.seconds = time.perf_counter() - start
    if requests is not None and tally.sent >= requests:
        tally.capped = False  # the count was reached: the cap cut nothing short
    return tally


# ---- 1. below capacity -----------------------------------------------------------------------------------------

def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def columns() -> list[str]:
    return ["measure", "target", "measured", "pass"]


def below_table(tally: Tally, size: Sizes, common: list[str]) -> Table:
    table = Table(TITLES[0], columns())
    table.add("requests sent", "–", tally.sent, "–")
    table.add("answers by status", "all 200", tally.describe(), verdict(tally.not_ok == 0))
    table.add("errors (non-200 or transport error)", 0, tally.not_ok, verdict(tally.not_ok == 0))
    table.add("throughput (200 answers/s)", "–", tally.throughput(), "–")
    table.add("p50 latency (ms)", "–", ms(percentile(tally.latencies, 50)), "–")
    table.add("p99 latency (ms)", "–", ms(percentile(tally.latencies, 99)), "–")
    table.notes += common + [
        f"{size.below_s:g} s of requests at concurrency {size.below_concurrency} against a server with default "
        f"settings (it had already served the memory-growth requests, so it is warm); measured over "
        f"{tally.seconds:.1f} s; latency is client-side, send to answer, of the 200 answers",
    ]
    if tally.capped:
        table.notes.append(f"the loop hit its {size.cap_s:g} s time cap")
    for error, count in tally.transport_errors.most_common(5):
        table.notes.append(f"transport error ×{count}: `{error}`")
    return table


# ---- 2. overload and recovery ----------------------------------------------------------------------------------

def overload_table(overload: Tally, recovery: Tally, size: Sizes, common: list[str]) -> Table:
    table = Table(TITLES[1], ["phase", *columns()])
    other = overload.sent - overload.ok - overload.count(503)
    table.add("overload", "requests sent", "–", overload.sent, "–")
    table.add("overload", "answers by status", "200 or 503 only", overload.describe(), verdict(other == 0))
    table.add("overload", "503 answers (load shed)", "–", overload.count(503), "–")
    table.add("overload", "503 without a Retry-After", 0, overload.no_retry_after,
              verdict(overload.no_retry_after == 0))
    table.add("overload", "other statuses or transport errors", 0, other, verdict(other == 0))
    table.add("overload", "200 answers/s", "–", overload.throughput(), "–")
    table.add("recovery", "requests sent", "–", recovery.sent, "–")
    table.add("recovery", "answers by status", "all 200", recovery.describe(), verdict(recovery.not_ok == 0))
    table.add("recovery", "non-200 answers", 0, recovery.not_ok, verdict(recovery.not_ok == 0))
    table.notes += common + [
        f"overload: a second server with SEQTAG_MAX_QUEUE={size.overload_queue} (pieces waiting per model; "
        f"other settings default, so SEQTAG_MAX_WAIT_MS is its default) hammered for {size.overload_s:g} s at "
        f"concurrency {size.overload_concurrency}, each client resending at once whatever the answer; a usable "
        "Retry-After is delay-seconds (a non-negative integer)",
        f"recovery: right after, {size.recovery_s:g} s at concurrency 1 against the same server",
    ]
    return table


# ---- 3. memory growth -------------------------------------------------------------------------------------------

@dataclass
class MemoryResult:
    after_load: int | None
    after_warmup: int | None
    after_requests: int | None
    warmup: Tally
    requests: Tally

    @property
    def growth(self) -> float | None:
        if not self.after_warmup or self.after_requests is None:
            return None
        return 100 * (self.after_requests - self.after_warmup) / self.after_warmup


def measure_memory(server: Server, watch: MemoryWatch, model: str, pool: list[str], size: Sizes,
                   after_load: int | None) -> MemoryResult:
    warmup = asyncio.run(drive(server.base, model, pool, size.memory_concurrency, requests=size.memory_warmup,
                               cap_s=size.cap_s))
    after_warmup = watch.rss()
    requests = asyncio.run(drive(server.base, model, pool, size.memory_concurrency, requests=size.memory_requests,
                                 cap_s=size.cap_s, offset=size.memory_warmup))
    return MemoryResult(after_load, after_warmup, watch.rss(), warmup, requests)


def memory_table(result: MemoryResult, size: Sizes, source: str, common: list[str]) -> Table:
    table = Table(TITLES[2], columns())
    mib = lambda b: None if b is None else b / 2**20  # noqa: E731
    table.add("RSS after the model loaded (MiB)", "–", mib(result.after_load), "–")
    table.add(f"RSS after a warm-up of {size.memory_warmup:,} requests (MiB)", "–", mib(result.after_warmup), "–")
    table.add(f"RSS after {size.memory_requests:,} more requests (MiB)", "–", mib(result.after_requests), "–")
    growth = result.growth
    table.add("growth from warm-up to the end", f"< {MEMORY_GROWTH_TARGET:g}%",
              None if growth is None else f"{fmt(growth)}%",
              verdict(None if growth is None else growth < MEMORY_GROWTH_TARGET))
    sent_all = result.requests.sent >= size.memory_requests and result.warmup.sent >= size.memory_warmup
    table.add("requests sent (warm-up + measured)", f"{size.memory_warmup:,} + {size.memory_requests:,}",
              f"{result.warmup.sent:,} + {result.requests.sent:,}", verdict(sent_all))
    failures = result.warmup.not_ok + result.requests.not_ok
    table.add("non-200 answers", 0, failures, verdict(failures == 0))
    table.notes += common + [
        f"the default-settings server, fresh: RSS ({source}) read once the model loaded, after the warm-up and "
        f"after the further requests, each at concurrency {size.memory_concurrency}, cycling through the "
        f"sentences; growth = (end - after warm-up) / after warm-up",
    ]
    if result.warmup.capped or result.requests.capped:
        table.notes.append(f"a loop hit its {size.cap_s:g} s time cap before sending all its requests")
    return table


# ---- 4. reload during load -------------------------------------------------------------------------------------

@dataclass
class ReloadResult:
    tally: Tally
    answers: list[int] = field(default_factory=list)  # HTTP status of each reload call
    swaps: int = 0  # reloads whose report lists the model as loaded (a new version swapped in)
    versions: list[str] = field(default_factory=list)  # the model's version before and after each reload
    problems: list[str] = field(default_factory=list)


def rewrite_checkpoint(directory: Path, stamp: int) -> None:
    """Re-save the same weights with one more ``config.json`` field, so the content hash changes."""
    from seqtag.models.checkpoint import load_checkpoint, save_checkpoint, stored_as

    tagger, codec, meta = load_checkpoint(directory)
    meta.extra["bench_reload"] = stamp
    save_checkpoint(directory, tagger, codec, meta, **stored_as(meta.extra))


async def reload_under_load(server: Server, model: str, directory: Path, pool: list[str],
                            size: Sizes) -> ReloadResult:
    import httpx

    result = ReloadResult(Tally())

    async def version(client: httpx.AsyncClient) -> str:
        models = (await client.get("/v1/models")).json()["models"]
        return next((m["version"] for m in models if m["name"] == model), "?")

    async def reloader() -> None:
        async with httpx.AsyncClient(base_url=server.base, timeout=120) as client:
            result.versions.append(await version(client))
            start, gap = time.perf_counter(), size.reload_s / (size.reloads + 1)
            for stamp in range(1, size.reloads + 1):  # evenly spread; back to back if they take longer
                await asyncio.sleep(max(0.0, start + stamp * gap - time.perf_counter()))
                await asyncio.to_thread(rewrite_checkpoint, directory, stamp)
                response = await client.post("/v1/models/reload")
                result.answers.append(response.status_code)
                try:
                    report = response.json()
                except ValueError:
                    report = {}
                if response.status_code == 200 and model in report.get("loaded", []):
                    result.swaps += 1
                elif response.status_code != 200:
                    result.problems.append(f"reload {stamp}: {response.status_code} {response.text[:300]}")
                result.versions.append(await version(client))

    task = asyncio.create_task(reloader())
    load = asyncio.create_task(drive(server.base, model, pool, size.reload_concurrency, seconds=size.reload_s,
                                     cap_s=size.cap_s, busy=lambda: not task.done()))
    await asyncio.wait({task, load})
    if not task.done():  # the load loop hit its cap while a reload was still running
        task.cancel()
        result.problems.append("the reloads did not finish within the time cap")
    result.tally = await load
    if task.done() and not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        result.problems.append(f"reloader failed: {type(exc).__name__}: {exc}")
    return result


def reload_table(result: ReloadResult, size: Sizes, common: list[str]) -> Table:
    table = Table(TITLES[3], columns())
    tally = result.tally
    ok_reloads = sum(1 for s in result.answers if s == 200)
    distinct = len(dict.fromkeys(result.versions))
    table.add("requests sent", "–", tally.sent, "–")
    table.add("answers by status", "all 200", tally.describe(), verdict(tally.not_ok == 0))
    table.add("failed requests (non-200 or transport error)", 0, tally.not_ok, verdict(tally.not_ok == 0))
    table.add("reload calls answered 200", size.reloads, f"{ok_reloads} of {len(result.answers)}",
              verdict(ok_reloads == size.reloads))
    table.add("swaps (model listed as loaded by the reload)", size.reloads, result.swaps,
              verdict(result.swaps == size.reloads))
    table.add("distinct versions in GET /v1/models", size.reloads + 1, distinct,
              verdict(distinct == size.reloads + 1))
    table.add("p99 latency (ms)", "–", ms(percentile(tally.latencies, 99)), "–")
    table.notes += common + [
        f"the default-settings server, after the runs above: requests at concurrency {size.reload_concurrency} for "
        f"{size.reload_s:g} s (longer if the reloads take longer; measured {tally.seconds:.1f} s) while "
        f"`POST /v1/models/reload` is called {size.reloads} times, spread over the run; before each, the model's "
        "checkpoint directory is re-saved (models.checkpoint load_checkpoint + save_checkpoint, same weights, one "
        "more config.json field; files other than the checkpoint's own, such as a README, are dropped) so its "
        "content hash changes and the registry loads and swaps in a new version",
        "versions: the model's `version` in `GET /v1/models` before the first reload and after each",
    ]
    table.notes += result.problems
    return table
