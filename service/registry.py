"""The models being served: one :class:`LoadedModel` (pipeline + batcher) per checkpoint directory.

Every subdirectory of ``models_dir`` whose name matches ``NAME_PATTERN`` is a
model named after it; directories that fail to load are logged and skipped.
:meth:`ModelRegistry.reload` loads from disk into *new* pipelines and batchers,
swaps the whole name -> model mapping in one assignment, and stops each replaced
batcher only after the requests holding it (see :meth:`LoadedModel.lease`) are done,
so no in-flight request fails. A model whose directory no longer loads keeps its
previous version serving, and the reload reports why.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from seqtag.models.codec import LEXICON_FILE
from seqtag.models.checkpoint import REQUIRED_FILES, CheckpointError, read_config
from seqtag.models.pipeline import Pipeline
from seqtag.service.batcher import Batcher
from seqtag.service.metrics import Metrics
from seqtag.service.settings import NAME_PATTERN, Settings

log = logging.getLogger("seqtag.registry")
_NAME = re.compile(NAME_PATTERN)
PREFERRED = {"seg": "zh-seg", "pos": "zh-pos", "ner": "zh-ner"}


def valid_name(name: str) -> bool:
    # fullmatch: with match, "$" would also accept a name ending in a newline ("brands\n")
    return bool(_NAME.fullmatch(name)) and name not in (".", "..")


def checkpoint_version(directory: Path) -> str:
    """Content hash of the checkpoint's files (config, weights, tokenizer, codec, and the lexicon when it has
    one): same files, same version."""
    digest = hashlib.sha256()
    names = REQUIRED_FILES + ((LEXICON_FILE,) if (directory / LEXICON_FILE).exists() else ())
    for name in names:
        path = directory / name
        try:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()[:12]


#: What GET /v1/models and /readyz (open to anyone) say about a checkpoint that failed to load: a short reason,
#: never its path or the loader's text (those go to the log, and to the admin's reload answer).
_PUBLIC_REASONS = (("newer than this seqtag", "written by a newer seqtag"), ("NaN", "weights contain NaN or infinities"),
                   ("pickled", "pickled weights refused"), ("not a seqtag checkpoint", "not a seqtag checkpoint"))


def public_reason(exc: BaseException) -> str:
    """A short reason for a failed load, safe to show without a token."""
    if isinstance(exc, CheckpointError):
        text = str(exc)
        why = next((short for marker, short in _PUBLIC_REASONS if marker in text), "invalid checkpoint")
    else:
        why = f"failed to load ({type(exc).__name__})"
    return f"{why}; details in the server log"


def check_finite(pipeline: Pipeline, directory: Path) -> None:
    """Refuse weights holding NaN or infinities: safetensors has no checksum, so flipped bits in the
    tensor data (or a diverged training run) load without error and would tag nonsense."""
    bad = [name for name, tensor in pipeline.tagger.state_dict().items()  # int8 models hold packed params too
           if isinstance(tensor, torch.Tensor) and tensor.is_floating_point()
           and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise CheckpointError(f"{directory}/model.safetensors: weights contain NaN or infinite values "
                              f"({', '.join(bad[:5])}); the file is corrupt or training diverged")


@dataclass(eq=False)
class LoadedModel:
    name: str
    directory: Path
    pipeline: Pipeline
    batcher: Batcher
    version: str
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    active: int = 0
    retired: bool = False
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def task(self) -> str:
        return self.pipeline.meta.task

    @property
    def labels(self) -> list[str]:
        return list(self.pipeline.meta.labels)

    @property
    def config(self) -> dict[str, Any]:
        return self.pipeline.meta.extra

    @contextlib.contextmanager
    def lease(self) -> Iterator["LoadedModel"]:
        """Hold the model for one request: a reload stops its batcher only after every lease ended."""
        self.active += 1
        self._idle.clear()
        try:
            yield self
        finally:
            self.active -= 1
            if self.active == 0:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        if self.active == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def describe(self) -> dict[str, Any]:
        meta = self.pipeline.meta
        cfg = self.config
        b = self.batcher
        return {
            "name": self.name,
            "task": meta.task,
            "scheme": meta.scheme.value,
            "labels": meta.labels,
            "version": self.version,
            "saved_at": cfg.get("saved_at"),
            "architecture": cfg.get("architecture"),
            "dev_metrics": cfg.get("dev_metrics"),
            "device": str(self.pipeline.device),
            "precision": self.pipeline.arithmetic,
            "load_seconds": round(self.load_seconds, 4),
            "batching": {
                "max_batch_size": b.max_batch_size,
                "max_batch_units": b.max_batch_units,
                "max_wait_ms": b.max_wait * 1000.0,
                "wait_policy": b.wait_policy,
                "max_queue": b.max_queue,
                "queue_depth": b.queue_depth,
                "running": b.running,
            },
        }


@dataclass
class ReloadReport:
    loaded: list[str] = field(default_factory=list)  # new or replaced
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> why (the previous version, if any, kept serving)

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "unchanged": self.unchanged, "removed": self.removed, "failed": self.failed}


def settle_heap() -> None:
    """Collect garbage, then take every object alive now out of the cyclic collector's reach (``gc.freeze``).

    The loaded models are long-lived objects the collector would otherwise walk on every full collection:
    with the four shipped models ~200k objects, 74 ms per walk, a pause for every request in flight (it set
    the service's p99 latency under load). Frozen objects are still freed when no longer referenced;
    unfreezing first lets the collector find cycles among objects frozen earlier (an unloaded model's)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics, device: torch.device):
        self.settings = settings
        self.metrics = metrics
        self.device = device
        self._models: dict[str, LoadedModel] = {}
        self.load_errors: dict[str, str] = {}  # name -> why, in full (log and admin answers)
        self.public_errors: dict[str, str] = {}  # name -> a short reason (public endpoints)
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()

    # ---- lookups (synchronous: no await between lookup and lease) ------------
    @property
    def models(self) -> list[LoadedModel]:
        return list(self._models.values())

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def default_for(self, task: str) -> LoadedModel | None:
        """The model named ``zh-<task>`` if loaded, else the first (by name) of that task."""
        preferred = self._models.get(PREFERRED.get(task, ""))
        if preferred is not None and preferred.task == task:
            return preferred
        for name in sorted(self._models):
            if self._models[name].task == task:
                return self._models[name]
        return None

    @property
    def ready(self) -> bool:
        return bool(self._models) and all(m.batcher.running for m in self._models.values())

    # ---- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        report = await self._load_all(previous={})
        for name, why in report.failed.items():
            log.error("model %s not loaded: %s", name, why)
        if not self._models:
            log.warning("no models loaded from %s: the service answers /readyz with 503", self.settings.models_dir)

    async def stop(self) -> None:
        models, self._models = list(self._models.values()), {}
        await asyncio.gather(*(m.batcher.stop(drain=True) for m in models), return_exceptions=True)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        self.metrics.models_loaded.set(0)

    async def reload(self) -> ReloadReport:
        async with self._reload_lock:
            if not self.settings.models_dir.is_dir():
                report = ReloadReport()
                report.failed["*"] = f"models directory {self.settings.models_dir} does not exist; nothing changed"
                return report
            return await self._load_all(previous=dict(self._models))

    # ---- loading ---------------------------------------------------------------
    def _directories(self) -> dict[str, Path]:
        root = self.settings.models_dir
        if not root.is_dir():
            log.warning("models directory %s does not exist", root)
            return {}
        if (root / "config.json").is_file() or _run_best(root):  # one checkpoint, or one training run
            return {_model_name(root): _run_best(root) or root}
        found = {}
        for path in sorted(root.iterdir()):
            if not path.is_dir() or path.name.startswith("."):
                continue
            if not valid_name(path.name):
                log.warning("skipping %s: a model name must match %s", path, NAME_PATTERN)
                continue
            found[path.name] = _run_best(path) or path  # a run directory serves its best/ alone
        return found

    def _load_one(self, directory: Path) -> tuple[Pipeline, str, float]:
        start = time.perf_counter()
        # Layout and format first: its errors name the problem (pickled weights only, missing files,
        # a newer format) where hashing would only say that some file cannot be read.
        read_config(directory)
        version = checkpoint_version(directory)
        pipeline = Pipeline.load(directory, self.device, self.settings.cuda_precision, int8=self.settings.int8)
        check_finite(pipeline, directory)
        pipeline.codec.warm()  # the lexicon's word index: built while loading, not in the first request
        if checkpoint_version(directory) != version:
            # files replaced one by one while we read them: the pipeline may mix two checkpoints
            raise CheckpointError(f"{directory}: the checkpoint changed on disk while it was being loaded; "
                                  "reload again once it is written")
        return pipeline, version, time.perf_counter() - start

    def _batcher(self, name: str, pipeline: Pipeline) -> Batcher:
        s = self.settings
        return Batcher(
            pipeline, name=name, max_batch_size=s.max_batch_size, max_batch_units=s.max_batch_units,
            max_wait_ms=s.max_wait_ms, max_queue=s.max_queue, metrics=self.metrics, wait_policy=s.wait_policy,
            low_priority_units=s.low_priority_batch_units,
        )

    async def _load_all(self, previous: dict[str, LoadedModel]) -> ReloadReport:
        report = ReloadReport()
        public: dict[str, str] = {}
        directories = self._directories()
        new: dict[str, LoadedModel] = {}
        started: list[LoadedModel] = []
        try:
            for name, directory in directories.items():
                old = previous.get(name)
                if old is not None:
                    try:
                        same = await asyncio.to_thread(checkpoint_version, directory) == old.version
                    except CheckpointError:
                        same = False
                    if same:
                        new[name] = old
                        report.unchanged.append(name)
                        continue
                try:
                    pipeline, version, seconds = await asyncio.to_thread(self._load_one, directory)
                except Exception as exc:  # any unusable checkpoint: skip it, keep going
                    why = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
                    kept = "; the previous version keeps serving" if old is not None else ""
                    report.failed[name] = why + kept
                    public[name] = public_reason(exc) + kept
                    log.error("model %s failed to load: %s", name, why)
                    if old is not None:
                        new[name] = old
                    continue
                model = LoadedModel(name, directory, pipeline, self._batcher(name, pipeline), version, seconds)
                await model.batcher.start()
                started.append(model)
                new[name] = model
                report.loaded.append(name)
                self.metrics.model_load_seconds.labels(name).set(seconds)
                log.info("model %s loaded (%s, %s, version %s) in %.2fs on %s", name, model.task,
                         pipeline.meta.scheme.value, version, seconds, pipeline.device)
        except BaseException:
            for model in started:  # cancelled mid-way: undo, keep the old mapping
                await model.batcher.stop(drain=False)
            raise
        report.removed = [name for name in previous if name not in directories]
        replaced = [m for name, m in previous.items() if new.get(name) is not m]
        self._models = new  # the atomic swap
        self.load_errors = dict(report.failed)
        self.public_errors = public
        self.metrics.models_loaded.set(len(new))
        for model in replaced:
            self._retire(model, forget_metrics=model.name not in new)
        if report.loaded and self.settings.gc_freeze:
            settle_heap()
        return report

    def _retire(self, model: LoadedModel, forget_metrics: bool) -> None:
        model.retired = True
        model.batcher.report_depth = False  # the new batcher of that name owns the gauge now

        async def retire() -> None:
            if not await model.wait_idle(self.settings.request_timeout_s + 5.0):
                log.warning("model %s: requests still running after the grace period; stopping anyway", model.name)
            await model.batcher.stop(drain=True)
            if forget_metrics and model.name not in self._models:
                self.metrics.forget_model(model.name)
            log.info("model %s version %s unloaded", model.name, model.version)
            if self.settings.gc_freeze:
                settle_heap()  # its objects were frozen with the rest: let the collector see them again

        task = asyncio.create_task(retire(), name=f"retire-{model.name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


def _run_best(path: Path) -> Path | None:
    """``path/best`` when ``path`` is a training run (``best/`` and ``last/`` checkpoints, none of its own)."""
    best = path / "best"
    return best if not (path / "config.json").is_file() and (best / "config.json").is_file() else None


def _model_name(path: Path) -> str:
    """A checkpoint's name: its directory's, or for a run's ``best/`` (or ``last/``) the run's."""
    path = path.resolve()
    name = path.parent.name if path.name in ("best", "last") else path.name
    return name if valid_name(name) else "model"
