"""``python -m bench.run``: run the benchmarks and write their tables to BENCHMARKS.md.

    python -m bench.run                      # everything, results replace BENCHMARKS.md
    python -m bench.run --smoke              # tiny sizes, a few seconds per benchmark, written to a temp file
    python -m bench.run --only service --out /tmp/service.md
    python -m bench.run --run-dir runs/ctb6  # also read the time to the dev target from runs/ctb6/log.jsonl

Numbers are medians over --repeats; every ratio compares two things measured in the same run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Sequence

from bench import bulk, fairness, inprocess, load, service, training
from bench.common import DEFAULT_CORPORA, DEFAULT_MODELS, REPO_ROOT, Context, Table
from bench.machine import header_rows

BENCHMARKS = {"inprocess": inprocess, "service": service, "load": load, "fairness": fairness, "training": training,
              "bulk": bulk}
RECORDED = Path(__file__).resolve().parent / "RECORDED.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, 1 repeat, no timing claims: checks that every benchmark runs")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    parser.add_argument("--out", type=Path,
                        help="where to write the tables (default: BENCHMARKS.md; a temp file with --smoke)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS,
                        help="directory of checkpoint directories (default: checkpoints/)")
    parser.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA,
                        help="shared corpora directory with ctb6/ (default: ../shared/corpora)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where models run (default: auto = CUDA when available)")
    parser.add_argument("--repeats", type=int, help="repeats per measurement (default 3; 1 with --smoke)")
    parser.add_argument("--run-dir", type=Path, help="a training run directory whose log.jsonl gives the "
                                                     "time to reach the dev target")
    parser.add_argument("--gpu-only", action="store_true",
                        help="only the measurements that need CUDA (large batches, Viterbi placement, bulk "
                             "requests to the service, training): for a GPU lent for a few minutes")
    parser.add_argument("--dev-target", type=float, default=95.0, help="dev F1 target (default 95.0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from seqtag.models.runtime import pick_device

    try:
        device = pick_device(args.device)
    except ValueError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    repeats = args.repeats or (1 if args.smoke else 3)
    if repeats < 1:
        print("bench: error: --repeats must be at least 1", file=sys.stderr)
        return 2
    out = args.out
    if out is None:
        out = (Path(tempfile.mkstemp(prefix="seqtag-bench-smoke-", suffix=".md")[1]) if args.smoke
               else REPO_ROOT / "BENCHMARKS.md")
    names = args.only or list(BENCHMARKS)

    header = header_rows(device)  # before any work, so the load average is the machine's, not ours
    tables: list[Table] = []
    failed: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="seqtag-bench-") as workdir:
        ctx = Context(smoke=args.smoke, device=device, models_dir=args.models.resolve(),
                      corpora_dir=args.corpora.resolve(), repeats=repeats, workdir=Path(workdir),
                      run_dir=args.run_dir, dev_target=args.dev_target,
                      gpu_only=args.gpu_only)
        for name in names:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                tables += BENCHMARKS[name].run(ctx)
            except Exception:  # one broken benchmark must not lose the others' tables
                failed.append(name)
                tables.append(Table(f"{name}: failed", [], notes=[
                    "the benchmark raised an exception:\n\n```\n" + traceback.format_exc()[-3000:] + "```"]))
                traceback.print_exc()
            print(f"bench: {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        notes = ctx.notes

    argv_text = shlex.join(["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])])
    text = render(header, tables, notes, argv_text, args.smoke, repeats, time.perf_counter() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"bench: wrote {out}" + (f" ({', '.join(failed)} failed)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def render(header: list[tuple[str, str]], tables: list[Table], notes: list[str], command: str, smoke: bool,
           repeats: int, seconds: float) -> str:
    lines = ["# seqtag benchmarks", ""]
    if smoke:
        lines += ["**Smoke run**: tiny sizes and one repeat, to check that the benchmarks run; "
                  "the numbers mean nothing.", ""]
    lines += [f"Written by `{command}` in {seconds:.0f} s. Every number is a median over {repeats} "
              f"repeat{'s' if repeats != 1 else ''}, and every ratio compares two things measured side by side "
              "in this same run. Regenerate with `make bench` (the whole file is replaced).", ""]
    lines += ["| | |", "|---|---|"] + [f"| {key} | {value} |" for key, value in header]
    lines += [""] + [f"- {note}" for note in notes] + ([""] if notes else [])
    text = "\n".join(lines) + "\n" + "\n".join(table.markdown() for table in tables)
    if not smoke and RECORDED.exists():  # measurements this suite cannot repeat here (e.g. a lent GPU)
        text += "\n" + RECORDED.read_text(encoding="utf-8")
    return text


if __name__ == "__main__":
    sys.exit(main())
