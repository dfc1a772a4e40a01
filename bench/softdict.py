"""A user dictionary, hard or soft, on msra-news dev: what a user's own list of names does to NER.

    python -m bench.softdict MODEL [--corpora ../shared/corpora] [--share 0.5] [--noise 0.5] [--seed 1]

The user's list is a random ``share`` of the dev entities unseen in training (the names a user would add for
their domain), plus ``noise`` as many wrong entries: dev substrings that are not entities (a real list has
words that are names in one place and not in another). Printed: F1 and seen/unseen recall with no dictionary,
the list forced (hard) and the list weighed (soft).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from seqtag import load
from seqtag.cli import read_gold, score_predictions


def user_list(gold, seen: set[str], share: float, noise: float, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    unseen = sorted({(e.text[s.start:s.end], s.label) for e in gold for s in e.spans
                     if e.text[s.start:s.end] not in seen})
    chosen = rng.sample(unseen, int(len(unseen) * share))
    entity_texts = {e.text[s.start:s.end] for e in gold for s in e.spans}
    wrong: set[tuple[str, str]] = set()
    labels = sorted({label for _, label in unseen})
    tries = 0
    while len(wrong) < int(len(chosen) * noise) and tries < 100_000:
        tries += 1
        text = rng.choice(gold).text
        if len(text) < 4:
            continue
        a = rng.randrange(len(text) - 3)
        piece = text[a : a + rng.choice((2, 3))]
        if piece.strip() == piece and piece not in entity_texts and all("\u4e00" <= c <= "\u9fff" for c in piece):
            wrong.add((piece, rng.choice(labels)))
    return chosen + sorted(wrong)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--corpora", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "corpora"))
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    nlp = load(args.model, device="cpu")
    gold = read_gold(nlp, Path(args.corpora) / "msra-news" / "dev.char.bmes")
    seen = nlp.meta.seen or set()
    entries = user_list(gold, seen, args.share, args.noise, args.seed)
    texts = [e.text for e in gold]
    rows = {}
    for name, options in (("none", {}), ("hard", {"dictionary": entries}),
                          ("soft", {"dictionary": entries, "dictionary_mode": "soft"})):
        if name == "soft" and nlp.codec.lexicon is None:
            continue
        scores = score_predictions(nlp, gold, nlp.predict(texts, **options))
        rows[name] = {k: round(scores[k], 2) for k in ("f1", "seen_recall", "unseen_recall") if k in scores}
    print(json.dumps({"model": args.model, "entries": len(entries), "share": args.share, "noise": args.noise,
                      "seed": args.seed, "results": rows}, ensure_ascii=False))


if __name__ == "__main__":
    main()
