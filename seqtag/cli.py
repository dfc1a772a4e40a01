"""``seqtag`` command line: train, evaluate, predict, serve.

Errors the user can fix (bad files, bad config, bad checkpoints) are printed as
one ``seqtag: error: ...`` line with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import enum
import gc
import json
import logging
import os
import sys
import time
import typing
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel

from seqtag import bulk
from seqtag.models.textsplit import DEFAULT_WINDOW
from seqtag.training.config import SECTIONS, TrainConfig

# Task defaults: what the command as written should train well (tuned on the shared corpora).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "seg": {"format": "seg"},
    "pos": {"format": "conllu", "tag_column": "upos"},
    "ner": {
        "format": "column",
        "model": {"hidden": 200, "embed_dropout": 0.5, "dropout": 0.5},
        "optim": {"epochs": 50, "batch_size": 16, "patience": 10},
    },
}

_TOP_LEVEL = ("train", "dev", "format", "out", "tag_column", "scheme", "init_from", "export", "max_misaligned")


LOW_DEV_F1 = 50  # below this best dev F1 the trainer's last lines warn (a model not worth exporting yet)
_METAVARS = {"train": "FILE", "dev": "FILE", "out": "DIR", "init_from": "CHECKPOINT", "export": "DIR",
             "device": "DEVICE"}


class UsageError(Exception):
    pass


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(field: Any, section: str | None, name: str) -> str:
    """What a flag's help says its default is: the field's, and each task's where that differs."""
    if field.is_required():
        return "required"
    base = field.get_default(call_default_factory=True)
    if base is None or base == [] or base == {}:
        return ""
    text = f"default: {'yes' if base is True else 'no' if base is False else base}"
    by_task = {task: (layer.get(section, {}) if section else layer).get(name) for task, layer in TASK_DEFAULTS.items()}
    differ = [f"{task}: {value}" for task, value in by_task.items() if value is not None and value != base]
    return text + ("; " + ", ".join(differ) if differ else "")


def _enum_of(annotation: Any) -> type[enum.Enum] | None:
    """The Enum in ``annotation`` (``TagScheme | None`` -> TagScheme), if any."""
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return arg
    return None


