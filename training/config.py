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

from models.codec import CodecConfig
from models.schemes import TagScheme
from models.tagger import TaggerConfig


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)  # sentences per step
    max_batch_units: int = Field(8192, ge=16)  # padded units per step (long sentences make smaller batches)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    clip: float = Field(5.0, gt=0)
    warmup_steps: int = Field(200, ge=0)
    schedule: Literal["linear", "cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    patience: int = Field(6, ge=1)  # epochs without dev improvement before stopping
    unit_dropout: float = Field(0.0, ge=0, lt=1)  # replace units and bigrams by UNK in training so UNK is learned
    ema: float = Field(0.0, ge=0, lt=1)  # exponential moving average of weights for eval/saving, 0 = off
    # adversarial training (FGM, Miyato et al. 2017): also learn from the loss with the embedding
    # tables moved this far (L2 norm) along their gradient; doubles step time, 0 = off
    adversarial: float = Field(0.0, ge=0)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA
    threads: int = Field(0, ge=0)  # CPU threads, 0 = all cores
    seed: int = 13
    save_every: int = Field(500, ge=0)  # steps between resume snapshots, 0 = only at epoch end
    eval_batch: int = Field(256, ge=1)
    half_weights: bool = False  # store the best model in float16
    int8_embeddings: bool = False  # store the best model's embedding tables as int8 rows (one scale each)
    progress: bool = True
    max_minutes: float = Field(0, ge=0)  # stop after the epoch that passes this wall-clock budget, 0 = none


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Literal["seg", "pos", "ner"]
    train: str
    dev: str | None = None
    format: Literal["seg", "conllu", "column", "wordpos", "jsonl"] = "seg"
    out: str
    tag_column: Literal["upos", "xpos", "none"] = "upos"
    label_map: dict[str, str] = Field(default_factory=dict)
    scheme: TagScheme | None = None  # default: bmes for seg/pos, bioes for ner
    init_from: str | None = None
    export: str | None = None  # after training, copy best/ here atomically (e.g. the service's models dir)
    max_misaligned: float = Field(0.001, ge=0, le=1)  # share of gold spans allowed off unit boundaries
    # lexicon files read at training time and stored in the checkpoint as model input ("jieba": jieba's dict.txt)
    lexicon: list[str] = Field(default_factory=list)

    codec: CodecConfig = Field(default_factory=CodecConfig)
    model: TaggerConfig = Field(default_factory=TaggerConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _fill_scheme(self) -> "TrainConfig":
        if self.scheme is None:
            self.scheme = TagScheme.BIOES if self.task == "ner" else TagScheme.BMES
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
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ValueError("invalid training config:\n" + "\n".join(lines)) from None
