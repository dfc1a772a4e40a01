"""The HTTP service as deployed: real uvicorn processes on loopback, one with batching on (default settings) and
one with it off (``SEQTAG_MAX_BATCH_SIZE=1``), loaded side by side with bounded request loops; and their memory."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from bench.common import REPO_ROOT, Context, Table, median, percentile, ratio, skipped

TITLES = ("Service throughput and latency", "Service batching ratios", "Service memory")
CONFIGS = {"on": {}, "off": {"SEQTAG_MAX_BATCH_SIZE": "1"}}  # batching -> extra environment
CONCURRENCY = (1, 8, 32, 64)
SMOKE_CONCURRENCY = (1, 2)
RATIO_CONCURRENCY = 32  # where the batched/unbatched throughput ratio is read
WARMUP_CONCURRENCY = 1  # one sentence per forward pass: the (1, length) shapes light traffic meets


def run(ctx: Context) -> list[Table]:
    if importlib.util.find_spec("httpx") is None:
        return skipped(TITLES, "not measured: httpx is not installed (`pip install -e .[test]`)")
    model = ctx.seg_model()
    if model is None:
        note = ctx.no_models_note() if not ctx.models() else f"not measured: no seg model in {ctx.models_dir}"
        return skipped(TITLES, note)
    pool = [t for t in ctx.dev_texts().texts if t.strip()]
    levels = SMOKE_CONCURRENCY if ctx.smoke else CONCURRENCY
    with running_servers(ctx) as servers:
        memory = {name: MemoryWatch(server.proc.pid) for name, server in servers.items()}
        loaded = {name: server.models() for name, server in servers.items()}
        for watch in memory.values():
            watch.after_load = watch.rss()
            watch.start()
        results: dict[tuple[str, int], list[LoadResult]] = {}
        try:
            if not ctx.smoke:  # every sentence once per server, untimed: CPU kernels are set up per shape
                for server in servers.values():
                    asyncio.run(load(server.base, model.name, pool, WARMUP_CONCURRENCY,
                                     -(-len(pool) // WARMUP_CONCURRENCY), cap_s=600))
            for _ in range(ctx.repeats):  # interleaved: on, off, on, off... at each level
                for level in levels:
                    per_worker = requests_per_worker(ctx, level)
                    for name, server in servers.items():
                        result = asyncio.run(load(server.base, model.name, pool, level, per_worker,
                                                  cap_s=time_cap(ctx)))
                        results.setdefault((name, level), []).append(result)
        finally:
            for watch in memory.values():
                watch.stop()
        for watch in memory.values():
            watch.high_water = watch.vm_hwm()
    return [
        load_table(ctx, model.name, pool, levels, results),
        ratio_table(levels, results),
        memory_table(ctx, memory, loaded),
    ]


def time_cap(ctx: Context) -> float:
    """Seconds one load run may take before its workers stop sending."""
    return 10 if ctx.smoke else 60


def requests_per_worker(ctx: Context, concurrency: int) -> int:
    """Fixed per level: about 400 requests in all, at least 20 per worker (3 in --smoke mode)."""
    return 3 if ctx.smoke else max(20, -(-400 // concurrency))


# ---- servers -------------------------------------------------------------------------------------------------

@dataclass
class Server:
    base: str
    proc: subprocess.Popen
    log: Path

    def models(self) -> int:
        import httpx

        return len(httpx.get(self.base + "/v1/models", timeout=30).json()["models"])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(ctx: Context, batching: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQTAG_")}  # default settings, not the shell's
    env.update(SEQTAG_MODELS_DIR=str(ctx.models_dir), SEQTAG_DEVICE=ctx.device.type, SEQTAG_LOG_LEVEL="warning",
               SEQTAG_DICTIONARIES_DIR=str(ctx.workdir / f"dictionaries-{batching}"), PYTHONUNBUFFERED="1")
    env.update(CONFIGS[batching])
    return env


def start(ctx: Context, batching: str, attempt: int) -> Server:
    port = free_port()
    log = ctx.workdir / f"server-{batching}-{attempt}.log"
    cmd = [sys.executable, "-m", "training.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=server_env(ctx, batching), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Server(f"http://127.0.0.1:{port}", proc, log)


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


def wait_ready(server: Server, timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.base + "/readyz", timeout=2).status_code == 200:
                return True
        time.sleep(0.2)
    return False


@contextlib.contextmanager
def running_servers(ctx: Context, attempts: int = 3) -> Iterator[dict[str, Server]]:
    """Both servers started together and ready; always stopped at the end. A port taken between picking it
    and binding it ("address already in use") is retried with another."""
    servers: dict[str, Server] = {}
    try:
        pending = list(CONFIGS)
        for attempt in range(1, attempts + 1):
            for name in pending:
                servers[name] = start(ctx, name, attempt)
            failed = [name for name in pending if not wait_ready(servers[name], timeout=180)]
            for name in failed:
                stop(servers[name])
                output = servers[name].log.read_text(errors="replace")
                if "address already in use" not in output.lower() or attempt == attempts:
                    raise RuntimeError(f"the batching-{name} server did not get ready "
                                       f"(exit status {servers[name].proc.poll()}):\n{output[-3000:]}")
            pending = failed
            if not pending:
                break
        yield servers
    finally:
        for server in servers.values():
            stop(server)


# ---- load ----------------------------------------------------------------------------------------------------

@dataclass
class LoadResult:
    seconds: float
    latencies: list[float] = field(default_factory=list)  # of the 200 answers
    chars: int = 0
    errors: int = 0

    @property
    def ok(self) -> int:
        return len(self.latencies)


async def load(base: str, model: str, pool: list[str], concurrency: int, per_worker: int,
               cap_s: float) -> LoadResult:
    """``concurrency`` workers, each sending ``per_worker`` single-sentence requests back to back (stopping
    early past ``cap_s``) over its own keep-alive connection."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        async def post(text: str) -> int:
            return (await client.post("/v1/segment", json={"text": text, "model": model})).status_code

        await asyncio.gather(*(post(pool[w % len(pool)]) for w in range(concurrency)))  # open connections
        result = LoadResult(0.0)
        deadline = time.perf_counter() + cap_s

        async def worker(w: int) -> None:
            for i in range(per_worker):
                if time.perf_counter() > deadline:
                    return
                text = pool[(w * per_worker + i) % len(pool)]
                start = time.perf_counter()
                try:
                    status = await post(text)
                except httpx.HTTPError:
                    status = 0
                if status == 200:
                    result.latencies.append(time.perf_counter() - start)
                    result.chars += len(text)
                else:
                    result.errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


