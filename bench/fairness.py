"""Admission and fair scheduling under hostile load (issue 16), on one ``seqtag serve`` with default settings on
127.0.0.1, driven by bounded loops (fixed durations and time caps):

1. heavy + light: 8 clients send single sentences, first alone, then while one client sends 1,000,000-character
   texts back to back; the light clients' p99 with the heavy one must stay within 3x their p99 alone, with no 503;
2. overload: requests of 50 sentences, first at the saturation point (a few clients), then from 512 clients
   (about 10x what the server takes) that honour Retry-After; goodput (sentences/s answered 200) must hold at
   80% of the saturation throughput, every refusal a 503 with Retry-After, admitted requests' p99 within 2 s;
3. ``/healthz`` polled while a request carrying a 200,000-entry inline dictionary is compiled: within 50 ms.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.common import Context, Table, http_inputs, percentile, running_servers, say_progress, skipped
from bench.load import CLIENT_KEEPALIVE_EXPIRY_S, ms, usable_retry_after, verdict

TITLES = ("Fairness: heavy and light clients", "Fairness: overload goodput", "Fairness: health during a dictionary "
          "compile")
HEAVY_CHARS = 1_000_000
LIGHT_CLIENTS = 8
BULK_SENTENCES = 50
OVERLOAD_CLIENTS = 512
DICTIONARY_ENTRIES = 200_000


@dataclass(frozen=True)
class Sizes:
    light_s: float
    saturation_clients: int
    saturation_s: float
    overload_clients: int
    overload_s: float
    heavy_chars: int
    dictionary_entries: int
    cap_s: float


FULL = Sizes(light_s=20, saturation_clients=4, saturation_s=15, overload_clients=OVERLOAD_CLIENTS, overload_s=30,
             heavy_chars=HEAVY_CHARS, dictionary_entries=DICTIONARY_ENTRIES, cap_s=120)
SMOKE = Sizes(light_s=2, saturation_clients=2, saturation_s=2, overload_clients=16, overload_s=2,
              heavy_chars=20_000, dictionary_entries=5_000, cap_s=30)


@dataclass
class Tally:
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # of 200 answers
    sentences: int = 0  # answered 200
    no_retry_after: int = 0

    def describe(self) -> str:
        return "; ".join(f"{'transport error' if s == 0 else s}: {n:,}" for s, n in sorted(self.statuses.items())) \
            or "none"


async def _loop(client, body: dict, tally: Tally, until: float, cap: float, sentences: int,
                honour_retry_after: bool = False) -> None:
    import aiohttp

    while time.perf_counter() < min(until, cap):
        sent = time.perf_counter()
        retry_after = None
        try:
            async with client.post("/v1/segment", json=body) as response:
                await response.read()
                status, retry_after = response.status, response.headers.get("retry-after")
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        tally.statuses[status] += 1
        if status == 200:
            tally.latencies.append(time.perf_counter() - sent)
            tally.sentences += sentences
        elif status == 503:
            if not usable_retry_after(retry_after):
                tally.no_retry_after += 1
            elif honour_retry_after:
                await asyncio.sleep(min(float(retry_after), max(0.0, until - time.perf_counter())))


async def _session(base: str, clients: int):
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients, keepalive_timeout=CLIENT_KEEPALIVE_EXPIRY_S)
    return aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=120))


async def heavy_and_light(base: str, model: str, pool: list[str], size: Sizes, heavy: bool) -> tuple[Tally, Tally]:
    light, big = Tally(), Tally()
    heavy_text = "".join(pool[k % len(pool)] for k in range(size.heavy_chars // 20))[:size.heavy_chars]
    async with await _session(base, LIGHT_CLIENTS + 1) as client:
        start = time.perf_counter()
        until, cap = start + size.light_s, start + size.cap_s
        loops = [_loop(client, {"text": pool[k % len(pool)], "model": model}, light, until, cap, 1)
                 for k in range(LIGHT_CLIENTS)]
        if heavy:
            loops.append(_loop(client, {"text": heavy_text, "model": model}, big, until, cap, 1))
        await asyncio.gather(*loops)
        light.seconds = big.seconds = time.perf_counter() - start
    return light, big


async def bulk(base: str, model: str, pool: list[str], clients: int, seconds: float, cap_s: float) -> Tally:
    tally = Tally()
    rng = random.Random(0)
    async with await _session(base, clients) as client:
        start = time.perf_counter()
        until, cap = start + seconds, start + cap_s

        async def one() -> None:
            k = rng.randrange(len(pool))
            texts = [pool[(k + j) % len(pool)] for j in range(BULK_SENTENCES)]
            await _loop(client, {"texts": texts, "model": model}, tally, until, cap, BULK_SENTENCES,
                        honour_retry_after=True)

        await asyncio.gather(*(one() for _ in range(clients)))
        tally.seconds = time.perf_counter() - start
    return tally


async def health_during_compile(base: str, model: str, entries: int) -> tuple[list[float], int | None, float]:
    """/healthz latencies (s) while a request with an inline dictionary of ``entries`` entries runs; its status."""
    import aiohttp

    rng = random.Random(0)
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    words = ["".join(rng.choice(chars) for _ in range(rng.randint(2, 4))) for _ in range(entries)]
    latencies: list[float] = []
    async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=120)) as client:
        async with client.get("/healthz") as r:  # a warm connection for the health checks
            await r.read()

        async def tag() -> int:
            async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=120)) as other:
                async with other.post("/v1/segment", json={"text": "我们在北京工作。", "model": model,
                                                           "dictionary": words}) as r:
                    await r.read()
                    return r.status

        started = time.perf_counter()
        task = asyncio.create_task(tag())
        while not task.done():
            sent = time.perf_counter()
            async with client.get("/healthz") as r:
                await r.read()
            latencies.append(time.perf_counter() - sent)
            await asyncio.sleep(0.01)
        return latencies, await task, time.perf_counter() - started


def progress(started: float, message: str) -> None:
    say_progress("fairness", started, message)


def run(ctx: Context) -> list[Table]:
    inputs = http_inputs(ctx)
    if isinstance(inputs, str):
        return skipped(TITLES, inputs)
    model, pool = inputs
    size = SMOKE if ctx.smoke else FULL
    started = time.perf_counter()
    with running_servers(ctx, {"fairness": {}}) as servers:
        base = servers["fairness"].base
        asyncio.run(heavy_and_light(base, model.name, pool, Sizes(**{**size.__dict__, "light_s": 2}), False))
        alone, _ = asyncio.run(heavy_and_light(base, model.name, pool, size, heavy=False))
        progress(started, "light clients alone done")
        light, heavy = asyncio.run(heavy_and_light(base, model.name, pool, size, heavy=True))
        progress(started, "heavy + light done")
        saturation = asyncio.run(bulk(base, model.name, pool, size.saturation_clients, size.saturation_s, size.cap_s))
        progress(started, "saturation done")
        overload = asyncio.run(bulk(base, model.name, pool, size.overload_clients, size.overload_s, size.cap_s))
        progress(started, "overload done")
        health, dict_status, dict_seconds = asyncio.run(health_during_compile(base, model.name,
                                                                              size.dictionary_entries))
        progress(started, "health during a dictionary compile done")
    common = [f"model {model.name}, sentences from {ctx.dev_texts().origin}; one `seqtag serve` (uvicorn, one "
              f"worker) on 127.0.0.1 with default settings (SEQTAG_DEVICE={ctx.device.type}, "
              "SEQTAG_LOG_LEVEL=warning); the clients (aiohttp, one asyncio loop in the benchmark process) share "
              "the machine's cores with the server; one run of each part"
              + ("; --smoke: tiny sizes, the numbers mean nothing" if ctx.smoke else "")]
    return [light_table(alone, light, heavy, size, common), overload_table(saturation, overload, size, common),
            health_table(health, dict_status, dict_seconds, size, common)]


def light_table(alone: Tally, light: Tally, heavy: Tally, size: Sizes, common: list[str]) -> Table:
    table = Table(TITLES[0], ["measure", "target", "measured", "pass"])
    p99_alone, p99_with = percentile(alone.latencies, 99), percentile(light.latencies, 99)
    ratio = p99_with / p99_alone if p99_alone and p99_with else None
    refused = light.statuses[503]
    table.add("light p50 alone (ms)", "–", ms(percentile(alone.latencies, 50)), "–")
    table.add("light p99 alone (ms)", "–", ms(p99_alone), "–")
    table.add("light p50 beside the heavy client (ms)", "–", ms(percentile(light.latencies, 50)), "–")
    table.add("light p99 beside the heavy client (ms)", "–", ms(p99_with), "–")
    table.add("light p99 with / alone", "≤ 3×", None if ratio is None else f"{ratio:.2f}×",
              verdict(None if ratio is None else ratio <= 3))
    table.add("light answers beside the heavy client", "–", light.describe(), "–")
    table.add("light 503 answers", 0, refused, verdict(refused == 0))
    table.add("heavy answers", "200 or 504", heavy.describe(), verdict(set(heavy.statuses) <= {200, 504}))
    table.notes += common + [
        f"{LIGHT_CLIENTS} light clients send one dev sentence per request back to back for {size.light_s:g} s, "
        f"alone and then beside one heavy client sending a {size.heavy_chars:,}-character text (dev sentences "
        "joined) per request back to back; latency is client-side, send to answer, of the 200 answers",
    ]
    return table


def overload_table(saturation: Tally, overload: Tally, size: Sizes, common: list[str]) -> Table:
    table = Table(TITLES[1], ["measure", "target", "measured", "pass"])
    capacity = saturation.sentences / saturation.seconds if saturation.seconds else None
    goodput = overload.sentences / overload.seconds if overload.seconds else None
    share = goodput / capacity if capacity and goodput else None
    other = sum(n for s, n in overload.statuses.items() if s not in (200, 503))
    p99 = percentile(overload.latencies, 99)
    table.add(f"saturation throughput, {size.saturation_clients} clients (sentences/s)", "–", capacity, "–")
    table.add("saturation p99 (ms)", "–", ms(percentile(saturation.latencies, 99)), "–")
    table.add(f"overload goodput, {size.overload_clients} clients (sentences/s)", "–", goodput, "–")
    table.add("goodput / saturation throughput", "≥ 80%", None if share is None else f"{100 * share:.0f}%",
              verdict(None if share is None else share >= 0.8))
    table.add("overload answers", "200 or 503", overload.describe(), verdict(other == 0))
    table.add("503 without a usable Retry-After", 0, overload.no_retry_after, verdict(overload.no_retry_after == 0))
    table.add("p50 of admitted requests (ms)", "–", ms(percentile(overload.latencies, 50)), "–")
    table.add("p99 of admitted requests (ms)", "≤ 2,000", ms(p99), verdict(None if p99 is None else p99 <= 2))
    table.notes += common + [
        f"every request holds {BULK_SENTENCES} consecutive dev sentences (from a random start); saturation: "
        f"{size.saturation_clients} clients back to back for {size.saturation_s:g} s (the server busy all the "
        f"time, answers 200 only); overload: {size.overload_clients} clients for {size.overload_s:g} s, each "
        "waiting the Retry-After of a 503 before sending again; goodput counts the sentences of 200 answers",
    ]
    return table


def health_table(health: list[float], status: int | None, seconds: float, size: Sizes, common: list[str]) -> Table:
    table = Table(TITLES[2], ["measure", "target", "measured", "pass"])
    worst = max(health) if health else None
    table.add("dictionary request: status, seconds", "200", f"{status}, {seconds:.2f} s", verdict(status == 200))
    table.add("/healthz answers during it", "–", len(health), "–")
    table.add("/healthz p50 (ms)", "–", ms(percentile(health, 50)), "–")
    table.add("/healthz slowest (ms)", "≤ 50", ms(worst), verdict(None if worst is None else worst <= 0.05))
    table.notes += common + [
        f"one `POST /v1/segment` of one sentence with an inline dictionary of {size.dictionary_entries:,} random "
        "2-4 character CJK words, while another connection polls `GET /healthz` every 10 ms until it is answered",
    ]
    return table