def _add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel], dest_prefix: str, only=None) -> None:
    section = None if dest_prefix == "top." else dest_prefix.rstrip(".")
    for name, field in model.model_fields.items():
        if only is not None and name not in only:
            continue
        annotation = field.annotation
        origin = typing.get_origin(annotation)
        default = _default_text(field, section, name)
        help_text = " ".join((field.description or "").split()) + (f" ({default})" if default else "")
        dest = dest_prefix + name
        options: dict[str, Any] = {"dest": dest, "default": None, "help": help_text}
        if annotation is bool:
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **options)
        elif origin is typing.Literal:
            parser.add_argument(_flag(name), choices=list(typing.get_args(annotation)), **options)
        elif _enum_of(annotation) is not None:
            parser.add_argument(_flag(name), choices=[m.value for m in _enum_of(annotation)], **options)
        elif annotation in (int, float):
            parser.add_argument(_flag(name), type=annotation, metavar=name.upper(), **options)
        else:
            parser.add_argument(_flag(name), metavar=_METAVARS.get(name, "VALUE"), **options)


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model", description="Train a Bi-LSTM-CRF tagger.")
    p.add_argument("--task", choices=["seg", "pos", "ner"], help="what to learn")
    p.add_argument("--config", help="JSON or TOML file with any settings (flags override it)")
    p.add_argument("--label-map", help="rename labels, e.g. NR=PER,NS=LOC,NT=ORG")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last snapshot")
    _add_model_flags(p, TrainConfig, "top.", only=_TOP_LEVEL)
    p.add_argument("--lexicon", action="append", dest="top.lexicon", metavar="FILE",
                   help="a lexicon read as model input and stored in the checkpoint (repeatable): 'jieba' for "
                        "jieba's dict.txt (MIT, needs the jieba package at training time), 'jionlp-places' for "
                        "jionlp's place names (Apache-2.0, needs jionlp), or a file of lines "
                        "'word', 'word TAG' or jieba's 'word FREQ TAG'")
    for section, model in SECTIONS.items():
        group = p.add_argument_group(section)
        _add_model_flags(group, model, f"{section}.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqtag", description="Chinese segmentation, POS and NER taggers.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    e = sub.add_parser("evaluate", help="score a model on a labelled file")
    e.add_argument("model", help="a model name (zh-seg, zh-seg-fast, zh-pos, zh-ner) or a checkpoint directory")
    e.add_argument("data")
    e.add_argument("--format", choices=["seg", "conllu", "column", "wordpos", "jsonl"])
    e.add_argument("--tag-column", choices=["upos", "xpos", "none"])
    e.add_argument("--label-map")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    pr = sub.add_parser("predict", help="tag raw text, one document per line")
    pr.add_argument("model", help="a model name (zh-seg, zh-seg-fast, zh-pos, zh-ner) or a checkpoint directory")
    pr.add_argument("input", nargs="?", help="input file (default: stdin)")
    pr.add_argument("--format", choices=["seg", "column", "wordpos", "jsonl"], default=None,
                    help="output format (default: seg for seg/pos models, jsonl for ner; wordpos: word_TAG tokens, "
                    "pos models)")
    pr.add_argument("--output", "-o", help="output file (default: stdout)")
    pr.add_argument("--scores", action="store_true",
                    help="jsonl output: add \"scores\", each span's confidence (0..1, from the CRF's marginals)")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--batch-size", type=int, default=256)
    pr.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="N",
                    help="tag each line in pieces, as the service does: cut at every sentence end, and pieces over N "
                    f"characters cut again (default {DEFAULT_WINDOW}; 0: each line whole)")
    e.add_argument("--window", type=int, default=0, metavar="N",
                   help="tag each line in pieces as `seqtag predict` does (default 0: each line whole, as the "
                   "gold file gives it)")
    for command in (e, pr):
        command.add_argument("--dictionary", action="append", metavar="FILE",
                             help="user dictionary whose words are forced whole (repeatable; later files win): "
                             "lines 'word', 'word LABEL' or jieba's 'word FREQ TAG', or the service's JSON")
        command.add_argument("--dictionary-mode", choices=["hard", "soft"], default="hard",
                             help="hard (default): the dictionary's words are forced; soft: they join the model's "
                             "lexicon as evidence the model weighs against the context (models trained with "
                             "--lexicon)")
        command.add_argument("--dictionary-words-only", action="store_true",
                             help="force the dictionary's words but not their labels (e.g. a jieba dictionary's "
                             "tags, which are not this model's)")
        command.add_argument("--workers", type=int, default=None,
                             help="on a CPU, batches tagged at once, each on its own thread with cores/workers torch "
                             "threads (default: one per core for a recurrent model, else 1)")
        command.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                             help="on a CPU, run a model marked for dynamic int8 in int8 (default); --no-int8: "
                             "float32, slower, but each text's tags no longer depend on the texts batched with it")
    c = sub.add_parser("compact", help="shrink a checkpoint for shipping (prune bigrams, 16-bit weights, int8 tables)")
    c.add_argument("model")
    c.add_argument("out")
    c.add_argument("--max-bigrams", type=int, help="keep only the N most frequent bigrams")
    c.add_argument("--half", action=argparse.BooleanOptionalAction, default=None,
                   help="store weights in float16 (default: as the source checkpoint)")
    c.add_argument("--int8-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="store the embedding tables as int8 rows with one scale each (default: as the source)")
    c.add_argument("--average", action="append", default=[], metavar="CHECKPOINT",
                   help="average the model's weights with this checkpoint's (repeatable): one lineage only, e.g. a "
                   "model and its --init-from restart (same codec, lexicon and architecture)")
    c.add_argument("--dev", help="re-score the compacted model on this dev file and store the new dev metrics")
    c.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                   help="mark the model for dynamic int8 quantisation of its encoder (and a projection "
                   "to 64+ tags) on CPU")
    c.add_argument("--int8-weights", choices=["per-tensor", "per-channel"],
                   help="int8 weight scales: one per matrix (per-tensor, the default) or one per output row "
                   "(per-channel: about half the F1 loss on zh-ner, 0.07 vs 0.14, for a 2-4%% slower LSTM)")
    s = sub.add_parser("serve", help="start the HTTP service")
    s.add_argument("--models", help="directory of checkpoint directories")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"])
    s.add_argument("--workers", type=int, help="uvicorn worker processes (replicas, each with its own batchers)")
    s.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                   help="on a CPU, run models marked for dynamic int8 in int8 (default: SEQTAG_INT8, true); "
                   "--no-int8: float32, so a text's tags never depend on the requests batched with it")
    bulk.add_parser(sub)  # seqtag bulk: seqtag/bulk.py
    return parser


