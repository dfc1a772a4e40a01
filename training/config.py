"""Typed training configuration: every default written out, unknown keys are errors.

The same model is filled from (lowest to highest precedence) task defaults,
a ``--config`` JSON/TOML file, and command-line flags, then saved verbatim
into the checkpoint's ``config.json``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seqtag.models.codec import CodecConfig
from seqtag.models.schemes import TagScheme
from seqtag.models.tagger import TaggerConfig


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    optimizer: Literal["adamw", "sgd"] = "adamw"
    """optimiser"""
    momentum: float = Field(0.9, ge=0, lt=1)
    """momentum (sgd only)"""
    epochs: int = Field(30, ge=1)
    """passes over the training data"""
    batch_size: int = Field(32, ge=1)
    """sentences per step"""
    max_batch_units: int = Field(8192, ge=16)
    """padded units per step (long sentences make smaller batches)"""
    lr: float = Field(2e-3, gt=0)
    """peak learning rate"""
    weight_decay: float = Field(0.0, ge=0)
    """decoupled weight decay"""
    clip: float = Field(5.0, gt=0)
    """gradient norm clipping"""
    warmup_steps: int = Field(200, ge=0)
    """steps of linear learning-rate warm-up; at most a tenth of all steps are used (a small corpus warms up
    for less)"""
    schedule: Literal["linear", "cosine", "constant"] = "cosine"
    """learning-rate decay after warm-up"""
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    """final learning rate as a share of lr"""
    patience: int = Field(6, ge=1)
    """epochs without dev improvement before stopping"""
    unit_dropout: float = Field(0.0, ge=0, lt=1)
    """share of units, bigrams and lexicon features replaced by unknown in training, so that unknowns are learned"""
    lexicon_dropout: float | None = Field(None, ge=0, lt=1)
    """share of lexicon features hidden in training (default: unit_dropout's); below unit_dropout, the model
    leans on the lexicon more than on the units and bigrams it has learnt by heart"""
    mention_replace: float = Field(0.0, ge=0, le=1)
    """each epoch, this share of the training file's labelled spans (entities; POS words) is replaced by another
    span of the same label from the training file (or a lexicon: mention_lexicon), drawn afresh every epoch, so
    that names are learnt from their context and not only by heart (0 = off; no effect on segmentation, whose
    words have no label)"""
    mention_compose: float = Field(0.0, ge=0, le=1)
    """with mention replacement, the chance that a replaced span which begins with another span text of the file
    (a place at the head of an organisation: 山东省 in 山东省人民政府) has only that head swapped, for another text
    of the head's label: new names built the way names are built (0 = whole spans only)"""
    mention_lexicon: float = Field(0.0, ge=0, le=1)
    """with mention replacement and a typed lexicon, the chance that a swapped entity's new text is a word of the
    lexicon's group for its label (jieba's place names for LOC), not an entity of the training file: names
    the file lacks, in its contexts (0 = the file's entities only)"""
    ema: float = Field(0.0, ge=0, lt=1)
    """exponential moving average of the weights for evaluation and saving (0 = off)"""
    adversarial: float = Field(0.0, ge=0)
    """adversarial training (FGM): also learn from the loss with the embedding tables moved this far along their
    gradient; doubles step time (0 = off)"""


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    device: str = "auto"
    """auto (CUDA when there is one), cpu, cuda or cuda:N"""
    amp: bool = True
    """mixed precision on CUDA"""
    threads: int = Field(0, ge=0)
    """CPU threads (0 = all cores)"""
    seed: int = 13
    """random seed"""
    save_every: int = Field(500, ge=0)
    """steps between resume snapshots (0 = only at the end of an epoch)"""
    eval_batch: int = Field(256, ge=1)
    """sentences per batch when scoring dev"""
    half_weights: bool = False
    """store the best model in float16"""
    int8_embeddings: bool = False
    """store the best model's embedding tables as int8 rows (one scale each)"""
    progress: bool = True
    """show a progress bar"""
    max_minutes: float = Field(0, ge=0)
    """stop after the epoch that passes this wall-clock budget (0 = none)"""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    task: Literal["seg", "pos", "ner"]
    """what to learn"""
    train: str
    """training file"""
    dev: str | None = None
    """development file: scored after every epoch, the best epoch is kept (without it, the last epoch is kept)"""
    format: Literal["seg", "conllu", "column", "wordpos", "jsonl"] = "seg"
    """format of the training and dev files"""
    out: str
    """run directory: best/ and last/ checkpoints, log.jsonl"""
    tag_column: Literal["upos", "xpos", "none"] = "upos"
    """which CoNLL-U tag to learn (none: words only)"""
    label_map: dict[str, str] = Field(default_factory=dict)
    """rename labels"""
    scheme: TagScheme | None = None
    """tag scheme (default: bmes for seg and pos, bioes for ner)"""
    init_from: str | None = None
    """start from this checkpoint (fine-tuning; new labels and characters are added)"""
    export: str | None = None
    """after training, copy best/ here atomically (e.g. into the service's models directory)"""
    max_misaligned: float = Field(0.01, ge=0, le=1)
    """share of gold spans allowed off unit boundaries (e.g. an entity ending inside a Latin run); their
    sentences are left out and counted, past it training stops and suggests --units chars"""
    lexicon: list[str] = Field(default_factory=list)
    """lexicons read at training time and stored in the checkpoint as model input"""

    codec: CodecConfig = Field(default_factory=CodecConfig)
    model: TaggerConfig = Field(default_factory=TaggerConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _fill_scheme(self) -> "TrainConfig":
        if self.scheme is None:
            self.scheme = TagScheme.BIOES if self.task == "ner" else TagScheme.BMES
        return self

    @model_validator(mode="after")
    def _mention_options_apply(self) -> "TrainConfig":
        """Refine-the-swap options that would silently do nothing are errors instead."""
        o = self.optim
        if (o.mention_compose > 0 or o.mention_lexicon > 0) and o.mention_replace <= 0:
            raise ValueError("mention_compose and mention_lexicon shape the swaps of mention replacement: "
                             "set mention_replace (--mention-replace) too")
        if o.mention_lexicon > 0:
            if self.task != "ner":
                raise ValueError("mention_lexicon draws entity names from a typed lexicon: task ner only")
            if self.init_from is None and (not self.lexicon or not self.codec.lexicon_typed):
                raise ValueError("mention_lexicon needs a typed lexicon: --lexicon jieba (or a file with word types)")
        return self


SECTIONS = {"codec": CodecConfig, "model": TaggerConfig, "optim": OptimConfig, "run": RunConfig}


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the config must be an object")
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key in SECTIONS:
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build_config(*layers: dict[str, Any]) -> TrainConfig:
    """Merge config layers (later wins) and validate; raises ValueError with readable messages."""
    data: dict[str, Any] = {}
    for layer in layers:
        data = merge(data, layer)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"]
                 else f"  {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise ValueError("invalid training config:\n" + "\n".join(lines)) from None
