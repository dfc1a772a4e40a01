"""Shared fixtures: paths, tiny corpora written by the tests themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CORPORA = ROOT.parent / "shared" / "corpora"


def corpus(*parts: str) -> Path:
    path = CORPORA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared corpus not available: {path}")
    return path


@pytest.fixture(scope="session")
def shipped_model():
    """``shipped_model("zh-seg")``: a shipped checkpoint as a CPU float32 pipeline, loaded once per test session
    (a lexicon model's word index takes about a second to build) and shared by the modules that tag with it."""
    from seqtag.models.pipeline import Pipeline

    loaded = {}

    def load(name: str) -> Pipeline:
        if name not in loaded:
            loaded[name] = Pipeline.load(ROOT / "checkpoints" / name, device="cpu", int8=False)
        return loaded[name]

    return load


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny models only pay overhead for more, and stall badly on a busy machine. The count is put back after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
