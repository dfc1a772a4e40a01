"""Report how many gold spans of each shared corpus fall off unit boundaries.

``python -m seqtag.training.alignment ../shared/corpora [--units chars]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seqtag.models.codec import Codec, CodecConfig
from seqtag.training.readers import read_corpus

FILES = [
    ("ctb6", "seg"), ("ud-gsd", "conllu"), ("resume", "column"), ("weibo", "column"),
    ("msra-news", "column"), ("zhuxian", "wordpos"), ("wtb", "conllu"),
]


def misaligned(path: Path, fmt: str, codec: Codec) -> tuple[int, int]:
    examples = read_corpus(path, fmt, tag_column="upos")
    encoded = codec.encode([e.text for e in examples])
    total = bad = 0
    for k, example in enumerate(examples):
        total += len(example.spans)
        bad += len(codec.align(encoded.offsets[k], example.spans)[1])
    return total, bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpora", type=Path)
    parser.add_argument("--units", choices=["latin_runs", "chars"], default="latin_runs")
    args = parser.parse_args(argv)
    codec = Codec.build([], CodecConfig(units=args.units))
    print("| file | spans | off boundaries | rate |\n|---|---|---|---|")
    for name, fmt in FILES:
        folder = args.corpora / name
        for path in sorted(p for p in folder.glob("*") if p.suffix in (".seg", ".conllu", ".bmes", ".wordpos")):
            total, bad = misaligned(path, fmt, codec)
            print(f"| {name}/{path.name} | {total} | {bad} | {100 * bad / max(total, 1):.3f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