# ---- train ---------------------------------------------------------------

def _layers_from_args(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if value is None or "." not in dest:
            continue
        section, name = dest.split(".", 1)
        if section == "top":
            flags[name] = value
        else:
            flags.setdefault(section, {})[name] = value
    if args.task:
        flags["task"] = args.task
    if args.label_map:
        from seqtag.training.readers import parse_label_map

        flags["label_map"] = parse_label_map(args.label_map)
    return flags


def cmd_train(args: argparse.Namespace) -> int:
    from seqtag.training.config import build_config, load_config_file
    from seqtag.training.trainer import STATE_JSON, Trainer

    flags = _layers_from_args(args)
    if args.resume:
        out = flags.get("out")
        if not out or not (Path(out) / "last" / STATE_JSON).exists():
            raise UsageError(f"--resume needs --out pointing at a run with a last/ snapshot (got {out!r})")
        saved = json.loads((Path(out) / "last" / "config.json").read_text(encoding="utf-8"))["training"]
        config = build_config(saved, {k: v for k, v in flags.items() if k in ("optim", "run")})
    else:
        file_layer = load_config_file(args.config) if args.config else {}
        task = flags.get("task") or file_layer.get("task")
        if task not in TASK_DEFAULTS:
            raise UsageError("--task is required (seg, pos or ner)")
        config = build_config(TASK_DEFAULTS[task], file_layer, flags)
    trainer = Trainer(config, resume=args.resume)
    if not trainer.dist.is_main:  # other data-parallel ranks train silently
        for _ in trainer.train():
            pass
        return _leave(trainer)
    d = trainer.data
    print(f"train: {len(d.ids)} sentences ({d.spans} spans, {d.misaligned} off unit boundaries, "
          f"{d.dropped} sentences left out); dev: {len(trainer.dev_examples)}; tags: {len(trainer.meta.tags)}; "
          f"device: {trainer.device}", file=sys.stderr)
    if d.misaligned:
        print(f"note: {d.misaligned} gold span(s) end inside a unit (e.g. inside a Latin run); their "
              f"{d.dropped} sentence(s) are left out (--units chars keeps them)", file=sys.stderr)
    total = trainer.total_steps()
    if trainer.warmup_steps(total) < config.optim.warmup_steps:
        print(f"note: warm-up shortened to {trainer.warmup_steps(total)} steps, a tenth of the run's {total}",
              file=sys.stderr)
    has_dev = bool(trainer.dev_examples)
    if not has_dev:
        print("note: no --dev file: nothing to select epochs on, best/ keeps the last epoch", file=sys.stderr)
    for record in trainer.train():
        dev = record["dev"]
        scored = f"dev f1 {dev['f1']:6.2f}{'  *best*' if record['is_best'] else ''}" if has_dev else "saved"
        print(f"epoch {record['epoch']:3d}  loss {record['loss']:.4f}  {scored}  ({record['train_seconds']:.0f}s, "
              f"{record['train_units_per_s']} units/s)", file=sys.stderr, flush=True)
        trainer.write_plot()
    best = Path(config.out) / "best"
    if has_dev:
        print(f"best dev f1 {trainer.state['best_f1']:.2f} (epoch {trainer.meta.extra.get('epoch')}); "
              f"model in {best}", file=sys.stderr)
    else:
        print(f"model (last epoch, not scored) in {best}", file=sys.stderr)
    if has_dev and trainer.state["best_f1"] < LOW_DEV_F1:
        print(f"warning: best dev f1 {trainer.state['best_f1']:.2f} is below {LOW_DEV_F1}: the model has likely not "
              "learned yet (train longer, or check the data and labels)", file=sys.stderr)
    if config.export:
        best = trainer.export()
        print(f"exported to {best}", file=sys.stderr)
    print(f"serve it: seqtag serve --models {best}   tag a file: seqtag predict {best} FILE", file=sys.stderr)
    return _leave(trainer)


def _leave(trainer) -> int:
    """A data-parallel rank that has passed the final barrier exits at once, skipping gloo's teardown,
    which can abort the process (see ``Distributed.stop``); otherwise return the exit status."""
    if trainer.dist.enabled:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


# ---- evaluate / predict ----------------------------------------------------

def _batch_workers(pipeline, requested: int | None) -> int:
    """Batches to tag at once (``--workers``, default :meth:`Pipeline.batch_workers`), with the CPU's cores
    shared out among them as torch threads."""
    import torch

    from seqtag.models.runtime import usable_cores

    if requested is not None and requested < 1:
        raise UsageError(f"--workers must be at least 1, not {requested}")
    cores = usable_cores()
    workers = requested or pipeline.batch_workers(cores)
    if pipeline.device.type == "cpu":
        torch.set_num_threads(max(1, cores // workers))
    return workers


def _load_pipeline(model: str, device: str, int8: bool = True):
    # Importing torch and reading a checkpoint allocate many long-lived objects and no garbage
    # cycles: with the collector paused meanwhile, every command starts ~0.1 s sooner.
    collecting = gc.isenabled()
    gc.disable()
    try:
        from seqtag import resolve
        from seqtag.models.pipeline import Pipeline

        pipeline = Pipeline.load(resolve(model), device, int8=int8)
        if _program:
            # torch's import leaves ~175k long-lived objects that each full collection walks (~30 ms, more
            # than a third of a pass over CTB6 dev with zh-seg-fast); the command runs to its end, so they
            # are frozen out of the collector (jsonl output of CTB6 train with zh-seg-fast: 3.86 -> 3.39 s)
            gc.freeze()
        return pipeline
    finally:
        if collecting:
            gc.enable()


def read_gold(pipeline, data: str | Path, fmt: str | None = None, tag_column: str | None = None,
              label_map: dict[str, str] | None = None) -> list:
    """The labelled file ``data`` as ``pipeline``'s task sees it (``Example`` list); unset options come from
    the model's training config."""
    from seqtag.training.readers import read_corpus
    from seqtag.training.trainer import for_task

    training = pipeline.meta.extra.get("training", {})
    fmt = fmt or training.get("format", "seg")
    tag_column = "none" if pipeline.task == "seg" else (tag_column or training.get("tag_column", "upos"))
    label_map = label_map if label_map is not None else training.get("label_map", {})
    return for_task(read_corpus(data, fmt, tag_column=tag_column, label_map=label_map), pipeline.task)


def score_predictions(pipeline, gold: list, predicted: list, oov: bool = True) -> dict[str, Any]:
    """Metrics of ``predicted`` spans (one list per gold example) for ``pipeline``'s task; ``oov``: also OOV
    recall (seg/pos) or seen/unseen entity recall (ner), from the training words stored in the checkpoint."""
    from seqtag.models.spans import Example, Span
    from seqtag.training.metrics import scores_for_task

    vocab = _train_vocab(pipeline) if oov else None
    gold_labels = {s.label for e in gold for s in e.spans} - {""}
    if pipeline.task == "pos" and not gold_labels:  # words only (--tag-column none): segmentation scores
        pred = [Example(e.text, [Span(s.start, s.end) for s in spans]) for e, spans in zip(gold, predicted)]
        return scores_for_task("seg", gold, pred, vocab)
    pred = [Example(e.text, spans) for e, spans in zip(gold, predicted)]
    scores = scores_for_task(pipeline.task, gold, pred, vocab)
    model_labels = set(pipeline.meta.labels)
    if pipeline.task != "seg" and gold_labels and not gold_labels & model_labels:
        scores["warnings"] = [
            f"none of the file's labels ({', '.join(sorted(gold_labels)[:6])}...) are this model's "
            f"({', '.join(sorted(model_labels)[:6])}...): labelled scores are 0 by construction"
            + ("; --tag-column none scores the words alone" if pipeline.task == "pos" else
               "; --label-map renames the file's labels")]
    return scores


def score_pipeline(pipeline, data: str, fmt: str | None = None, tag_column: str | None = None,
                   label_map: dict[str, str] | None = None, workers: int = 1, dictionary=None,
                   window: int | None = None) -> dict[str, Any]:
    """Metrics of ``pipeline`` on a labelled file; unset options come from the model's training config."""
    gold = read_gold(pipeline, data, fmt, tag_column, label_map)
    start = time.perf_counter()
    predicted = pipeline.predict([e.text for e in gold], workers=workers, dictionary=dictionary, window=window)
    seconds = time.perf_counter() - start
    scores = score_predictions(pipeline, gold, predicted)
    scores["seconds"] = round(seconds, 3)
    return scores


def cmd_evaluate(args: argparse.Namespace) -> int:
    from seqtag.training.readers import parse_label_map

    pipeline = _load_pipeline(args.model, args.device, args.int8)
    label_map = parse_label_map(args.label_map) if args.label_map else None
    scores = score_pipeline(pipeline, args.data, args.format, args.tag_column, label_map,
                            workers=_batch_workers(pipeline, args.workers), dictionary=_dictionary(pipeline, args),
                            window=_window(args))
    for warning in scores.get("warnings", []):
        print(f"seqtag: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(scores, ensure_ascii=False))
    else:
        keys = [k for k in ("precision", "recall", "f1", "word_f1", "pos_accuracy", "oov_recall", "iv_recall",
                            "seen_recall", "unseen_recall") if k in scores]
        print("  ".join(f"{k} {scores[k]:.2f}" for k in keys))
        print(f"{scores['sentences']} sentences, {scores['chars']} chars, {scores['seconds']:.2f}s")
    return 0


def _train_vocab(pipeline) -> set[str] | None:
    """Words (seg/pos) or entity texts (ner) of the model's training corpus: stored in the checkpoint
    (``seen.json``), or for a checkpoint without it read from its training file when that is still there."""
    from seqtag.training.metrics import word_vocabulary

    if pipeline.meta.seen is not None:
        return pipeline.meta.seen
    path = pipeline.meta.extra.get("training", {}).get("train")
    if not path or not Path(path).exists():
        return None
    return word_vocabulary(read_gold(pipeline, path))


def _dictionary(pipeline, args: argparse.Namespace):
    """The ``--dictionary`` files' entries as the model's matcher (None without any)."""
    from seqtag.models.dictionary import DictionaryError, read_dictionary, without_labels

    if not args.dictionary:
        return None
    entries = [entry for path in args.dictionary for entry in read_dictionary(path)]
    if args.dictionary_words_only:
        entries = without_labels(entries)
    try:
        if args.dictionary_mode == "soft":
            return pipeline.soft_lexicon(entries)
        return pipeline.dictionary(entries)
    except DictionaryError as exc:  # a label the model lacks, or soft mode without a lexicon
        if args.dictionary_mode == "soft":
            raise UsageError(str(exc)) from None
        raise UsageError(f"{exc}; --dictionary-words-only forces the words without their labels") from None


def _window(args: argparse.Namespace) -> int | None:
    if args.window < 0:
        raise UsageError(f"--window must be 0 (lines whole) or a number of characters, not {args.window}")
    return args.window or None


def cmd_predict(args: argparse.Namespace) -> int:
    window = _window(args)
    pipeline = _load_pipeline(args.model, args.device, args.int8)
    workers = _batch_workers(pipeline, args.workers)
    dictionary = _dictionary(pipeline, args)
    fmt = args.format or ("jsonl" if pipeline.task == "ner" else "seg")
    if args.scores and fmt != "jsonl":
        raise UsageError(f"--scores needs --format jsonl (the {fmt} format has no place for them)")
    if fmt == "wordpos" and pipeline.task != "pos":
        raise UsageError(f"--format wordpos writes word_TAG tokens: it needs a pos model, and this is a "
                         f"{pipeline.task} model")
    source = open(args.input, encoding="utf-8") if args.input else sys.stdin
    sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        chunk: list[str] = []
        for line in source:
            chunk.append(line.rstrip("\n").rstrip("\r"))
            if len(chunk) >= 4096:
                _predict_chunk(pipeline, chunk, fmt, sink, args.batch_size, workers, dictionary, window, args.scores)
                chunk = []
        _predict_chunk(pipeline, chunk, fmt, sink, args.batch_size, workers, dictionary, window, args.scores)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.input or 'stdin'}: not UTF-8 text ({exc.reason})") from None
    finally:
        if args.input:
            source.close()
        if args.output:
            sink.close()
    return 0


def _predict_chunk(pipeline, texts: list[str], fmt: str, sink, batch_size: int, workers: int = 1,
                   dictionary=None, window: int | None = None, scores: bool = False) -> None:
    from seqtag.models.spans import Example
    from seqtag.training.readers import seg_lines, write_corpus

    if not texts:
        return
    table = pipeline.predict_table(texts, max_batch=batch_size, workers=workers, dictionary=dictionary,
                                   window=window, scores=scores)
    if fmt == "seg":  # built from the span arrays directly: no Span objects, no per-word Python
        sink.write(seg_lines(texts, table))
        return
    examples = [Example(t, s) for t, s in zip(texts, table.to_lists())]
    write_corpus(examples, sink, fmt, scheme=pipeline.meta.scheme, scores=scores)


def cmd_compact(args: argparse.Namespace) -> int:
    """Prune and/or halve a checkpoint (or average it with others of its lineage); evaluate the result on dev
    before shipping it."""
    import torch

    from seqtag.models.checkpoint import average_weights, load_checkpoint, save_checkpoint, stored_as, update_config
    from seqtag.models.pipeline import Pipeline

    tagger, codec, meta = load_checkpoint(args.model, "cpu")
    if args.average:
        configs = average_weights(tagger, codec, args.model, args.average)
        meta.extra["averaged_with"] = [{"checkpoint": str(p), "command": c.get("command")}
                                       for p, c in zip(args.average, configs)]
        meta.extra.pop("dev_metrics", None)  # the run's own scores are not the average's: --dev scores it
    source = stored_as(meta.extra)
    half = args.half if args.half is not None else source["half"]
    int8_rows = args.int8_embeddings if args.int8_embeddings is not None else source["int8_embeddings"]
    if args.max_bigrams is not None:
        codec.truncate_bigrams(args.max_bigrams)
        tagger.truncate_bigrams(codec.num_bigrams)
        meta.extra.setdefault("training", {}).setdefault("codec", {})["max_bigrams"] = args.max_bigrams
    meta.extra["compacted_from"] = {"max_bigrams": args.max_bigrams, "half": half, "int8_embeddings": int8_rows}
    if args.int8 is not None:
        meta.extra["inference"] = {**meta.extra.get("inference", {}), "quantize": "int8" if args.int8 else None}
    if args.int8_weights is not None:
        if meta.extra.get("inference", {}).get("quantize") != "int8":
            raise UsageError("--int8-weights needs a model marked for int8: add --int8")
        meta.extra["inference"]["int8_weights"] = args.int8_weights
    if meta.seen is None:  # a checkpoint from before seen.json: its training words, while the file is there
        meta.seen = _train_vocab(Pipeline(tagger, codec, meta, torch.device("cpu")))
    save_checkpoint(args.out, tagger, codec, meta, half=half, int8_embeddings=int8_rows)
    if args.dev:  # score what was written (16-bit and int8 included), so the card tells the truth
        scores = score_pipeline(Pipeline.load(args.out, "cpu"), args.dev)
        before = meta.extra.get("dev_metrics")
        update_config(args.out, dev_metrics=scores, dev_metrics_before_compaction=before)
        print(f"dev f1 {scores['f1']:.2f} (before: {(before or {}).get('f1')})", file=sys.stderr)
    size = sum(p.stat().st_size for p in Path(args.out).iterdir())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from seqtag.service.main import run
    except ImportError as exc:
        raise UsageError(f"the service is not available: {exc}") from None
    return run(models=args.models, host=args.host, port=args.port, device=args.device, workers=args.workers,
               int8=args.int8)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "compact": cmd_compact,
            "serve": cmd_serve, "bulk": bulk.cmd_bulk}


def _one_line(exc: BaseException) -> str:
    """The message on one line: e.g. a config error's indented list becomes ``head: a; b``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")


def main(argv: Sequence[str] | None = None) -> int:
    from seqtag.models.checkpoint import CheckpointError
    from seqtag.training.readers import CorpusError
    from seqtag.training.trainer import TrainingError

    global _finished
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = COMMANDS[args.command](args)
        _finished = args.command
        return status
    except BrokenPipeError:  # the reader went away (`seqtag predict ... | head`): stop quietly, as SIGPIPE would
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        except (OSError, ValueError):
            pass
        return 128 + 13
    except (UsageError, CheckpointError, CorpusError, TrainingError, ValueError, OSError) as exc:
        parser.exit(2, f"seqtag: error: {_one_line(exc)}\n")
    except KeyboardInterrupt:
        parser.exit(130, "seqtag: interrupted\n")


#: Commands that, run as the ``seqtag`` program, leave without the interpreter's teardown once their output is
#: flushed: unloading torch took ~0.3 s of a 1.5 s ``seqtag predict`` (nothing is left to clean up by then).
QUICK_EXIT = frozenset({"predict", "evaluate"})
_finished: str | None = None  # the command main() completed, if any
_program = False  # main() runs as the ``seqtag`` program (entry()), not called from Python


def entry() -> None:
    """The ``seqtag`` program (and ``python -m seqtag.cli``)."""
    global _program
    _program = True
    status = main()
    if _finished in QUICK_EXIT:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a reader that went away (`seqtag predict ... | head`)
                pass
        os._exit(int(status or 0))
    sys.exit(status)


if __name__ == "__main__":
    entry()
