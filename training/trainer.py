"""A small trainer: a generator that yields one record per epoch and keeps the best checkpoint.

Run directory layout (``--out DIR``)::

    DIR/best/          best checkpoint on dev (what you serve / evaluate)
    DIR/last/          resume snapshot: checkpoint + trainer_state.{json,safetensors}
    DIR/log.jsonl      one JSON line per epoch
    DIR/curves.png     loss and dev F1 per epoch
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import json
import math
import os
import random
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from seqtag.models.checkpoint import ModelMeta, build_tagger, load_checkpoint, save_checkpoint
from seqtag.models.codec import UNK_ID, Codec, Encoded
from seqtag.models.engine import plan_batches
from seqtag.models.pipeline import Pipeline
from seqtag.models.runtime import pick_device
from seqtag.models.schemes import TagScheme, allowed_transitions, spans_to_tags, tag_vocabulary
from seqtag.models.spans import Example, Span
from seqtag.training.config import TrainConfig
from seqtag.training.metrics import scores_for_task, word_vocabulary
from seqtag.models.dictionary import DictionaryError
from seqtag.models.lexicon import group_of, lexicon_entries
from seqtag.training.readers import ReadStats, read_corpus

STATE_JSON, STATE_TENSORS = "trainer_state.json", "trainer_state.safetensors"


class TrainingError(Exception):
    """A problem with the data or the run directory, with a message for humans."""


# ---- data ----------------------------------------------------------------

def load_examples(path: str, config: TrainConfig) -> tuple[list[Example], ReadStats]:
    stats = ReadStats()
    tag_column = "none" if config.task == "seg" else config.tag_column
    examples = read_corpus(path, config.format, tag_column=tag_column, label_map=config.label_map, stats=stats)
    return for_task(examples, config.task), stats


def for_task(examples: list[Example], task: str) -> list[Example]:
    """Segmentation learns plain words: drop any labels the corpus carries."""
    if task != "seg":
        return examples
    return [Example(e.text, [Span(s.start, s.end) for s in e.spans], e.source) for e in examples]


@dataclass
class TrainingData:
    """Unit ids and gold tag ids of a corpus, one entry per kept sentence."""

    ids: list[np.ndarray]
    tags: list[np.ndarray]
    kept: list[int]  # index of the example each entry came from
    spans: int
    misaligned: int
    dropped: int  # sentences left out because a gold span is off unit boundaries
    lexicon: list[np.ndarray] | None = None  # lexicon feature bits of each kept sentence's units


def encode_examples(examples: Sequence[Example], codec: Codec, scheme: TagScheme, tags: list[str]) -> TrainingData:
    index = {t: i for i, t in enumerate(tags)}
    enc = codec.encode([e.text for e in examples])
    out = TrainingData([], [], [], 0, 0, 0, [] if enc.lexicon is not None else None)
    for k, ex in enumerate(examples):
        aligned, bad = codec.align(enc.offsets[k], ex.spans)
        out.spans += len(ex.spans)
        out.misaligned += len(bad)
        if bad or not len(enc.ids[k]):
            out.dropped += bool(bad)
            continue
        names = spans_to_tags(aligned, len(enc.ids[k]), scheme)
        unknown = [n for n in names if n not in index]
        if unknown:
            raise TrainingError(f"{ex.source}: tag {unknown[0]} is not in the model's tag set")
        out.ids.append(enc.ids[k])
        if out.lexicon is not None:
            out.lexicon.append(enc.lexicon[k])
        out.tags.append(np.asarray([index[n] for n in names], dtype=np.int64))
        out.kept.append(k)
    return out


def replace_mentions(examples: Sequence[Example], share: float, rng: np.random.Generator,
                     fits: Callable[[str, str, str], bool] | None = None, tries: int = 10,
                     compose: float = 0.0, outside: dict[str, np.ndarray] | None = None,
                     outside_share: float = 0.0) -> list[Example]:
    """Mention replacement: each labelled span is, with probability ``share``, swapped for another distinct
    span text of the same label from ``examples`` (the context around it unchanged, offsets moved).

    A model that sees the same contexts with other names in them learns that the context marks a name,
    which is what recalls names it never saw. Unlabelled spans (segmentation words) are left alone.
    ``fits(left, mention, right)`` (the characters either side, "" at an end) vets a candidate; up to
    ``tries`` are drawn, and a span none of them fits keeps its own text.

    ``outside`` (label -> texts from elsewhere, e.g. a typed lexicon's place names for ``LOC``): a swap draws
    from there instead of the file with probability ``outside_share``: names the file does not contain, in
    the contexts it does.

    With ``compose`` > 0, a swapped span that begins with a span text of another label (``山东省`` in
    ``山东省人民政府``; the longest such head of 2 to 12 characters, a text's label being its most frequent one)
    has, with that probability, only its head swapped for another text of the head's label (``四川省人民政府``):
    new names built the way names are built. The new head's edges (its junction with the rest included) are
    vetted by ``fits``; when none fits, the span is swapped whole as above."""
    texts_of: dict[str, list[str]] = {}
    for ex in examples:
        for s in ex.spans:
            if s.label:
                texts_of.setdefault(s.label, []).append(ex.text[s.start:s.end])
    label_of: dict[str, str] = {}
    if compose > 0:
        counts = collections.Counter((t, label) for label, texts in texts_of.items() for t in texts if len(t) > 1)
        for (text, label), _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            label_of.setdefault(text, label)
    pool = {label: np.array(sorted(set(texts)), dtype=object) for label, texts in texts_of.items()}
    outside = {label: texts for label, texts in (outside or {}).items() if len(texts) and outside_share > 0}
    heads: dict[tuple[str, str], tuple[str, str] | None] = {}

    def head_of(mention: str, label: str) -> tuple[str, str] | None:
        if (mention, label) not in heads:
            found = ((mention[:k], label_of.get(mention[:k], "")) for k in range(min(len(mention) - 1, 12), 1, -1))
            heads[mention, label] = next((h for h in found if h[1] not in ("", label)), None)
        return heads[mention, label]

    def draw(source: np.ndarray, left: str, right: str, keep: str = "", shortest: int = 1) -> str | None:
        for candidate in rng.choice(source, size=tries):
            if len(candidate) >= shortest and candidate != keep and (fits is None or fits(left, candidate, right)):
                return str(candidate)
        return None

    out = []
    for ex in examples:
        draws = rng.random(len(ex.spans)) < share
        swaps = [bool(d) and bool(s.label) and (len(pool[s.label]) > 1 or s.label in outside)
                 for s, d in zip(ex.spans, draws)]
        if not any(swaps):
            out.append(ex)
            continue
        pieces: list[str] = []
        spans: list[Span] = []
        pos = length = 0
        for s, swap in zip(ex.spans, swaps):
            mention = ex.text[s.start:s.end]
            if swap:
                left = pieces[-1][-1:] if pos == s.start and pieces else ex.text[s.start - 1:s.start]
                right = ex.text[s.end:s.end + 1]
                head = head_of(mention, s.label) if compose > 0 and rng.random() < compose else None
                new = None
                if head is not None:
                    rest = mention[len(head[0]):]
                    new = draw(pool[head[1]], left, rest[:1], keep=head[0], shortest=2)
                    new = new + rest if new is not None else None
                if new is None:
                    source = pool[s.label]
                    if s.label in outside and rng.random() < outside_share:
                        source = outside[s.label]
                    new = draw(source, left, right)
                mention = new if new is not None else mention
            gap = ex.text[pos:s.start]
            start = length + len(gap)
            pieces += [gap, mention]
            spans.append(Span(start, start + len(mention), s.label))
            length = start + len(mention)
            pos = s.end
        pieces.append(ex.text[pos:])
        out.append(Example("".join(pieces), spans, ex.source))
    return out


def fingerprint(path: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def make_batches(lengths: Sequence[int], batch_size: int, max_units: int, rng: np.random.Generator) -> list[list[int]]:
    """Length-bucketed batches in random order: similar lengths together keep padding low."""
    noisy = np.asarray(lengths, dtype=np.float64) + rng.uniform(0, 2, len(lengths))
    batches = plan_batches(lengths, batch_size, max_units, order=np.argsort(noisy))
    rng.shuffle(batches)
    return batches


# ---- the trainer -----------------------------------------------------------

@dataclass
class Distributed:
    """Data-parallel context from torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        return cls(int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> torch.device:
        """Join the process group: NCCL on GPUs (one per local rank), gloo on CPU."""
        if not self.enabled:
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def agree(self, value: float, minimum: bool = True) -> float:
        """The same number on every rank (the minimum or maximum), so no rank runs a step the others skip."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MIN if minimum else dist.ReduceOp.MAX)
        return float(t.item())

    def stop(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                # Leave together: a rank that tears gloo down while another is still
                # writing checkpoints can abort in gloo's background threads. The group is
                # not destroyed: tearing gloo down (destroy_process_group or interpreter exit)
                # can still abort with "terminate called without an active exception", so
                # `seqtag train` ends a distributed run with os._exit once every rank is here.
                dist.barrier()


class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False):
        self.config = config
        self.out = Path(config.out)
        self.dist = Distributed.from_env()
        self.device = self.dist.start(pick_device(config.run.device))
        if self.device.type == "cpu":
            torch.set_num_threads(config.run.threads or max(1, os.cpu_count() or 1))
        self._seed(config.run.seed)
        self.train_examples, self.train_stats = load_examples(config.train, config)
        if not self.train_examples:
            raise TrainingError(f"{config.train}: no training sentences")
        self.dev_examples = load_examples(config.dev, config)[0] if config.dev else []
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "epoch_step": 0, "best_f1": -1.0, "bad_epochs": 0}
        self.resumed = resume and (self.out / "last" / STATE_JSON).exists()
        if self.resumed:
            self._restore()
        else:
            self._fresh()
        self.train_vocab = word_vocabulary(self.train_examples)
        self.meta.seen = self.train_vocab  # stored with the checkpoint: OOV / unseen-entity recall anywhere
        self.data = encode_examples(self.train_examples, self.codec, self.meta.scheme, self.meta.tags)
        self.gold_data = self.data  # the file as it is; an epoch with mention replacement trains on a variant
        self._check_alignment()
        self.tagger.to(self.device)
        self.model = self.tagger
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.tagger, device_ids=ids)
        self.optimizer = self._make_optimizer()
        self.ema: dict[str, torch.Tensor] = {}
        if resume and (self.out / "last" / STATE_JSON).exists():
            self._restore_optimizer()
        self.amp = config.run.amp and self.device.type == "cuda"

    # -- construction
    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optim
        if o.optimizer == "sgd":
            return torch.optim.SGD(self.tagger.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        return torch.optim.AdamW(self.tagger.parameters(), lr=o.lr, weight_decay=o.weight_decay)

    def _seed(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _fresh(self) -> None:
        cfg = self.config
        labels = sorted({s.label for e in self.train_examples for s in e.spans})
        earlier: list[str] = []  # the commands that trained the model this run starts from, first to last
        lineage = [uuid.uuid4().hex]  # this run's id after those of the runs it starts from (compact --average)
        if cfg.init_from:
            from seqtag import resolve

            self.tagger, self.codec, old = load_checkpoint(resolve(cfg.init_from), "cpu")
            prior = old.extra.get("earlier_commands")
            earlier = [*(map(str, prior) if isinstance(prior, list) else ()),
                       str(old.extra.get("command") or f"(not recorded: the model in {cfg.init_from})")]
            prior_lineage = old.extra.get("lineage")
            lineage = [*(map(str, prior_lineage) if isinstance(prior_lineage, list) else ()), *lineage]
            if cfg.lexicon:
                raise TrainingError("--lexicon with --init-from: a fine-tuned model keeps the lexicon of the model "
                                    "it starts from (its inputs are fixed); drop --lexicon, or train from scratch")
            if old.task != cfg.task:
                raise TrainingError(f"--init-from model is a {old.task} model, not {cfg.task}")
            self.codec.extend(e.text for e in self.train_examples)
            self.tagger.extend_embeddings(self.codec.num_units, self.codec.num_bigrams)
            new_tags = [t for t in tag_vocabulary(old.scheme, labels, outside=cfg.task == "ner") if t not in old.tags]
            tags = old.tags + new_tags
            if new_tags:
                self.tagger.extend_tags(len(new_tags), allowed_transitions(old.scheme, tags))
            scheme = old.scheme
        else:
            self.codec = Codec.build((e.text for e in self.train_examples), cfg.codec)
            for spec in cfg.lexicon:
                try:
                    entries, source = lexicon_entries(spec)
                except (OSError, DictionaryError) as exc:
                    raise TrainingError(f"--lexicon {spec}: {exc}") from None
                added = self.codec.set_lexicon(entries, source)
                print(f"lexicon {source.name}: {len(entries)} entries, {added} new words", file=sys.stderr, flush=True)
            scheme = cfg.scheme
            tags = tag_vocabulary(scheme, labels, outside=cfg.task == "ner")
            self.tagger = build_tagger(cfg.model, self.codec, scheme, tags)
        self.meta = ModelMeta(cfg.task, scheme, tags, {**self._meta_extra(earlier), "lineage": lineage})

    def _meta_extra(self, earlier: Sequence[str] = ()) -> dict[str, Any]:
        corpora = {"train": fingerprint(self.config.train)}
        if self.config.dev:
            corpora["dev"] = fingerprint(self.config.dev)
        command = shlex.join(["seqtag", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("seqtag", "cli.py") else None
        training = json.loads(self.config.model_dump_json())
        if self.config.init_from:  # the model's inputs and shape are the starting model's, not the recipe's
            training["codec"] = json.loads(self.codec.config.model_dump_json())
            training["model"] = json.loads(self.tagger.config.model_dump_json())
        extra = {"training": training, "corpora": corpora, "command": command}
        if earlier:  # a model fine-tuned from another (--init-from) keeps how that one was trained (a resume
            # keeps what the run first recorded)
            extra["earlier_commands"] = list(earlier)
        return extra

    def _check_alignment(self) -> None:
        d = self.data
        rate = d.misaligned / max(d.spans, 1)
        self.state["misaligned"] = {"spans": d.spans, "misaligned": d.misaligned, "dropped_sentences": d.dropped}
        if rate > self.config.max_misaligned:
            raise TrainingError(
                f"{d.misaligned} of {d.spans} gold spans ({100 * rate:.3f}%) do not fall on unit boundaries; "
                "train with --units chars (one unit per character) for this corpus"
            )

    # -- schedule
    def total_steps(self) -> int:
        per_epoch = len(self._epoch_batches(0))
        return per_epoch * self.config.optim.epochs

    def warmup_steps(self, total: int) -> int:
        """Warm-up steps: the configured number, but at most a tenth of the run (a 7-step-per-epoch corpus
        would otherwise spend three epochs warming up)."""
        return min(self.config.optim.warmup_steps, total // 10)

    def lr_at(self, step: int, total: int) -> float:
        o = self.config.optim
        warmup = self.warmup_steps(total)
        if step < warmup:
            return o.lr * (step + 1) / warmup
        if o.schedule == "constant":
            return o.lr
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        factor = 1 - progress if o.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * factor)

    def _epoch_data(self, epoch: int) -> TrainingData:
        """The training data of one epoch: the file, or with mention replacement a variant drawn from the run's
        seed and the epoch (the same on every rank and after a resume)."""
        share = self.config.optim.mention_replace
        if share <= 0 or self.config.task == "seg":
            return self.gold_data
        rng = np.random.default_rng([self.config.run.seed, epoch, 7919])
        o = self.config.optim
        variant = replace_mentions(self.train_examples, share, rng, self._swap_fits, compose=o.mention_compose,
                                   outside=self._lexicon_names if o.mention_lexicon > 0 else None,
                                   outside_share=o.mention_lexicon)
        return encode_examples(variant, self.codec, self.meta.scheme, self.meta.tags)

    @functools.cached_property
    def _char_norm(self) -> dict[str, str]:
        """Every character of the training file, as the codec normalises it (for comparisons with the
        vocabulary and the lexicon, which hold normalised text)."""
        chars = sorted({c for ex in self.train_examples for c in ex.text})
        return dict(zip(chars, self.codec.normalize_all(chars)))

    @functools.cached_property
    def _lexicon_names(self) -> dict[str, np.ndarray]:
        """For each entity label of the file that a typed lexicon has a group for (PER, LOC, ORG; NAME counts as
        PER; nominal mentions, ``*.NOM``, have none), the lexicon's words of that group alone, two to eight
        characters long, whose first character begins two or more of the file's mentions of that label and
        whose last character ends two or more. jieba's tags are loose (idioms among its ``nr`` words); names
        are built from their edges (a surname, a place suffix), so the file's edges keep the words that look
        like its names. Compared as the codec normalises them, as the lexicon's words are stored. NER only."""
        lexicon = self.codec.lexicon
        if lexicon is None or not lexicon.typed or self.config.task != "ner":
            return {}
        edges = [(s.label, ex.text[s.start], ex.text[s.end - 1]) for ex in self.train_examples for s in ex.spans
                 if s.label and not s.label.upper().endswith("NOM")]
        norm = self._char_norm
        first = collections.Counter((label, norm[a]) for label, a, _ in edges)
        last = collections.Counter((label, norm[z]) for label, _, z in edges)
        out = {}
        for label in sorted({label for label, _, _ in edges}):
            group = group_of(label, typed=True)
            if group not in lexicon.groups[1:]:
                continue
            bit = 1 << lexicon.groups.index(group)
            words = sorted(w for w, mask in lexicon.words.items() if mask == bit and 2 <= len(w) <= 8
                           and first[label, w[0]] >= 2 and last[label, w[-1]] >= 2)
            if words:
                out[label] = np.array(words, dtype=object)
        return out

    @functools.cached_property
    def _swap_fits(self) -> Callable[[str, str, str], bool] | None:
        """Mention replacement may only make bigrams the vocabulary knows. A swap that put unknown bigrams at
        a name's edges would teach "unknown bigram = name boundary" (in the training file itself unknown bigrams
        are rare or absent), and unknown bigrams are everywhere in new text."""
        if not self.codec.config.bigrams:
            return None
        norm = self._char_norm
        known = set(self.codec.bigram_list)

        def fits(left: str, mention: str, right: str) -> bool:
            edges = [(left, mention[:1])] if left else []
            edges += [(mention[-1:], right)] if right else []
            return all((norm.get(a, a), norm.get(b, b)) in known for a, b in edges)

        return fits

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches: every rank builds the same list, then takes every world-th batch
        (the same count on each rank, so gradient all-reduces always pair up)."""
        rng = np.random.default_rng(self.config.run.seed * 1000 + epoch)
        lengths = [len(x) for x in self.data.ids]
        batches = make_batches(lengths, self.config.optim.batch_size, self.config.optim.max_batch_units, rng)
        world, rank = self.dist.world, self.dist.rank
        usable = len(batches) - len(batches) % world if len(batches) >= world else len(batches)
        return batches[rank:usable:world] if world > 1 else batches

    # -- steps
    def _tensors(self, idx: list[int], generator: torch.Generator):
        lexicon = [self.data.lexicon[i] for i in idx] if self.data.lexicon is not None else None
        batch = self.codec.batch(Encoded(offsets=[], ids=[self.data.ids[i] for i in idx], lexicon=lexicon))
        p = self.config.optim.unit_dropout
        p_lex = p if self.config.optim.lexicon_dropout is None else self.config.optim.lexicon_dropout
        if p > 0:  # (the draws keep their order: units, lexicon, bigrams, so that seeds give what they gave)
            drop = (torch.rand(batch.unit_ids.shape, generator=generator) < p) & (batch.unit_ids > 0)
            batch.unit_ids = batch.unit_ids.masked_fill(drop, UNK_ID)
        if p_lex > 0 and batch.lexicon is not None:  # the model learns to tag without the lexicon's word, too
            drop = torch.rand(batch.lexicon.shape, generator=generator) < p_lex
            batch.lexicon = batch.lexicon.masked_fill(drop, 0)
        if p > 0 and batch.bigram_ids is not None:
            drop = (torch.rand(batch.bigram_ids.shape, generator=generator) < p) & (batch.bigram_ids > 0)
            batch.bigram_ids = batch.bigram_ids.masked_fill(drop, UNK_ID)
        tags = torch.zeros(batch.unit_ids.shape, dtype=torch.long)
        for r, i in enumerate(idx):
            tags[r, : len(self.data.tags[i])] = torch.from_numpy(self.data.tags[i])
        if self.device.type == "cuda":  # page-locked host memory: the copies below run asynchronously
            batch, tags = batch.pin_memory(), tags.pin_memory()
        return batch.to(self.device, non_blocking=True), tags.to(self.device, non_blocking=True)

    def _step(self, idx: list[int], lr: float, generator: torch.Generator) -> float:
        batch, tags = self._tensors(idx, generator)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self._loss(batch, tags)
        self.optimizer.zero_grad(set_to_none=True)
        (loss / len(idx)).backward()
        if self.config.optim.adversarial > 0:
            self._adversarial_step(batch, tags, len(idx))
        torch.nn.utils.clip_grad_norm_(self.tagger.parameters(), self.config.optim.clip)
        self.optimizer.step()
        self._update_ema()
        return float(loss.detach())

    def _loss(self, batch, tags: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.model(batch, tags)  # Tagger.forward is the loss; DDP syncs gradients in backward

    def _adversarial_step(self, batch, tags: torch.Tensor, size: int) -> None:
        """FGM: move each embedding table by ``adversarial`` along its (normalised) gradient, add the
        gradient of the loss there to the clean one, and move the tables back. It regularises the
        large bigram table, which otherwise memorises the training set."""
        eps = self.config.optim.adversarial
        moved: list[tuple[torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            for embed in self.tagger.embeddings():
                grad = embed.weight.grad
                if grad is None:
                    continue
                norm = float(torch.linalg.vector_norm(grad.float()))  # one host sync per table
                if not math.isfinite(norm) or norm == 0:
                    continue
                delta = (eps / norm) * grad
                embed.weight.add_(delta)
                moved.append((embed.weight, delta))
        if not moved:
            return
        (self._loss(batch, tags) / size).backward()
        with torch.no_grad():
            for weight, delta in moved:
                weight.sub_(delta)

    # -- weight averaging: evaluation and saved models use the average when enabled
    def _update_ema(self) -> None:
        decay = self.config.optim.ema
        if not decay:
            return
        params = dict(self.tagger.named_parameters())
        if not self.ema or any(self.ema[k].shape != p.shape for k, p in params.items()):
            self.ema = {k: p.detach().clone() for k, p in params.items()}
            return
        # Early on, average over fewer steps so the random init fades out fast (as TF's EMA does).
        step = self.state["step"]
        decay = min(decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.values()), [params[k].detach() for k in self.ema], 1 - decay)

    @contextlib.contextmanager
    def averaged_weights(self):
        if not self.ema:
            yield
            return
        params = dict(self.tagger.named_parameters())
        saved = {k: p.detach().clone() for k, p in params.items()}
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(self.ema[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(saved[k])

    def evaluate(self, examples: Sequence[Example]) -> dict[str, Any]:
        pipeline = Pipeline(self.tagger, self.codec, self.meta, self.device)
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            predicted = pipeline.predict([e.text for e in examples], max_batch=self.config.run.eval_batch)
        seconds = time.perf_counter() - start
        pred = [Example(e.text, spans) for e, spans in zip(examples, predicted)]
        scores = scores_for_task(self.config.task, list(examples), pred, self.train_vocab)
        scores["seconds"] = round(seconds, 3)
        return scores

    # -- the loop
    def train(self) -> Iterator[dict[str, Any]]:
        """Train, yielding one record per epoch (with ``is_best``)."""
        from tqdm.auto import tqdm

        cfg = self.config
        total = self.total_steps()
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.resumed:  # a fresh run in a used directory starts a fresh log
            (self.out / "log.jsonl").unlink(missing_ok=True)
        deadline = time.monotonic() + 60 * cfg.run.max_minutes if cfg.run.max_minutes else math.inf
        while self.dist.agree(self.state["epoch"] < cfg.optim.epochs and self.state["bad_epochs"] < cfg.optim.patience
                              and time.monotonic() < deadline):
            epoch = self.state["epoch"]
            self.data = self._epoch_data(epoch)
            batches = self._epoch_batches(epoch)
            generator = torch.Generator().manual_seed(cfg.run.seed + epoch)
            self.tagger.train()
            start, loss_sum, units = time.perf_counter(), 0.0, 0
            bar = tqdm(total=len(batches), initial=self.state["epoch_step"], desc=f"epoch {epoch + 1}",
                       disable=not cfg.run.progress or not self.dist.is_main, leave=False)
            for b in range(self.state["epoch_step"], len(batches)):
                idx = batches[b]
                loss_sum += self._step(idx, self.lr_at(self.state["step"], total), generator)
                units += sum(len(self.data.ids[i]) for i in idx)
                self.state["step"] += 1
                self.state["epoch_step"] = b + 1
                bar.update(1)
                if cfg.run.save_every and self.state["step"] % cfg.run.save_every == 0:
                    self._snapshot()
                    self.state.pop("pending_eval", None)
            bar.close()
            train_seconds = time.perf_counter() - start
            total = int(self.dist.agree(self._budgeted_total(total, deadline, train_seconds, len(batches))))
            record = {"epoch": epoch + 1, "step": self.state["step"], "loss": loss_sum / max(units, 1),
                      "lr": self.lr_at(self.state["step"], total), "train_seconds": round(train_seconds, 2),
                      "train_units_per_s": round(units / max(train_seconds, 1e-9))}
            record.update(self._end_epoch())
            if self.dist.is_main:
                self._log(record)
            yield record
        self.dist.stop()

    def _budgeted_total(self, total: int, deadline: float, epoch_seconds: float, steps: int) -> int:
        """With a time budget, end the LR schedule where the budget will run out (epoch time incl. eval)."""
        if math.isinf(deadline) or steps == 0:
            return total
        per_step = epoch_seconds / steps * 1.15  # + evaluation and snapshots
        reachable = self.state["step"] + int(max(0.0, deadline - time.monotonic()) / per_step)
        return max(self.state["step"] + 1, min(total, reachable))

    def _end_epoch(self) -> dict[str, Any]:
        with self.averaged_weights():
            record = self._evaluate_and_keep()
        self.state["epoch"] += 1
        self.state["epoch_step"] = 0
        self._snapshot()
        return record

    def _evaluate_and_keep(self) -> dict[str, Any]:
        dev = self.evaluate(self.dev_examples) if self.dev_examples else {"f1": -1.0}
        # Without a dev set every epoch is the best so far: best/ holds the latest model.
        improved = dev["f1"] > self.state["best_f1"] or not self.dev_examples
        if improved:
            self.state["best_f1"] = dev["f1"]
            self.state["bad_epochs"] = 0
            self.meta.extra["dev_metrics"] = {k: v for k, v in dev.items() if k != "per_type"} | (
                {"per_type": dev["per_type"]} if "per_type" in dev else {})
            self.meta.extra["epoch"] = self.state["epoch"] + 1
            if self.dist.is_main:
                save_checkpoint(self.out / "best", self.tagger, self.codec, self.meta,
                                half=self.config.run.half_weights,
                                int8_embeddings=self.config.run.int8_embeddings)
        else:
            self.state["bad_epochs"] += 1
        return {"dev": dev, "is_best": improved, "best_f1": self.state["best_f1"]}

    # -- persistence
    def _snapshot(self) -> None:
        """Resume point: weights, codec, optimizer and counters, written atomically (by rank 0)."""
        if not self.dist.is_main:
            return
        last = self.out / "last"
        save_checkpoint(last, self.tagger, self.codec, self.meta)
        tensors, groups = {}, []
        opt = self.optimizer.state_dict()
        for pid, slots in opt["state"].items():
            for name, value in slots.items():
                tensors[f"{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        for group in opt["param_groups"]:
            groups.append({k: v for k, v in group.items()})
        tensors["rng.torch"] = torch.get_rng_state()
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in self.ema.items()})
        tmp = last / (STATE_TENSORS + ".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, last / STATE_TENSORS)
        tmp = last / (STATE_JSON + ".tmp")
        tmp.write_text(json.dumps({"state": self.state, "param_groups": groups}), encoding="utf-8")
        os.replace(tmp, last / STATE_JSON)

    def _restore(self) -> None:
        last = self.out / "last"
        self.tagger, self.codec, self.meta = load_checkpoint(last, "cpu")
        self.meta.extra.update(self._meta_extra())  # the config (e.g. --epochs) the run goes on with
        saved = json.loads((last / STATE_JSON).read_text(encoding="utf-8"))
        self.state.update(saved["state"])

    def _restore_optimizer(self) -> None:
        last = self.out / "last"
        saved = json.loads((last / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(last / STATE_TENSORS))
        torch.set_rng_state(tensors.pop("rng.torch"))
        self.ema = {k[4:]: tensors.pop(k).to(self.device) for k in [k for k in tensors if k.startswith("ema.")]}
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value.to(self.device) if name != "step" else value
        self.optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def export(self) -> Path:
        """Copy the best checkpoint to ``config.export`` atomically (a reloading service never sees half of it)."""
        target = Path(self.config.export)
        tagger, codec, meta = load_checkpoint(self.out / "best", "cpu")
        run = self.config.run
        return save_checkpoint(target, tagger, codec, meta, half=run.half_weights,
                               int8_embeddings=run.int8_embeddings)

    def write_plot(self) -> Path | None:
        return plot_log(self.out / "log.jsonl", self.out / "curves.png")


def plot_log(log: Path, png: Path) -> Path | None:
    """Loss and dev F1 per epoch from a run's log.jsonl."""
    if not log.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [r["loss"] for r in rows], "o-", color="tab:blue", label="train loss / unit")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["dev"]["f1"] for r in rows], "s-", color="tab:red", label="dev F1")
    ax2.set_ylabel("dev F1", color="tab:red")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
