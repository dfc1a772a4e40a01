"""Made-up person names in a word-segmented corpus: ``python -m seqtag.training.augment``.

A segmenter trained on newswire learns the names it has seen, and splits the ones it has not where a
dictionary word hides inside them (周一仙 has 周一, "Monday"). This writes a copy of a corpus in which
some Chinese person names (found by an NER model where they are exactly one gold word) are swapped for
made-up names of the same length: a common surname, then given-name characters drawn mostly from the
corpus's own names and partly from all its Chinese characters. The context stays, the name changes, so
the model learns that a surname in a name's context starts a word, whatever follows it. The copy keeps the
labels and is written as ``seg`` when the corpus is ``seg`` or has no labels (so a recipe reads it and a
``seg`` dev file alike), as ``wordpos`` when a ``conllu``/``wordpos`` corpus has tags, else as ``jsonl``;
train with ``--format`` set to match (a dev file in another format must be converted too).

The draws are fixed by ``--seed``; the NER model runs once over the corpus (CPU, about 30 s for CTB6's
24k sentences on 2 threads).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

from seqtag.models.checkpoint import CheckpointError
from seqtag.models.spans import Example, Span
from seqtag.training.readers import FORMATS, TAG_COLUMNS, read_corpus, write_corpus

# the most common Chinese surnames (one character each), in rough order of frequency
SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任"
            "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
_SURNAME_SET = frozenset(SURNAMES)
# a given-name character comes from the corpus's names this often, else from its text
OWN_NAME_SHARE = 0.7
# a two-character name made a nickname starts with one of these (小环, 阿明)
NICKNAME_PREFIXES = "小阿"
# the copy's format, by the corpus's (a corpus without labels is written as seg)
OUT_FORMAT = {"seg": "seg", "conllu": "wordpos", "wordpos": "wordpos"}


def _cjk(ch: str) -> bool:
    """A CJK unified ideograph (the basic block)."""
    return "\u4e00" <= ch <= "\u9fff"


def chinese_name(word: str) -> bool:
    """Two or three CJK characters starting with a common surname."""
    return 2 <= len(word) <= 3 and word[0] in _SURNAME_SET and all(map(_cjk, word))


def name_words(examples: Sequence[Example], entities: Sequence[Sequence[Span]]) -> list[list[int]]:
    """Per example, the indices of its gold words that the NER output tags PER exactly and that look like
    Chinese names (:func:`chinese_name`)."""
    out = []
    for example, found in zip(examples, entities):
        where = {(s.start, s.end): i for i, s in enumerate(example.spans)}
        out.append([where[(s.start, s.end)] for s in found if s.label == "PER" and (s.start, s.end) in where
                    and chinese_name(example.text[s.start:s.end])])
    return out


def hidden_word_starts(examples: Sequence[Example]) -> list[str]:
    """The corpus's two-character words that start with a common surname (周一 "Monday", 高度, 王国, and
    two-character names such as 王震 too): a name that starts with one hides a word across its surname
    boundary."""
    found = {ex.text[s.start:s.end] for ex in examples for s in ex.spans if s.end - s.start == 2}
    return sorted(w for w in found if w[0] in _SURNAME_SET and _cjk(w[1]))


def swap_names(examples: Sequence[Example], names: Sequence[Sequence[int]], share: float, seed: int,
               hidden: float = 0.0, nicknames: float = 0.0) -> tuple[list[Example], int]:
    """The examples with each name word (``names``) swapped, with probability ``share``, for a made-up name
    of the same length; spans after it keep their places (same length). Of the swapped three-character
    names, a share ``hidden`` start with one of the corpus's two-character words (:func:`hidden_word_starts`:
    周一仙); of the two-character ones, a share ``nicknames`` are a 小/阿 nickname (小环, 阿明). Returns the
    examples and how many names were swapped. With both shares 0 the draws are those of earlier versions."""
    rng = random.Random(seed)
    starts = hidden_word_starts(examples) if hidden else []
    given = Counter(ch for ex, idx in zip(examples, names) for i in idx
                    for ch in ex.text[ex.spans[i].start + 1:ex.spans[i].end])
    general = Counter(ch for ex in examples for ch in ex.text if _cjk(ch))
    if not given:
        return list(examples), 0
    own_chars, own_weights = zip(*given.items())
    all_chars, all_weights = zip(*general.items())
    surnames = Counter(ex.text[ex.spans[i].start] for ex, idx in zip(examples, names) for i in idx)
    sur_weights = [surnames.get(ch, 0) + 5 for ch in SURNAMES]  # every surname a little, seen ones more
    out, swapped = [], 0
    for ex, idx in zip(examples, names):
        chars = list(ex.text)
        for i in idx:
            if rng.random() >= share:
                continue
            span = ex.spans[i]
            for k in range(span.start + 1, span.end):  # the given name first, then the surname
                own = rng.random() < OWN_NAME_SHARE
                chars[k] = rng.choices(own_chars, own_weights)[0] if own else rng.choices(all_chars, all_weights)[0]
            chars[span.start] = rng.choices(SURNAMES, sur_weights)[0]
            length = span.end - span.start
            if starts and length == 3 and rng.random() < hidden:
                chars[span.start:span.start + 2] = rng.choice(starts)
            elif nicknames and length == 2 and rng.random() < nicknames:
                chars[span.start] = rng.choice(NICKNAME_PREFIXES)
            swapped += 1
        out.append(Example("".join(chars), ex.spans, ex.source) if idx else ex)
    return out, swapped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqtag.training.augment", description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", help="a word-segmented (or POS) training file")
    parser.add_argument("out", help="where to write the copy")
    parser.add_argument("--format", default="seg", choices=FORMATS, help="the corpus's format (default seg)")
    parser.add_argument("--tag-column", default="upos", choices=TAG_COLUMNS)
    parser.add_argument("--ner", default="zh-ner", help="the NER model that finds the names (default zh-ner)")
    parser.add_argument("--share", type=float, default=0.5, help="share of the names swapped (default 0.5)")
    parser.add_argument("--hidden-words", type=float, default=0.0, metavar="SHARE",
                        help="share of the made-up three-character names that start with a two-character word of "
                             "the corpus, as 周一仙 starts with 周一 (default 0)")
    parser.add_argument("--nicknames", type=float, default=0.0, metavar="SHARE",
                        help="share of the made-up two-character names written as a 小/阿 nickname (default 0)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    for name in ("share", "hidden_words", "nicknames"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    import seqtag

    try:
        examples = read_corpus(args.corpus, args.format, tag_column=args.tag_column)
        ner = seqtag.load(args.ner)
    except (OSError, ValueError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if ner.task != "ner":
        print(f"error: --ner {args.ner} is a {ner.task} model, not an NER model", file=sys.stderr)
        return 2
    names = name_words(examples, ner.predict([ex.text for ex in examples]))
    out, swapped = swap_names(examples, names, args.share, args.seed, args.hidden_words, args.nicknames)
    labelled = any(s.label for ex in out for s in ex.spans)
    fmt = OUT_FORMAT.get(args.format, "jsonl") if labelled else "seg"
    try:
        write_corpus(out, Path(args.out), fmt)
    except (OSError, ValueError) as exc:
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"{len(examples)} sentences, {sum(map(len, names))} person names found, {swapped} swapped -> {args.out} "
          f"({fmt})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
