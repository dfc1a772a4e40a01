"""Model cards for shipped checkpoints: ``python -m seqtag.training.modelcard CHECKPOINT --corpus KEY``.

The card is written from the checkpoint's own ``config.json``, so it cannot
disagree with the weights next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seqtag.models.checkpoint import architecture_name, read_config
from seqtag.models.codec import LEXICON_FILE, CodecConfig
from seqtag.models.lexicon import Lexicon
from seqtag.models.tagger import TaggerConfig

CORPORA = {
    "ctb6": {
        "title": "Chinese Treebank 6 (CWS split)",
        "licence": "LDC User Agreement; research use only. Redistribution of the corpus is not allowed; "
        "check your own LDC licence before using this model commercially.",
    },
    "ud-gsd": {
        "title": "Universal Dependencies Chinese GSD (simplified)",
        "licence": "CC BY-SA 4.0 (the model is trained on it; attribution and share-alike apply to derived data).",
    },
    "msra-news": {
        "title": "MSRA NER (SIGHAN 2006) + People's Daily NER, merged and de-duplicated",
        "licence": "Research use only.",
    },
    "resume": {"title": "Resume NER (Zhang & Yang 2018)", "licence": "Research use only."},
    "weibo": {"title": "Weibo NER (Peng & Dredze 2015, revised)", "licence": "Research use only."},
}

TASK_TEXT = {
    "seg": "word segmentation",
    "pos": "joint word segmentation and part-of-speech tagging",
    "ner": "named-entity recognition",
}


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


_ENCODER_TEXT = {"bilstm": "Bi-LSTM", "lstm": "LSTM", "bigru": "Bi-GRU", "gru": "GRU", "cnn": "gated-CNN"}


def describe_network(tagger: dict) -> str:
    """"Bi-LSTM-CRF", "gated-CNN-CRF (64 channels, ...)": :func:`architecture_name` for humans."""
    config = TaggerConfig.model_validate(tagger)
    encoder, decoder = architecture_name(config).split("-")
    text = f"{_ENCODER_TEXT[encoder]}-{'CRF' if decoder == 'crf' else 'softmax'}"
    if config.encoder == "cnn":
        text += f" ({config.hidden} channels, {config.layers} blocks of kernel {config.kernel})"
    return text


def _codec_config(directory: Path) -> dict:
    return json.loads((Path(directory) / "codec.json").read_text(encoding="utf-8"))["config"]


def _lexicon_text(directory: Path) -> str:
    """The lexicon's sources, licences and size, for the card's table ("none" without one)."""
    path = Path(directory) / LEXICON_FILE
    if not path.exists():
        return "none"
    lexicon = Lexicon.from_json(json.loads(path.read_text(encoding="utf-8")))
    sources = "; ".join(f"{s.name}, {s.licence} licence, {s.words:,} entries" for s in lexicon.sources) or "unnamed"
    kind = "typed (" + "/".join(lexicon.groups) + ")" if lexicon.typed else "untyped"
    return (f"{sources}: {len(lexicon.words):,} words, {kind}, {path.stat().st_size / 1e6:.1f} MB in "
            f"`{LEXICON_FILE}` (model input: B/M/E/S of the lexicon words covering each character)")


def render_card(directory: Path, name: str, corpus: str) -> str:
    config = read_config(directory)
    info = CORPORA[corpus]
    dev = config.get("dev_metrics", {})
    training = config.get("training", {})
    metric_keys = [k for k in ("precision", "recall", "f1", "word_f1", "pos_accuracy", "oov_recall", "iv_recall",
                               "seen_recall", "unseen_recall") if k in dev]
    rows = "\n".join(f"| {k} | {dev[k]:.2f} |" for k in metric_keys)
    size_mb = _size(directory) / 1e6
    compacted = config.get("compacted_from")
    shipped = ""
    if compacted:
        before = (config.get("dev_metrics_before_compaction") or {}).get("f1")
        shipped = (f"\nShipped form: `seqtag compact` with max_bigrams={compacted.get('max_bigrams')}, "
                   f"16-bit weights={compacted.get('half')}, "
                   f"int8 embedding tables={compacted.get('int8_embeddings', False)}; "
                   "the dev metrics above were measured on this compacted checkpoint"
                   + (f" (dev F1 of the trained model before compaction: {before:.2f}).\n" if before is not None
                      else ".\n"))
    averaged = [a for a in config.get("averaged_with") or [] if isinstance(a, dict)]
    if averaged:
        start = training.get("init_from")
        others = "; ".join(f"`{a.get('checkpoint')}`" + (" (the model the run below started from)"
                                                          if start and a.get("checkpoint") == start else "")
                           + (f", trained by `{a['command']}`" if a.get("command") else "") for a in averaged)
        shipped += (f"\nIts weights are the mean of those of the run below and of {others} (`seqtag compact "
                    "--average`)" + ("; the dev metrics above were measured on that mean.\n" if dev else ".\n"))
    storage = config.get("weights_dtype", "float32") + " weights" + (
        ", int8 embedding tables" if config.get("int8_rows") else "")
    inference = config.get("inference") or {}
    if inference.get("quantize") == "int8":
        scales = ("per-channel weight scales, `--int8-weights per-channel`; "
                  if inference.get("int8_weights") == "per-channel" else "")
        shipped += ("\nOn CPU the encoder runs with dynamic int8 quantisation (`seqtag compact --int8`; " + scales
                    + "an output layer with fewer than 64 tags stays float, where int8 is slower); the dev metrics "
                    "above were measured that way, in `seqtag evaluate`'s length-sorted batches. Dynamic int8 picks "
                    "one quantisation scale per step for a whole batch, so a few texts can come out differently in "
                    "different batches, in the service too; "
                    "`--no-int8` (`seqtag predict`/`evaluate`) or `SEQTAG_INT8=false` (the service) runs it in "
                    "float32 instead, slower but the same for a text whatever its batch (see BENCHMARKS.md).\n")
    codec = CodecConfig.model_validate(_codec_config(directory))
    if codec.t2s:
        shipped += ("\nTraditional characters are read as simplified ones (trained with `--t2s`): text in either "
                    "script gets the same units.\n")
    elif codec.t2s_unseen:
        shipped += ("\nTraditional characters this model never saw look up as their simplified forms when it knows "
                    "those (the codec's `t2s_unseen`), so it reads traditional text as well as the same text in "
                    "simplified characters, up to the words the two scripts write differently (see \"Traditional "
                    "characters\" in BENCHMARKS.md).\n")
    lexicon = _lexicon_text(directory)
    # a fine-tuned model (--init-from): how the model it started from was trained, then this run
    history = config.get("earlier_commands")
    history = history if isinstance(history, list) else []
    earlier = "".join(f"\n{'First' if k == 0 else 'Then'}:\n\n```\n{cmd}\n```\n" for k, cmd in enumerate(history))
    earlier += "\nThen, from that model (`--init-from`):\n" if earlier else ""
    return f"""# {name}

