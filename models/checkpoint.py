"""Checkpoint directory: ``config.json`` + ``model.safetensors`` + ``tokenizer.json`` + ``codec.json``.

Loading rebuilds the network from the config and then loads the weights; no
pickle is ever read. Every compatibility decision lives in :func:`load_checkpoint`.
Writes go to a temporary sibling directory that is renamed into place, so a
reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from seqtag.models.codec import LEXICON_FILE, UNK_ID, Codec
from seqtag.models.schemes import TagScheme, allowed_transitions
from seqtag.models.tagger import Tagger, TaggerConfig

# 1: float32/float16 tensors. 2: adds "int8_rows" (embedding tables stored as int8 with row scales).
FORMAT_VERSION = 2
ROW_SCALE = ".row_scale"  # suffix of the float scales of an int8-stored table
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "codec.json")
SEEN_FILE = "seen.json"  # optional: the training corpus's words / entity texts
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
TASKS = ("seg", "pos", "ner")


class CheckpointError(Exception):
    """A checkpoint directory that cannot be used, with a message for humans."""


@dataclass
class ModelMeta:
    task: str
    scheme: TagScheme
    tags: list[str]
    extra: dict[str, Any] = field(default_factory=dict)  # training config, metrics, corpora, versions...
    # the words (seg/pos) or entity texts (ner) of the training corpus, for OOV / unseen-entity recall wherever
    # the checkpoint goes (``seen.json``); None when not stored
    seen: set[str] | None = None

    @property
    def labels(self) -> list[str]:
        return sorted({t.partition("-")[2] for t in self.tags if "-" in t})


def library_versions() -> dict[str, str]:
    import tokenizers
    import safetensors

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
    }


def build_tagger(config: TaggerConfig, codec: Codec, scheme: TagScheme, tags: list[str]) -> Tagger:
    return Tagger(config, codec.num_units, codec.num_bigrams, len(tags), allowed_transitions(scheme, tags),
                  codec.num_lexicon_features)


def save_checkpoint(
    directory: str | Path,
    tagger: Tagger,
    codec: Codec,
    meta: ModelMeta,
    half: bool = False,
    int8_embeddings: bool = False,
) -> Path:
    """Atomically write a checkpoint to ``directory`` (replacing one that is there).

    ``half`` stores floating-point tensors in float16; ``int8_embeddings`` stores the
    embedding tables (most of a bigram model's bytes) as int8 rows with one scale each.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in tagger.state_dict().items()}
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        int8_rows = sorted(f"{name}.weight" for name, m in tagger.named_modules()
                           if isinstance(m, torch.nn.Embedding)) if int8_embeddings else []
        for name in int8_rows:
            state[name], state[name + ROW_SCALE] = quantize_rows(state[name])
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        codec.save(tmp)
        if meta.seen is not None:
            seen = json.dumps({"seen": "\n".join(sorted(meta.seen))}, ensure_ascii=False)
            (tmp / SEEN_FILE).write_text(seen, encoding="utf-8")
        config = {
            **meta.extra,
            "format_version": FORMAT_VERSION,
            "architecture": architecture_name(tagger.config),
            "task": meta.task,
            "scheme": meta.scheme.value,
            "tags": meta.tags,
            "labels": meta.labels,
            "tagger": tagger.config.model_dump(),
            "weights_dtype": "float16" if half else "float32",
            "int8_rows": int8_rows,
            "versions": library_versions(),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
        _umask_modes(tmp)
        _fsync_dir(tmp)
        _replace_dir(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def stored_as(config: dict[str, Any]) -> dict[str, bool]:
    """How a checkpoint's weights were stored, as :func:`save_checkpoint` keywords (to re-save it the same way)."""
    return {"half": config.get("weights_dtype") == "float16", "int8_embeddings": bool(config.get("int8_rows"))}


def architecture_name(config: TaggerConfig) -> str:
    """``bilstm-crf``, ``gru-softmax``, ``cnn-crf``...: the encoder and the decoder, for humans and /v1/models."""
    encoder = config.encoder if config.encoder == "cnn" else ("bi" if config.bidirectional else "") + config.encoder
    return f"{encoder}-{config.decoder}"


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric row-wise int8: ``weight ~ q * scale[:, None]`` with ``scale = max|row| / 127``.

    The scale keeps ``weight``'s dtype and is rounded to it before ``q`` is computed, so
    what is stored is what was used. An all-zero row (padding) gets scale 1 and stays 0.
    """
    w = weight.float()
    scale = (w.abs().amax(dim=1) / 127).to(weight.dtype).float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.to(weight.dtype).contiguous()


def _dequantize_rows(directory: Path, state: dict[str, torch.Tensor], names: Any) -> None:
    """Turn the int8 tables listed in config.json back into float tensors, in place."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{directory}/config.json: int8_rows must be a list of tensor names")
    for name in names:
        q, scale = state.get(name), state.pop(name + ROW_SCALE, None)
        if q is None or scale is None or q.dtype != torch.int8 or q.dim() != 2 or scale.shape != q.shape[:1]:
            raise CheckpointError(f"{directory}: int8 table {name} or its row scales are missing or malformed")
        state[name] = q.float() * scale.float()[:, None]


def _umask_modes(path: Path) -> None:
    """mkdtemp makes a private (0700) directory and safetensors writes 0600 files; give the checkpoint
    the modes a plain ``open()`` gets (config.json's, i.e. the umask's), so other users can serve it."""
    mode = stat.S_IMODE((path / "config.json").stat().st_mode)
    for child in path.iterdir():
        child.chmod(mode)
    path.chmod(mode | (mode & 0o444) >> 2)  # x wherever r, for the directory


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as fh:
            os.fsync(fh.fileno())


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst``; an old ``dst`` is moved aside first and removed after."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def update_config(directory: str | Path, **fields: Any) -> None:
    """Set top-level fields of a checkpoint's config.json (atomically: temp file + rename)."""
    path = Path(directory) / "config.json"
    config = read_config(directory)
    config.update(fields)
    tmp = path.with_name(f".config.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def read_config(directory: str | Path) -> dict[str, Any]:
    """Validate the directory's layout and return its parsed ``config.json``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    present = {p.name for p in directory.iterdir()}
    if "model.safetensors" not in present and any(n.endswith(_PICKLE_SUFFIXES) for n in present):
        raise CheckpointError(f"{directory}: refusing pickled weights; seqtag loads only model.safetensors")
    missing = [f for f in REQUIRED_FILES if f not in present]
    if missing:
        raise CheckpointError(f"{directory}: not a seqtag checkpoint (missing {', '.join(missing)})")
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory}/config.json: not valid JSON ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{directory}/config.json: cannot read ({exc.strerror or exc})") from None
    if not isinstance(config, dict) or "format_version" not in config:
        raise CheckpointError(f"{directory}/config.json: not a seqtag config (no format_version)")
    version = config["format_version"]
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{directory}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: format_version {version} is newer than this seqtag supports ({FORMAT_VERSION}); upgrade seqtag"
        )
    return config


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[Tagger, Codec, ModelMeta]:
    directory = Path(directory)
    config = read_config(directory)
    try:
        task, scheme, tags = config["task"], TagScheme(config["scheme"]), list(config["tags"])
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        tagger_config = TaggerConfig.model_validate(config["tagger"])
        codec = Codec.load(directory)
        tagger = build_tagger(tagger_config, codec, scheme, tags)  # bad tags (e.g. "X-PER", none) raise here
    except CheckpointError:
        raise
    except Exception as exc:  # malformed config or codec files: one clear message
        raise CheckpointError(f"{directory}: invalid checkpoint config ({type(exc).__name__}: {exc})") from None
    try:
        state = load_file(str(directory / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{directory}/model.safetensors: unreadable or corrupt ({exc})") from None
    _dequantize_rows(directory, state, config.get("int8_rows", []))
    expected = tagger.state_dict()
    problems = [k for k in expected if k not in state] + [k for k in state if k not in expected]
    problems += [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise CheckpointError(
            f"{directory}: weights do not match config.json ({'; '.join(problems[:5])})"
        )
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    tagger.load_state_dict(state)
    tagger.to(device).eval()
    extra = {k: v for k, v in config.items() if k not in ("task", "scheme", "tags")}
    return tagger, codec, ModelMeta(task, scheme, tags, extra, _read_seen(directory))


# embedding tables that a warm restart grows (Codec.extend): ids past a smaller model's table are its UNK row
_GROWN_TABLES = ("unit_embed.weight", "bigram_embed.weight")


def average_weights(tagger: Tagger, codec: Codec, directory: str | Path,
                    others: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Set ``tagger`` (loaded with ``codec`` from ``directory``) to the mean of its weights and those of the
    checkpoints ``others`` (a "model soup"), and return the others' configs. They must be of one lineage
    (:func:`_one_lineage`), with the same tags, architecture, lexicon and codec settings, and vocabularies that
    ``directory``'s extends (a model and its ``--init-from`` restarts, the restart given first). A unit or
    bigram a smaller model lacks counts with that model's UNK row, as that model reads it. Anything else is a
    ``CheckpointError``."""
    directory = Path(directory)
    config = read_config(directory)
    own = tagger.state_dict()
    vocab = codec.tokenizer.get_vocab()
    lexicon = _lexicon_bytes(directory)
    total = {k: v.detach().double().clone() for k, v in own.items() if v.is_floating_point()}
    configs = []
    for other in map(Path, others):
        their_config = read_config(other)
        if not _one_lineage(directory, config, other, their_config):
            raise CheckpointError(f"{other}: not of {directory}'s lineage: neither run started from the other "
                                  "(--init-from), nor do both come from one run; averaging unrelated models gives "
                                  "meaningless weights")
        their_tagger, their_codec, their_meta = load_checkpoint(other, "cpu")
        bigrams = their_codec.bigram_list
        if (their_codec.config != codec.config or their_codec.charmap != codec.charmap
                or _lexicon_bytes(other) != lexicon or bigrams != codec.bigram_list[:len(bigrams)]
                or any(vocab.get(u) != i for u, i in their_codec.tokenizer.get_vocab().items())):
            raise CheckpointError(f"{other}: not of {directory}'s lineage (its codec, lexicon or vocabulary is not "
                                  f"one that {directory}'s extends); give the latest restart first")
        state = their_tagger.state_dict()
        if their_meta.tags != list(config["tags"]) or state.keys() != own.keys():
            raise CheckpointError(f"{other}: its tags or weights do not match {directory}'s")
        for k, v in state.items():
            if v.shape != own[k].shape and k in _GROWN_TABLES and v.shape[1:] == own[k].shape[1:] \
                    and v.shape[0] < own[k].shape[0]:
                v = torch.cat([v, v[UNK_ID].expand(own[k].shape[0] - v.shape[0], -1)])
            if v.shape != own[k].shape:
                raise CheckpointError(f"{other}: its {k} {tuple(v.shape)} does not match {directory}'s "
                                      f"{tuple(own[k].shape)}")
            if k in total:
                total[k] += v.double()
            elif not torch.equal(v, own[k]):
                raise CheckpointError(f"{other}: its {k} differs from {directory}'s")
        configs.append(their_config)
    n = len(others) + 1
    tagger.load_state_dict({**own, **{k: (v / n).to(own[k].dtype) for k, v in total.items()}})
    return configs


def _one_lineage(a: Path, config_a: dict[str, Any], b: Path, config_b: dict[str, Any]) -> bool:
    """Whether two checkpoints share a training history: the same first run (``lineage``, recorded since
    training runs have it: the run ids from the first run to this one), or one trained ``--init-from`` the other
    (its recorded path, as given, from the current directory)."""
    first_a, first_b = config_a.get("lineage"), config_b.get("lineage")
    if isinstance(first_a, list) and isinstance(first_b, list) and first_a and first_b and first_a[0] == first_b[0]:
        return True
    for child, parent in ((config_a, b), (config_b, a)):
        start = (child.get("training") or {}).get("init_from")
        try:
            if start and Path(str(start)).exists() and Path(str(start)).samefile(parent):
                return True
        except OSError:
            continue
    return False


def _lexicon_bytes(directory: Path) -> bytes | None:
    path = directory / LEXICON_FILE
    return path.read_bytes() if path.exists() else None


def _read_seen(directory: Path) -> set[str] | None:
    path = directory / SEEN_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return set(filter(None, data["seen"].split("\n")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__})") from None