def load_table(ctx: Context, model: str, pool: list[str], levels, results) -> Table:
    table = Table(TITLES[0], ["batching", "concurrency", "requests per worker", "ok", "errors", "texts/s",
                              "chars/s", "p50 ms", "p99 ms"])
    for level in levels:
        for name in CONFIGS:
            runs = results[(name, level)]
            table.add(name, level, requests_per_worker(ctx, level), sum(r.ok for r in runs),
                      sum(r.errors for r in runs),
                      median([r.ok / r.seconds for r in runs]), median([r.chars / r.seconds for r in runs]),
                      ms(median([percentile(r.latencies, 50) or 0 for r in runs])),
                      ms(median([percentile(r.latencies, 99) or 0 for r in runs])))
    table.notes += [
        f"`POST /v1/segment` with one sentence per request (model {model}), sentences from {ctx.dev_texts().origin}",
        "two `seqtag serve` processes (uvicorn, one worker each) on 127.0.0.1 started together: batching on = "
        f"default settings (SEQTAG_MAX_BATCH_SIZE {default('max_batch_size')}, SEQTAG_MAX_WAIT_MS "
        f"{default('max_wait_ms')}), off = SEQTAG_MAX_BATCH_SIZE=1; both with "
        f"SEQTAG_DEVICE={ctx.device.type}, SEQTAG_LOG_LEVEL=warning (no access log), other SEQTAG_* unset",
        "load: one asyncio httpx client in the benchmark process, one keep-alive connection per worker, each worker "
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
    from service.settings import Settings

    return Settings.model_fields[setting].default


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def ratio_table(levels, results) -> Table:
    table = Table(TITLES[1], ["measure", "batching on / off"])

    def stat(name: str, level: int, fn) -> float | None:
        runs = results.get((name, level))
        return median([fn(r) for r in runs]) if runs else None

    level = RATIO_CONCURRENCY if RATIO_CONCURRENCY in levels else max(levels)
    throughput = lambda r: r.ok / r.seconds  # noqa: E731
    p50 = lambda r: percentile(r.latencies, 50) or 0  # noqa: E731
    table.add(f"throughput (texts/s) at concurrency {level}",
              ratio(stat("on", level, throughput), stat("off", level, throughput)))
    table.add("p50 latency at concurrency 1", ratio(stat("on", 1, p50), stat("off", 1, p50)))
    table.notes.append("ratios of the medians in the table above, measured in the same run; a throughput ratio "
                       "above 1 means batching helps, a p50 ratio above 1 is what batching costs a lone request")
    if level != RATIO_CONCURRENCY:
        table.notes.append(f"concurrency {RATIO_CONCURRENCY} was not run (--smoke): the throughput ratio is read "
                           f"at concurrency {level}")
    return table


# ---- memory --------------------------------------------------------------------------------------------------

class MemoryWatch:
    """Resident set size of a process: now, and the highest seen by sampling every 20 ms while started."""

    def __init__(self, pid: int):
        self.pid = pid
        self.after_load: int | None = None
        self.peak: int | None = None
        self.high_water: int | None = None
        self.source = "psutil"
        try:
            import psutil

            self._process = psutil.Process(pid)
        except ImportError:
            self._process = None
            self.source = "/proc/PID/status VmRSS"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def rss(self) -> int | None:
        if self._process is not None:
            try:
                return self._process.memory_info().rss
            except Exception:  # the process is gone
                return None
        kb = self._status_kb("VmRSS")
        return None if kb is None else kb * 1024

    def vm_hwm(self) -> int | None:
        """The kernel's own peak RSS of the process (Linux), for comparison with the sampled peak."""
        kb = self._status_kb("VmHWM")
        return None if kb is None else kb * 1024

    def _status_kb(self, key: str) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def _sample(self) -> None:
        while not self._stop.is_set():
            value = self.rss()
            if value is not None:
                self.peak = max(self.peak or 0, value)
            self._stop.wait(0.02)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


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