{TASK_TEXT[config['task']].capitalize()} for Chinese: a character(+bigram) {describe_network(config.get('tagger', {}))}
trained by seqtag's own code.

| | |
|---|---|
| task | `{config['task']}` |
| tag scheme | {config['scheme'].upper()} |
| labels | {', '.join(config.get('labels') or ['(words)'])} |
| corpus | {info['title']} (`{corpus}`) |
| corpus licence / terms | {info['licence']} |
| size on disk | {size_mb:.1f} MB ({storage}) |
| lexicon | {lexicon} |
| best epoch | {config.get('epoch', '?')} |
| saved | {config.get('saved_at', '?')} |

## Dev metrics (selected on dev; the official test split was not used)

| metric | value |
|---|---|
{rows}
| sentences | {dev.get('sentences', '?')} |
{shipped}
## Training command
{earlier}
```
{config.get('command') or '(not recorded)'}
```

## Training config

```json
{json.dumps(training, indent=2, ensure_ascii=False)}
```

## Versions

```json
{json.dumps(config.get('versions', {}), indent=2)}
```

Corpus fingerprints (sha256 of the training and dev files) are in `config.json`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("--corpus", required=True, choices=sorted(CORPORA))
    parser.add_argument("--name")
    args = parser.parse_args(argv)
    directory = Path(args.checkpoint)
    card = render_card(directory, args.name or directory.name, args.corpus)
    (directory / "README.md").write_text(card, encoding="utf-8")
    print(f"wrote {directory / 'README.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
