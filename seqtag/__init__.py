"""seqtag: Chinese word segmentation, POS tagging and named-entity recognition with Bi-LSTM-CRF taggers.

    import seqtag
    nlp = seqtag.load("zh-ner")            # a shipped model by name, or a checkpoint directory
    nlp.predict(["马云在杭州创办了阿里巴巴。"])  # per text, its spans: start, end, label

Installed, the package is ``seqtag.models`` (the network, codec and inference engine), ``seqtag.training``
and ``seqtag.service``; in the source tree those are the repository's ``models/``, ``training/`` and
``service/`` folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqtag.models.pipeline import Pipeline

_HERE = Path(__file__).resolve().parent
_SOURCE_ROOT = _HERE.parent
# In the source tree (a clone, or an editable install) the subpackages are the repository's top-level folders;
# an installed wheel has them inside this package.
if not (_HERE / "models").is_dir() and (_SOURCE_ROOT / "models" / "codec.py").is_file():
    __path__.append(str(_SOURCE_ROOT))  # type: ignore[name-defined]

__version__ = "0.2.0"
__all__ = ["load", "resolve", "models_dir", "available"]


def models_dir() -> Path:
    """Where models are found by name: ``SEQTAG_MODELS_DIR`` when set, else the shipped models (inside the
    installed package, or the repository's ``checkpoints/``)."""
    if os.environ.get("SEQTAG_MODELS_DIR"):
        return Path(os.environ["SEQTAG_MODELS_DIR"])
    inside = _HERE / "checkpoints"
    return inside if inside.is_dir() else _SOURCE_ROOT / "checkpoints"


def available() -> list[str]:
    """Names of the models in :func:`models_dir`."""
    where = models_dir()
    return sorted(p.name for p in where.iterdir() if (p / "config.json").is_file()) if where.is_dir() else []


def resolve(name_or_path: str | os.PathLike) -> Path:
    """The checkpoint directory of a model: a path (a training run's directory means its ``best/``), or the
    name of a model in :func:`models_dir`. ``FileNotFoundError`` names the models there when it is neither."""
    path = Path(name_or_path)
    if not (path / "config.json").is_file() and (path / "best" / "config.json").is_file():
        return path / "best"
    if path.exists():
        return path
    named = models_dir() / str(name_or_path)
    if named.is_dir() and str(name_or_path) not in ("", ".", ".."):
        return named
    have = ", ".join(available()) or "none"
    raise FileNotFoundError(f"no model {str(name_or_path)!r}: not a checkpoint directory, and not a model in "
                            f"{models_dir()} (there: {have})")


def load(name_or_path: str | os.PathLike, device: str = "auto", **options) -> "Pipeline":
    """A model ready to tag: a shipped model's name (``zh-seg``, ``zh-seg-fast``, ``zh-pos``, ``zh-ner``), a
    model in ``SEQTAG_MODELS_DIR``, or the path of a checkpoint directory (or of a training run: its
    ``best/``). ``options`` go to :meth:`Pipeline.load` (``precision``, ``int8``)."""
    from seqtag.models.pipeline import Pipeline

    return Pipeline.load(resolve(name_or_path), device=device, **options)
