"""``seqtag bulk``: tag files or directories on a Ray cluster (local when no address is given).

The command's flags and its entry point; the work is in :mod:`seqtag.ray`, imported only when the command
runs, so ``seqtag`` and its other commands never need Ray.
"""

from __future__ import annotations

import argparse
import sys

from seqtag.models.textsplit import DEFAULT_WINDOW
from seqtag.ray import CHUNK  # seqtag.ray imports Ray only inside its functions


def add_parser(sub) -> None:
    b = sub.add_parser(
        "bulk", help="tag files or directories on a Ray cluster (pip install seqtag[ray])",
        description="Read text lines, JSON lines or Parquet (files or directories), tag them with one model copy "
        "per Ray actor, and write Parquet or JSON lines: each input row with list columns starts, ends, labels "
        "(and scores). Spans are `seqtag predict`'s (same engine, window and dictionaries). OUTPUT is a directory; "
        "a local one appears only when the whole run has succeeded.")
    b.add_argument("model", help="a model name (zh-seg, zh-seg-fast, zh-pos, zh-ner) or a checkpoint directory")
    b.add_argument("input", nargs="+", help="input files or directories (or URIs Ray reads, e.g. s3://...)")
    b.add_argument("output", help="output directory (or URI)")
    b.add_argument("--ray", metavar="ADDRESS", dest="address",
                   help="the Ray cluster to run on (e.g. auto, ray://head:10001); default: a new local one")
    b.add_argument("--format", choices=["parquet", "jsonl"], default="parquet", help="output format (default parquet)")
    b.add_argument("--input-format", choices=["auto", "text", "jsonl", "parquet"], default="auto",
                   help="default auto: by extension (.jsonl/.json jsonl, .parquet parquet, anything else text lines)")
    b.add_argument("--text-column", default="text", help="the column of JSON lines or Parquet to tag (default text)")
    b.add_argument("--actors", type=int, metavar="N",
                   help="model copies (default: one per GPU of the cluster; without GPUs 1, with every CPU as "
                   "its threads)")
    b.add_argument("--batch-size", type=int, default=CHUNK, metavar="N",
                   help=f"texts tagged together, a Ray batch (default {CHUNK}: what `seqtag predict` tags at once)")
    b.add_argument("--scores", action="store_true", help="add a scores column: each span's confidence (0..1)")
    b.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="N",
                   help=f"as `seqtag predict --window` (default {DEFAULT_WINDOW}; 0: each text whole)")
    b.add_argument("--dictionary", action="append", metavar="FILE",
                   help="user dictionary (repeatable), as `seqtag predict --dictionary`; read here, sent to the actors")
    b.add_argument("--dictionary-mode", choices=["hard", "soft"], default="hard",
                   help="hard (default): the words are forced; soft: lexicon evidence (models trained with --lexicon)")
    b.add_argument("--dictionary-words-only", action="store_true", help="force the words but not their labels")
    b.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto (default): GPUs when the cluster has them")
    b.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                   help="on a CPU, run a model marked for dynamic int8 in int8 (default), as `seqtag predict` does")
    b.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def cmd_bulk(args: argparse.Namespace) -> int:
    from seqtag.ray import BulkError, require_ray

    require_ray()  # before anything else: without Ray, one line saying how to get it
    from seqtag.models.dictionary import DictionaryError, read_dictionary
    from seqtag.ray import run_bulk

    if args.window < 0:
        raise BulkError(f"--window must be 0 (lines whole) or a number of characters, not {args.window}")
    if args.batch_size < 1:
        raise BulkError(f"--batch-size must be at least 1, not {args.batch_size}")
    dictionary = None
    if args.dictionary:
        try:
            dictionary = [entry for path in args.dictionary for entry in read_dictionary(path)]
        except DictionaryError as exc:
            raise BulkError(str(exc)) from None
    done = run_bulk(args.input, args.output, args.model, output_format=args.format, address=args.address,
                    overwrite=args.overwrite, input_format=args.input_format, text_column=args.text_column,
                    scores=args.scores, window=args.window or None, dictionary=dictionary,
                    dictionary_mode=args.dictionary_mode, words_only=args.dictionary_words_only, int8=args.int8,
                    actors=args.actors, chunk=args.batch_size, device=args.device)
    rows = f"{done['rows']:,} rows, " if done["rows"] is not None else ""
    print(f"seqtag bulk: wrote {done['output']} ({rows}{done['files']} files) in {done['seconds']:.1f} s",
          file=sys.stderr)
    return 0
