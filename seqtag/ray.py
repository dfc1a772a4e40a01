"""Bulk tagging on Ray Data: a model loaded once per actor, batches of texts in, columns of spans out.

    from seqtag.ray import SeqtagPredictor, build_dataset

    ds = build_dataset(["corpus/"], "zh-seg")          # read -> tag (lazy; a ray.data.Dataset)
    ds.write_parquet("tagged/")                         # or: run_bulk(["corpus/"], "tagged/", "zh-seg")

:class:`SeqtagPredictor` is a plain callable class: Ray Data's ``map_batches`` builds one per actor, and the
same class works anywhere a batch is a pyarrow Table or a pandas DataFrame (Spark's ``mapInPandas``, see
docs/bulk.md). It tags with :meth:`Pipeline.predict_table`, the engine ``seqtag predict`` and the service run,
with the same defaults (window, dictionaries, int8), so its spans are ``seqtag predict``'s.

Each output row is its input row plus list columns ``starts``, ``ends`` (character offsets, half-open),
``labels`` (the span's label; "" for words of a segmentation model) and, on request, ``scores`` (0..1).

Ray itself is needed only by :func:`build_dataset` and :func:`run_bulk` (``pip install seqtag[ray]``); the
predictor needs pyarrow (and pandas for DataFrames).
"""

from __future__ import annotations

import io
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from seqtag.models.textsplit import DEFAULT_WINDOW

