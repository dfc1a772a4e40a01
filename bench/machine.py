"""The header of BENCHMARKS.md: when, on what machine and software, at which commit."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

from bench.common import REPO_ROOT


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _run(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def gpu() -> str:
    if not torch.cuda.is_available():
        return "none (CUDA not available to torch)"
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    driver = driver.splitlines()[0] if driver else "unknown"
    return f"{names} (driver {driver}, CUDA runtime {torch.version.cuda})"


def git_commit() -> str:
    commit = _run(["git", "rev-parse", "HEAD"])
    if not commit:
        return "unknown (not a git checkout)"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return commit + (" + uncommitted changes" if dirty else "")


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    cores = os.cpu_count() or 1
    busy = " (busy: other work was running, numbers are unreliable)" if one > 0.5 * cores else ""
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {cores} cores{busy}"


def header_rows(device: torch.device) -> list[tuple[str, str]]:
    import tokenizers

    ram = memory_gib()
    machine = f"{cpu_model()}, {os.cpu_count()} cores" + (f", {ram:.1f} GiB RAM" if ram else "")
    return [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", machine),
        ("GPU", gpu()),
        ("device used", str(device)),
        ("torch threads", str(torch.get_num_threads())),
        ("load average at start", load_average()),
        ("Python", platform.python_version()),
        ("torch", torch.__version__),
        ("tokenizers", tokenizers.__version__),
        ("git commit", git_commit()),
    ]
