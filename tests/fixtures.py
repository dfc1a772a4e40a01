"""Tiny made-up corpora written by the tests themselves, and a helper that trains on them.

Every sentence here is generated from the small word lists below with a seeded
random generator (no text is copied from a real corpus). The sentences follow
a few fixed patterns, so even a tiny model learns something in a couple of
epochs.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

PRONOUNS = ["我", "你", "他", "她", "我们", "他们"]
NOUNS = ["学生", "老师", "苹果", "电脑", "音乐", "电影", "朋友", "咖啡", "图书馆", "天气"]
VERBS = ["喜欢", "看", "买", "学习", "吃", "需要", "认识"]
ADVERBS = ["很", "也", "都", "常常"]
PUNCT = ["。", "！"]

PERSONS = ["张伟明", "李娜", "王小红", "陈建国", "刘洋", "赵敏"]
PLACES = ["北京", "上海", "杭州", "南京市", "广州", "西安"]
ORGS = ["华星公司", "东方银行", "青山大学", "联合电视台"]

# (character template, slot kinds); {P} person, {L} place, {O} organisation.
NER_TEMPLATES = [
    "{P}在{L}工作。",
    "{P}明天去{L}。",
    "{P}和{P}住在{L}。",
    "我们在{L}见到了{P}。",
    "{L}的天气很好。",
    "{P}喜欢{L}。",
]
ORG_TEMPLATES = [
    "{P}在{O}工作。",
    "{O}位于{L}。",
    "{P}加入了{O}。",
    "{O}的老师去{L}。",
]


def _sentence(rng: random.Random) -> list[tuple[str, str]]:
    """One (word, UPOS) sentence: PRON [ADV] VERB NOUN PUNCT, or NOUN ADV VERB NOUN PUNCT."""
    if rng.random() < 0.6:
        words = [(rng.choice(PRONOUNS), "PRON")]
    else:
        words = [(rng.choice(NOUNS), "NOUN")]
    if rng.random() < 0.5:
        words.append((rng.choice(ADVERBS), "ADV"))
    words.append((rng.choice(VERBS), "VERB"))
    words.append((rng.choice(NOUNS), "NOUN"))
    words.append((rng.choice(PUNCT), "PUNCT"))
    return words


def _sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    return [_sentence(rng) for _ in range(n)]


def words(texts: Sequence[str], results: Sequence[Sequence]) -> list[list[str]]:
    """The text of every predicted span (``Span`` objects), per text."""
    return [[text[s.start:s.end] for s in spans] for text, spans in zip(texts, results)]


def write_seg_corpus(directory: str | Path, name: str = "seg.txt", n: int = 40, seed: int = 0) -> Path:
    """Words separated by spaces, one sentence per line."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(w for w, _ in s) for s in _sentences(n, seed)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_pos_corpus(directory: str | Path, name: str = "pos.conllu", n: int = 40, seed: int = 0) -> Path:
    """CoNLL-U with UPOS in column 4 (and XPOS = UPOS), a comment line per sentence."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = []
    for k, sent in enumerate(_sentences(n, seed)):
        rows = [f"# sent_id = s{seed}-{k}", f"# text = {''.join(w for w, _ in sent)}"]
        for i, (word, tag) in enumerate(sent, 1):
            head = 0 if i == 1 else 1
            rel = "root" if i == 1 else "dep"
            rows.append("\t".join([str(i), word, word, tag, tag, "_", str(head), rel, "_", "_"]))
        blocks.append("\n".join(rows))
    path.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return path


def _bmes(entity: str, label: str) -> list[str]:
    if len(entity) == 1:
        return [f"S-{label}"]
    return [f"B-{label}"] + [f"M-{label}"] * (len(entity) - 2) + [f"E-{label}"]


def _ner_sentence(rng: random.Random, templates: Sequence[str]) -> list[tuple[str, str]]:
    template = rng.choice(templates)
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(template):
        if template[i] == "{":
            kind = template[i + 1]
            label, names = {"P": ("PER", PERSONS), "L": ("LOC", PLACES), "O": ("ORG", ORGS)}[kind]
            entity = rng.choice(names)
            pairs.extend(zip(entity, _bmes(entity, label)))
            i += 3
        else:
            pairs.append((template[i], "O"))
            i += 1
    return pairs


def _write_column(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join("".join(f"{ch} {tag}\n" for ch, tag in sent) for sent in sentences)
    path.write_text(text, encoding="utf-8")
    return path


def write_ner_corpus(directory: str | Path, name: str = "ner.bmes", n: int = 40, seed: int = 0) -> Path:
    """``char TAG`` lines in BMES (PER, LOC), a blank line between sentences."""
    rng = random.Random(seed)
    return _write_column(Path(directory) / name, [_ner_sentence(rng, NER_TEMPLATES) for _ in range(n)])


def write_ner_org_corpus(directory: str | Path, name: str = "ner_org.bmes", n: int = 40, seed: int = 0) -> Path:
    """Like :func:`write_ner_corpus` but with a new label, ORG (plus PER and LOC)."""
    rng = random.Random(seed)
    templates = ORG_TEMPLATES + NER_TEMPLATES[:2]
    return _write_column(Path(directory) / name, [_ner_sentence(rng, templates) for _ in range(n)])


WRITERS = {"seg": write_seg_corpus, "pos": write_pos_corpus, "ner": write_ner_corpus}

TINY_FLAGS = (
    "--hidden", "16", "--unit-dim", "16", "--bigram-dim", "8", "--batch-size", "8",
    "--no-progress", "--device", "cpu", "--threads", "1", "--warmup-steps", "0", "--lr", "0.02",
)


def write_corpora(directory: str | Path, task: str) -> tuple[Path, Path]:
    """A training file (40 sentences) and a dev file (12 other sentences) for ``task``."""
    data = Path(directory) / "data"
    writer = WRITERS[task]
    suffix = {"seg": ".txt", "pos": ".conllu", "ner": ".bmes"}[task]
    return (
        writer(data, name=f"{task}-train{suffix}", n=40, seed=1),
        writer(data, name=f"{task}-dev{suffix}", n=12, seed=2),
    )


def train_tiny(tmp_path: str | Path, task: str, epochs: int = 2, extra_flags: Sequence[str] = ()) -> Path:
    """Train a tiny ``task`` model through ``seqtag.cli.main`` and return the run directory.

    The corpora are written under ``tmp_path/data`` and the run goes to
    ``tmp_path/run``; ``extra_flags`` come last, so they may override any of
    ``--train``, ``--dev``, ``--out`` or the small settings.
    """
    import torch

    from seqtag.cli import main

    tmp_path = Path(tmp_path)
    train, dev = write_corpora(tmp_path, task)
    out = tmp_path / "run"
    argv = [
        "train", "--task", task, "--train", str(train), "--dev", str(dev), "--out", str(out),
        "--epochs", str(epochs), *TINY_FLAGS, *extra_flags,
    ]
    threads = torch.get_num_threads()
    try:
        status = main(argv)
    finally:
        torch.set_num_threads(threads)  # the trainer sets the process-wide thread count
    assert status == 0, f"seqtag train exited with {status}"
    for flag, value in zip(extra_flags, list(extra_flags)[1:]):
        if flag == "--out":
            return Path(value)
    return out