#: Rows tagged in one call of the engine: what ``seqtag predict`` reads and tags at once. Blocks of text files
#: are cut at the same lines, so each batch holds the texts ``seqtag predict`` tags together (this matters for
#: models that run dynamic int8 on a CPU, whose answers can depend on a text's batch-mates).
CHUNK = 4096
MAX_READ_TASKS = 1000
SPAN_COLUMNS = ("starts", "ends", "labels", "scores")
INSTALL_HINT = "pip install seqtag[ray]"
FORMATS = {".txt": "text", ".seg": "text", ".text": "text", ".jsonl": "jsonl", ".json": "jsonl",
           ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


class BulkError(ValueError):
    """A problem the user can fix (missing ray, bad paths, a column that is not there)."""


def require_ray():
    """The ``ray`` module, or a :class:`BulkError` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise BulkError(f"seqtag bulk needs Ray Data ({exc.name or 'ray'} is not installed): "
                        f"{INSTALL_HINT}") from None
    return ray


# ---- the callable class ----------------------------------------------------------------------------------------

class SeqtagPredictor:
    """Tags batches with one model, loaded once (per Ray actor, per Spark task, ...).

    ``model``: a shipped model's name or a checkpoint directory (:func:`seqtag.load`). ``text_column``: the
    column holding the texts (nulls are tagged as empty texts). ``scores``: add a ``scores`` column.
    ``window``: as ``seqtag predict --window`` (default the same; 0 or None: each text whole).
    ``dictionary``: user dictionary entries (``"word"`` or ``("word", "LABEL")``, e.g. from
    :func:`seqtag.models.dictionary.read_dictionary`), ``dictionary_mode`` hard or soft, ``words_only``:
    drop their labels (``--dictionary-words-only``). ``threads``: CPU cores this predictor may use (default:
    all the process sees); they are shared among batches tagged at once as ``seqtag predict`` shares them.
    ``chunk``: at most this many texts go to the engine at once (``seqtag predict``'s 4096).
    """

    def __init__(self, model: str | os.PathLike, *, text_column: str = "text", scores: bool = False,
                 window: int | None = DEFAULT_WINDOW, dictionary: Sequence[Any] | None = None,
                 dictionary_mode: str = "hard", words_only: bool = False, device: str = "auto", int8: bool = True,
                 threads: int | None = None, chunk: int = CHUNK, max_batch: int = 256):
        import torch

        import seqtag
        from seqtag.models.dictionary import without_labels
        from seqtag.models.runtime import usable_cores

        if window is not None and window < 0:
            raise BulkError(f"window must be 0 (texts whole) or a number of characters, not {window}")
        if chunk < 1:
            raise BulkError(f"chunk must be at least 1, not {chunk}")
        self.pipeline = seqtag.load(model, device=device, int8=int8)
        cores = threads or usable_cores()
        self.workers = self.pipeline.batch_workers(cores)
        if self.pipeline.device.type == "cpu":
            torch.set_num_threads(max(1, cores // self.workers))
        self.text_column, self.scores, self.window = text_column, scores, window or None
        self.chunk, self.max_batch = chunk, max_batch
        self.dictionary = None
        if dictionary:
            entries = without_labels(dictionary) if words_only else list(dictionary)
            self.dictionary = (self.pipeline.soft_lexicon(entries) if dictionary_mode == "soft"
                               else self.pipeline.dictionary(entries))

    def tag(self, texts: Sequence[str]):
        """A :class:`~seqtag.models.spans.SpanTable` for ``texts``, tagged ``chunk`` texts at a time."""
        from seqtag.models.spans import SpanTable

        parts = [self.pipeline.predict_table(texts[i : i + self.chunk], scores=self.scores, max_batch=self.max_batch,
                                             workers=self.workers, dictionary=self.dictionary, window=self.window)
                 for i in range(0, len(texts), self.chunk)]
        if len(parts) == 1:
            return parts[0]
        return SpanTable.concat(parts, self.pipeline.label_names) if parts else \
            SpanTable.empty(0, self.pipeline.label_names, self.scores)

    def __call__(self, batch):
        """``batch`` (a pyarrow Table, or a pandas DataFrame) with the span columns added (same type back)."""
        import pyarrow as pa

        pandas = not isinstance(batch, (pa.Table, pa.RecordBatch))
        table = pa.Table.from_pandas(batch, preserve_index=False) if pandas else batch
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if self._chunk_rows(table):  # rows that each hold a list of texts: one row per text out
            table = pa.table({self.text_column: pa.concat_arrays(
                [chunk.flatten() for chunk in table.column(self.text_column).chunks]
            ) if table.num_rows else pa.array([], pa.string())})
        texts = self._texts(table)
        for name, column in zip(SPAN_COLUMNS, span_columns(self.tag(texts), len(texts))):
            where = table.schema.get_field_index(name)
            table = table.set_column(where, name, column) if where >= 0 else table.append_column(name, column)
        return table.to_pandas() if pandas else table

    def _chunk_rows(self, table) -> bool:
        import pyarrow as pa

        return (self.text_column in table.column_names
                and pa.types.is_list(table.schema.field(self.text_column).type))

    def _texts(self, table) -> list[str]:
        import pyarrow as pa

        if self.text_column not in table.column_names:
            raise BulkError(f"no column {self.text_column!r} to tag (columns: {', '.join(table.column_names)}); "
                            "--text-column names it")
        column = table.column(self.text_column)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
                or pa.types.is_null(column.type)):
            raise BulkError(f"column {self.text_column!r} holds {column.type}, not text")
        return [t if t is not None else "" for t in column.to_pylist()]


def span_columns(spans, rows: int) -> list:
    """The list columns ``starts``, ``ends``, ``labels`` (and ``scores`` when ``spans`` has them) of a
    SpanTable, as pyarrow arrays built from its flat arrays (no per-span Python objects)."""
    import pyarrow as pa

    offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(spans.counts, out=offsets[1:])
    offsets = pa.array(offsets)
    names = np.asarray(list(spans.label_names) or [""], dtype=object)
    columns = [pa.ListArray.from_arrays(offsets, pa.array(spans.starts.astype(np.int32))),
               pa.ListArray.from_arrays(offsets, pa.array(spans.ends.astype(np.int32))),
               pa.ListArray.from_arrays(offsets, pa.array(names[spans.labels], type=pa.string()))]
    if spans.scores is not None:
        columns.append(pa.ListArray.from_arrays(offsets, pa.array(spans.scores, type=pa.float64())))
    return columns


# ---- reading ---------------------------------------------------------------------------------------------------

def split_lines(data: bytes, path: str = "") -> list[str]:
    """The lines of a UTF-8 text file as ``seqtag predict`` reads them (Python's universal newlines, the line
    end stripped, an empty last line after the final newline not counted)."""
    try:
        stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        return [line.rstrip("\n").rstrip("\r") for line in stream]
    except UnicodeDecodeError as exc:
        raise BulkError(f"{path or 'input'}: not UTF-8 text ({exc.reason})") from None


def _lines_datasource(paths: list[str], chunk: int, **kwargs):
    """A Ray datasource of the lines of text files as rows of ``chunk`` lines (column ``text``, a list of
    strings), each within one file and starting at a multiple of ``chunk`` lines: the texts ``seqtag predict``
    tags together. :class:`SeqtagPredictor` gives each line its own output row."""
    import pyarrow as pa
    from ray.data.datasource import FileBasedDatasource

    class LinesDatasource(FileBasedDatasource):
        def _read_stream(self, f, path: str) -> Iterator[Any]:
            lines = split_lines(f.readall(), path)
            chunks = [lines[start : start + chunk] for start in range(0, len(lines), chunk)] or [[]]
            yield pa.table({"text": pa.array(chunks, type=pa.list_(pa.string()))})

    return LinesDatasource(paths, **kwargs)


def _is_uri(path: str) -> bool:
    return "://" in str(path)


def detect_format(inputs: Sequence[str]) -> str:
    """text, jsonl or parquet, from the files' extensions (a directory: the files in it); text when unknown."""
    found: set[str] = set()
    for given in inputs:
        if _is_uri(given):
            candidates = [given]
        elif Path(given).is_dir():
            candidates = [str(p) for p in Path(given).rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]
        else:
            candidates = [given]
        for name in candidates:
            found.add(FORMATS.get(Path(name).suffix.lower(), "text"))
    if len(found) > 1:
        raise BulkError(f"the inputs mix formats ({', '.join(sorted(found))}): give one kind, or --input-format")
    return found.pop() if found else "text"


def read_dataset(inputs: Sequence[str], input_format: str = "auto", chunk: int = CHUNK):
    """A Ray Dataset of the inputs (files, directories, or URIs Ray's filesystems read), in blocks of at most
    ``chunk`` rows."""
    ray = require_ray()
    paths = [str(p) for p in inputs]
    for path in paths:
        if not _is_uri(path) and not Path(path).exists():
            raise BulkError(f"{path}: no such file or directory")
    fmt = detect_format(paths) if input_format == "auto" else input_format
    if fmt == "text":
        source = _lines_datasource(paths, chunk)
        # one read task per file (up to MAX_READ_TASKS), and no further splitting of a task's blocks: Ray
        # would otherwise cut them to reach its parallelism target, and the chunks would no longer be
        # `seqtag predict`'s
        tasks = max(1, min(len(source._paths()), MAX_READ_TASKS))
        ds = ray.data.read_datasource(source, override_num_blocks=tasks)
        # Ray gathers a read task's rows into one block: one chunk per block lets the actors share them
        return ds.repartition(target_num_rows_per_block=1)
    if fmt == "jsonl":
        ds = ray.data.read_json(paths, lines=True)
    elif fmt == "parquet":
        ds = ray.data.read_parquet(paths)
    else:
        raise BulkError(f"unknown input format {input_format!r} (text, jsonl, parquet)")
    # a file's rows in blocks of ``chunk`` from its start: the batches `seqtag predict` would tag (exactly so
    # for one file; several small files may share a block)
    return ds.repartition(target_num_rows_per_block=chunk)


# ---- the pipeline ----------------------------------------------------------------------------------------------

def plan_actors(actors: int | None = None, device: str = "auto") -> dict[str, Any]:
    """How many actors and what each gets, from the connected cluster's resources: one GPU each when the
    cluster has GPUs (and ``device`` allows), else CPU actors with an equal share of the CPUs as threads."""
    ray = require_ray()
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if gpus and device in ("auto", "cuda"):
        n = actors or gpus
        return {"actors": n, "num_gpus": 1, "num_cpus": 1, "threads": 1, "device": "cuda"}
    if device == "cuda":
        raise BulkError("--device cuda, but the Ray cluster has no GPUs")
    n = actors or 1
    # each actor runs cpus/n torch threads, but the actors reserve one CPU less than the cluster has: Ray Data's
    # light tasks (reading, cutting blocks, writing; one CPU each) need a free CPU to be scheduled at all, and
    # would wait for ever on a cluster whose CPUs the actors hold for their lifetime. (Tasks that ask for no CPU
    # were no way out: Ray 2.60 started a new worker process for each, ~0.6 s per block written.)
    reserve = round(max(cpus - 1, 0) / n, 2)
    return {"actors": n, "num_gpus": 0, "num_cpus": reserve, "threads": max(1, cpus // n), "device": "cpu"}


def build_dataset(inputs: Sequence[str] | str, model: str, *, input_format: str = "auto", text_column: str = "text",
                  scores: bool = False, window: int | None = DEFAULT_WINDOW, dictionary: Sequence[Any] | None = None,
                  dictionary_mode: str = "hard", words_only: bool = False, int8: bool = True,
                  actors: int | None = None, chunk: int = CHUNK, device: str = "auto"):
    """read -> tag, lazily: a Ray Dataset of the input rows with span columns (write it with
    ``write_parquet``/``write_json``). Needs a connected Ray (``ray.init``). ``actors``: how many model copies
    (default: one per GPU, else 1 using every CPU; see :func:`plan_actors`). An actor that dies is restarted
    and its batch tagged again."""
    ray = require_ray()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [str(inputs)]
    if actors is not None and actors < 1:
        raise BulkError(f"--actors must be at least 1, not {actors}")
    seqtag_resolve(model)  # a bad model name fails here, in one line, not inside an actor
    if dictionary:  # and so does a dictionary the model cannot take
        check_dictionary(model, dictionary, dictionary_mode, words_only)
    plan = plan_actors(actors, device)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # output rows (and files) in input order
    ds = read_dataset(list(inputs), input_format, chunk)
    return ds.map_batches(
        SeqtagPredictor,
        fn_constructor_args=(str(model),),
        fn_constructor_kwargs=dict(text_column=text_column, scores=scores, window=window, dictionary=dictionary,
                                   dictionary_mode=dictionary_mode, words_only=words_only, int8=int8,
                                   device=plan["device"], threads=plan["threads"], chunk=chunk),
        batch_size=None,  # whole blocks: each is a chunk of at most ``chunk`` texts cut as `seqtag predict` cuts
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
        num_cpus=plan["num_cpus"],
        num_gpus=plan["num_gpus"],
        # Ray Data restarts an actor that dies (a lost node, the OOM killer) and sends its unfinished batch to
        # another, without limit (max_restarts=-1, max_task_retries=-1 are its defaults for actor pools); an
        # exception raised by the tagging itself fails the run
    )


def check_dictionary(model: str, dictionary: Sequence[Any], mode: str, words_only: bool) -> None:
    """A :class:`BulkError` for entries ``model`` cannot take (a label it lacks, soft mode without a lexicon)."""
    import seqtag
    from seqtag.models.dictionary import DictionaryError, without_labels

    pipeline = seqtag.load(model, device="cpu", int8=False)
    entries = without_labels(dictionary) if words_only else list(dictionary)
    try:
        pipeline.soft_lexicon(entries) if mode == "soft" else pipeline.dictionary(entries)
    except DictionaryError as exc:
        hint = "" if mode == "soft" else "; --dictionary-words-only forces the words without their labels"
        raise BulkError(f"{exc}{hint}") from None


def seqtag_resolve(model: str) -> Path:
    import seqtag

    try:
        return seqtag.resolve(model)
    except FileNotFoundError as exc:
        raise BulkError(str(exc)) from None


def connect(address: str | None = None, num_cpus: int | None = None):
    """``ray.init``: the cluster at ``address`` ("auto": the one this machine belongs to), else a new local one."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **options)
    return ray


def run_bulk(inputs: Sequence[str] | str, output: str | os.PathLike, model: str, *, output_format: str = "parquet",
             address: str | None = None, overwrite: bool = False, **options) -> dict[str, Any]:
    """read -> tag -> write on a Ray cluster (``address``; a local one when None). ``output``: a directory of
    Parquet (default) or JSON-lines files. A local output is written to a hidden directory beside it and
    renamed into place at the end, so a run that fails leaves no partial output; Ray's writers name each file
    by the dataset and its write task, so a retried task overwrites its own file and nothing is written twice.
    ``options`` go to :func:`build_dataset`. Returns what was done (rows, files, seconds)."""
    if output_format not in ("parquet", "jsonl"):
        raise BulkError(f"--format must be parquet or jsonl, not {output_format!r}")
    target = str(output)
    local = not _is_uri(target)
    if local and Path(target).exists():
        if not overwrite:
            raise BulkError(f"{target} exists: remove it, or pass --overwrite")
    ray = connect(address)
    started = time.perf_counter()
    ds = build_dataset(inputs, model, **options)
    where = target
    if local:
        final = Path(target).resolve()
        final.parent.mkdir(parents=True, exist_ok=True)
        where = str(final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        if output_format == "parquet":
            ds.write_parquet(where)
        else:
            ds.write_json(where, force_ascii=False)
        if local:
            if final.exists():
                shutil.rmtree(final)
            os.replace(where, final)
    finally:
        if local and Path(where).exists():
            shutil.rmtree(where, ignore_errors=True)
    seconds = time.perf_counter() - started
    files = sorted(Path(target).iterdir()) if local else []
    rows = None
    if local and output_format == "parquet":
        import pyarrow.parquet as pq

        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in files if p.suffix == ".parquet")
    del ray
    return {"output": target, "files": len(files), "rows": rows, "seconds": seconds}


def read_output(output: str | os.PathLike, columns: Iterable[str] | None = None):
    """A bulk output directory (Parquet or JSON lines) back as one pyarrow Table, rows in input order."""
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    files = sorted(p for p in Path(output).iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    tables = [pq.read_table(p, columns=list(columns) if columns else None) if p.suffix == ".parquet"
              else pj.read_json(p) for p in files]
    return pa.concat_tables(tables) if tables else pa.table({})
