"""Out-of-domain segmentation: how many of a CTB6-trained segmenter's misses are the other corpus's standard.

    python -m bench.ood MODEL [--corpora ../shared/corpora]

For Zhuxian dev (a novel) and WTB dev (Weibo), both segmented by their own annotators, prints segmentation F1
and how many gold words the model misses, and of those how many CTB6's training file segments the other way:
the gold word joins what CTB6 writes apart (WTB's ``不要``, ``每个``: CTB6 splits them every time), or a word
the model output covers it where CTB6 has that longer word whole. A model trained on CTB6 alone cannot get those
without leaving CTB6's standard.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from seqtag import load
from seqtag.training.readers import read_corpus

SETS = (("zhuxian/dev.wordpos", "wordpos"), ("wtb/dev.conllu", "conllu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--corpora", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "corpora"))
    args = parser.parse_args()
    corpora = Path(args.corpora)
    ctb = read_corpus(str(corpora / "ctb6" / "train.seg"), "seg")
    whole = collections.Counter(e.text[s.start:s.end] for e in ctb for s in e.spans)
    ctb_text = "\n".join(e.text for e in ctb)
    apart: dict[str, bool] = {}

    def ctb_splits(word: str) -> bool:  # CTB6 has the string three times or more, mostly not as one word
        if word not in apart:
            seen = ctb_text.count(word)
            apart[word] = seen >= 3 and whole[word] < 0.5 * seen
        return apart[word]

    nlp = load(args.model, device="cpu")
    for path, fmt in SETS:
        gold_examples = read_corpus(str(corpora / path), fmt)
        found = nlp.predict([e.text for e in gold_examples])
        n_gold = n_pred = hits = missed = conflicts = 0
        for ex, spans in zip(gold_examples, found):
            gold = {(s.start, s.end) for s in ex.spans}
            pred = {(s.start, s.end) for s in spans}
            n_gold, n_pred, hits = n_gold + len(gold), n_pred + len(pred), hits + len(gold & pred)
            for a, b in gold - pred:
                missed += 1
                if b - a > 1 and ctb_splits(ex.text[a:b]):
                    conflicts += 1
                elif any(x <= a and b <= y and (x, y) != (a, b) and whole[ex.text[x:y]] >= 3
                         and not ctb_splits(ex.text[x:y]) for x, y in pred):
                    conflicts += 1
        print(json.dumps({"corpus": path, "f1": round(200 * hits / (n_gold + n_pred), 2), "missed": missed,
                          "ctb6_other_way": conflicts, "share": round(100 * conflicts / max(missed, 1), 1)}))


if __name__ == "__main__":
    main()
