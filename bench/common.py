"""What every benchmark shares: the run context (sizes, device, models, texts), tables and timing helpers."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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
                self._dev = TextSource(texts, f"CTB6 dev ({path})")
            else:
                lines = textgen.segmented_lines(limit or SYNTHETIC_DEV_SENTENCES, seed=1)
                texts = ["".join(line.split()) for line in lines]
                self._dev = TextSource(texts, f"synthetic Chinese text from bench/textgen.py ({path} not found)")
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
