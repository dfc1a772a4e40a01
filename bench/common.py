"""What every benchmark shares: the run context (sizes, device, models, texts), tables, timing helpers, and
real ``seqtag serve`` processes on loopback (started, waited for, stopped; their memory)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from bench import textgen

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = REPO_ROOT / "checkpoints"
DEFAULT_CORPORA = REPO_ROOT.parent / "shared" / "corpora"
SMOKE_SENTENCES = 12  # dev sentences tagged in --smoke mode
SMOKE_TRAIN_SENTENCES = 120  # training sentences read in --smoke mode
SYNTHETIC_DEV_SENTENCES, SYNTHETIC_TRAIN_SENTENCES = 1904, 24416  # as many as CTB6 dev and train have


# ---- tables ----------------------------------------------------------------

def fmt(value: Any) -> str:
    """A table cell: None -> "–", floats with as many digits as their size deserves."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value) or math.isinf(value):
        return "–"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    """``a / b`` as ``1.23×``; "n/a" when either side was not measured."""
    if not numerator or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}×"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        assert len(cells) == len(self.columns), (self.title, cells)
        self.rows.append([fmt(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.rows:
            lines.append("| " + " | ".join(self.columns) + " |")
            lines.append("|" + "|".join("---" for _ in self.columns) + "|")
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        else:
            lines.append("_Not measured in this run (see the notes)._")
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def skipped(titles: Sequence[str], note: str) -> list[Table]:
    """The tables a benchmark would have written, empty, each saying why."""
    return [Table(title, [], notes=[note]) for title in titles]


# ---- timing ----------------------------------------------------------------

def timed(fn: Callable[[], Any], sync: torch.device | None = None) -> float:
    """Wall-clock seconds of ``fn()``; with a CUDA ``sync`` device, queued kernels are waited for."""
    if sync is not None and sync.type == "cuda":
        torch.cuda.synchronize(sync)
    start = time.perf_counter()
    fn()
    if sync is not None and sync.type == "cuda":
        torch.cuda.synchronize(sync)
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


# ---- inputs ----------------------------------------------------------------

@dataclass
class TextSource:
    texts: list[str]
    origin: str  # where the texts came from, for the table notes
    seg_file: Path | None = None  # the segmented file the texts come from (gold words), if any

    @property
    def chars(self) -> int:
        return sum(len(t) for t in self.texts)

    def describe(self) -> str:
        return f"{self.origin}: {len(self.texts):,} sentences, {self.chars:,} characters"


@dataclass
class ModelInfo:
    name: str
    path: Path
    task: str


def read_seg_lines(path: Path, limit: int | None = None) -> list[str]:
    """Non-empty lines of a ``*.seg`` file (words separated by spaces), at most ``limit``."""
    lines: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                lines.append(line.strip())
                if limit is not None and len(lines) >= limit:
                    break
    return lines


@dataclass
class Context:
    """One benchmark run: its options, its scratch directory and what the benchmarks share (cached)."""

    smoke: bool
    device: torch.device
    models_dir: Path
    corpora_dir: Path
    repeats: int
    workdir: Path
    run_dir: Path | None = None
    dev_target: float = 95.0
    gpu_only: bool = False  # only what needs a GPU (a lent device's minutes are few)
    notes: list[str] = field(default_factory=list)  # said once in the header
    _models: list[ModelInfo] | None = None
    _dev: TextSource | None = None

    @property
    def repeats_text(self) -> str:
        return f"{self.repeats} repeat" + ("s" if self.repeats != 1 else "")

    # -- texts
    def dev_texts(self) -> TextSource:
        """CTB6 dev sentences with the spaces between words removed (synthetic text without the corpora)."""
        if self._dev is None:
            limit = SMOKE_SENTENCES if self.smoke else None
            path = self.corpora_dir / "ctb6" / "dev.seg"
            if path.exists():
                texts = ["".join(line.split()) for line in read_seg_lines(path, limit)]
                self._dev = TextSource(texts, f"CTB6 dev ({path})", path)
            else:
                lines = textgen.segmented_lines(limit or SYNTHETIC_DEV_SENTENCES, seed=1)
                texts = ["".join(line.split()) for line in lines]
                generated = self.workdir / "dev.seg"
                generated.write_text("\n".join(lines) + "\n", encoding="utf-8")
                self._dev = TextSource(texts, f"synthetic Chinese text from bench/textgen.py ({path} not found)",
                                       generated)
        return self._dev

    def train_file(self) -> tuple[Path, str]:
        """The segmented training file: CTB6 train (its first lines in --smoke mode), else synthetic."""
        path = self.corpora_dir / "ctb6" / "train.seg"
        if path.exists() and not self.smoke:
            return path, f"CTB6 train ({path})"
        out = self.workdir / "train.seg"
        if path.exists():
            lines = read_seg_lines(path, SMOKE_TRAIN_SENTENCES)
            origin = f"first {len(lines)} sentences of CTB6 train ({path})"
        else:
            lines = textgen.segmented_lines(SMOKE_TRAIN_SENTENCES if self.smoke else SYNTHETIC_TRAIN_SENTENCES,
                                            seed=2)
            origin = f"synthetic segmented text from bench/textgen.py ({path} not found)"
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return out, origin

    # -- models
    def models(self) -> list[ModelInfo]:
        """Checkpoint directories in the models dir; in --smoke mode a tiny model is trained if there are none."""
        if self._models is None:
            self._models = find_models(self.models_dir)
            if not self._models and self.smoke:
                try:
                    self.models_dir = self._train_tiny()
                except ImportError as exc:  # a copy without tests/
                    self.notes.append(f"no models in {self.models_dir} and no tiny one could be trained ({exc})")
                self._models = find_models(self.models_dir)
        return self._models

    def seg_model(self) -> ModelInfo | None:
        """zh-seg, else the first seg model, else None."""
        models = self.models()
        seg = [m for m in models if m.task == "seg"]
        preferred = [m for m in seg if m.name == "zh-seg"]
        return (preferred or seg or [None])[0]

    def _train_tiny(self) -> Path:
        from tests.fixtures import train_tiny  # the test suite's tiny-corpus trainer

        run = train_tiny(self.workdir / "tiny", "seg", epochs=1)
        models = self.workdir / "models"
        models.mkdir(parents=True, exist_ok=True)
        shutil.copytree(run / "best", models / "zh-seg")
        self.notes.append(f"no models in {self.models_dir}: a tiny seg model was trained on the fly "
                          "(tests/fixtures.py train_tiny) and used as zh-seg")
        return models

    def no_models_note(self) -> str:
        return f"not measured: no models in {self.models_dir} (train one, or pass --models DIR)"


def find_models(directory: Path) -> list[ModelInfo]:
    models = []
    if directory.is_dir():
        for sub in sorted(directory.iterdir()):
            config = sub / "config.json"
            if sub.is_dir() and not sub.name.startswith(".") and config.exists():
                try:
                    task = json.loads(config.read_text(encoding="utf-8")).get("task", "?")
                except (OSError, ValueError):
                    continue
                models.append(ModelInfo(sub.name, sub, task))
    return models


# ---- servers ---------------------------------------------------------------

def http_inputs(ctx: Context) -> tuple[ModelInfo, list[str]] | str:
    """What the HTTP benchmarks (load, service) serve and send: the seg model and the non-blank dev sentences;
    or, where they cannot run, the note that says why (httpx or aiohttp missing, no seg model)."""
    for client in ("httpx", "aiohttp"):
        if importlib.util.find_spec(client) is None:
            return f"not measured: {client} is not installed (`pip install -e .[test]`)"
    model = ctx.seg_model()
    if model is None:
        return ctx.no_models_note() if not ctx.models() else f"not measured: no seg model in {ctx.models_dir}"
    return model, [t for t in ctx.dev_texts().texts if t.strip()]


@dataclass
class Server:
    """One ``seqtag serve`` process (uvicorn, one worker) on 127.0.0.1."""

    name: str
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


def server_env(ctx: Context, name: str, extra: Mapping[str, str], models_dir: Path | None = None) -> dict[str, str]:
    """Default settings (not the shell's SEQTAG_*), warning-level logs, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQTAG_")}
    env.update(SEQTAG_MODELS_DIR=str(models_dir or ctx.models_dir), SEQTAG_DEVICE=ctx.device.type,
               SEQTAG_LOG_LEVEL="warning", SEQTAG_DICTIONARIES_DIR=str(ctx.workdir / f"dictionaries-{name}"),
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def start_server(ctx: Context, name: str, extra: Mapping[str, str], attempt: int = 1,
                 models_dir: Path | None = None) -> Server:
    port = free_port()
    log = ctx.workdir / f"server-{name}-{attempt}.log"
    cmd = [sys.executable, "-m", "seqtag.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=server_env(ctx, name, extra, models_dir), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # own process group: stop_server reaches its workers
    return Server(name, f"http://127.0.0.1:{port}", proc, log)


def stop_server(server: Server) -> None:
    stop_process_group(server.proc)


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True`` and everything in its group: SIGTERM (uvicorn
    stops its workers), then SIGKILL if it hangs; a no-op once it has ended. Killing only the parent would
    leave SEQTAG_WORKERS' processes behind."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    with contextlib.suppress(ProcessLookupError):  # workers outliving the parent
        os.killpg(proc.pid, signal.SIGKILL)


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
def running_servers(ctx: Context, configs: Mapping[str, Mapping[str, str]], models_dir: Path | None = None,
                    attempts: int = 3) -> Iterator[dict[str, Server]]:
    """One server per ``configs`` entry (name -> extra environment), started together and ready; always
    stopped at the end. A port taken between picking it and binding it ("address already in use") is retried
    with another."""
    servers: dict[str, Server] = {}
    try:
        pending = list(configs)
        for attempt in range(1, attempts + 1):
            for name in pending:
                servers[name] = start_server(ctx, name, configs[name], attempt, models_dir)
            failed = [name for name in pending if not wait_ready(servers[name], timeout=180)]
            for name in failed:
                stop_server(servers[name])
                output = servers[name].log.read_text(errors="replace")
                if "address already in use" not in output.lower() or attempt == attempts:
                    raise RuntimeError(f"the server {name!r} did not get ready "
                                       f"(exit status {servers[name].proc.poll()}):\n{output[-3000:]}")
            pending = failed
            if not pending:
                break
        yield servers
    finally:
        for server in servers.values():
            stop_server(server)


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


def say_progress(bench: str, started: float, message: str) -> None:
    """One progress line of a long benchmark on stderr, with the seconds since it ``started``."""
    print(f"bench: {bench}: {time.perf_counter() - started:5.1f} s: {message}", file=sys.stderr, flush=True)
