"""CUDA code paths: run wherever CUDA is present, skipped elsewhere."""

from __future__ import annotations

import pytest
import torch

from seqtag.models.pipeline import Pipeline
from tests.fixtures import train_tiny

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TEXTS = ["我们在北京工作。", "", "他喜欢音乐和电影，也喜欢看书。", "iPhone15 很贵"]


def test_train_with_amp_on_cuda_and_decode_like_cpu(tmp_path):
    run = train_tiny(tmp_path, "ner", epochs=2, extra_flags=["--device", "cuda", "--amp"])
    gpu = Pipeline.load(run / "best", "cuda")
    cpu = Pipeline.load(run / "best", "cpu")
    got = gpu.predict(TEXTS, scores=True)
    want = cpu.predict(TEXTS, scores=True)
    assert [[(s.start, s.end, s.label) for s in r] for r in got] == [[(s.start, s.end, s.label) for s in r] for r in want]
    for r_gpu, r_cpu in zip(got, want):
        for a, b in zip(r_gpu, r_cpu):
            assert a.score == pytest.approx(b.score, abs=1e-3)


def test_batch_invariance_on_cuda(tmp_path):
    run = train_tiny(tmp_path, "seg", epochs=1, extra_flags=["--device", "cuda"])
    pipeline = Pipeline.load(run / "best", "cuda")
    alone = [pipeline.predict([t])[0] for t in TEXTS]
    assert pipeline.predict(TEXTS, max_batch=64) == alone


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_precision_encoder_gives_the_same_tags(tmp_path, precision):
    run = train_tiny(tmp_path, "pos", epochs=2, extra_flags=["--device", "cuda"])
    full = Pipeline.load(run / "best", "cuda")
    half = Pipeline.load(run / "best", "cuda", precision)
    assert [[(s.start, s.end, s.label) for s in r] for r in half.predict(TEXTS)] == \
        [[(s.start, s.end, s.label) for s in r] for r in full.predict(TEXTS)]
