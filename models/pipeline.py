"""Inference: texts -> codec -> tensors -> tagger -> tags -> spans on the original texts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.checkpoint import ModelMeta, load_checkpoint
from models.codec import Codec, Encoded
from models.schemes import OUTSIDE, TagScheme, split_tag, tags_to_spans
from models.spans import Span
from models.tagger import Tagger


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but is not available on this machine")
    return device


@dataclass
class Pipeline:
    tagger: Tagger
    codec: Codec
    meta: ModelMeta
    device: torch.device
    # On CUDA the encoder may run in half precision ("float16"/"bfloat16"); the CRF always runs in float32.
    precision: str = "float32"

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "auto", precision: str = "float32") -> "Pipeline":
        if precision not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"precision must be float32, float16 or bfloat16, not {precision!r}")
        device = pick_device(device)
        tagger, codec, meta = load_checkpoint(directory, device)
        return cls(tagger, codec, meta, device, precision)

    @property
    def task(self) -> str:
        return self.meta.task

    def predict(
        self,
        texts: Sequence[str],
        *,
        scores: bool = False,
        max_batch: int = 256,
        max_units: int = 16384,
        forced: Sequence[Sequence[Span]] | None = None,
    ) -> list[list[Span]]:
        """Spans for every text: words (seg), tagged words (pos) or entities (ner).

        ``forced[i]`` are character spans that must come out whole in text ``i``
        (label "" = any label), honoured inside the decoder (constrained Viterbi).
        """
        encoded = self.codec.encode(texts)
        results: list[list[Span]] = [[] for _ in texts]
        for order in plan_batches(encoded.lengths, max_batch, max_units):
            batch_forced = [forced[i] for i in order] if forced is not None else None
            for i, spans in zip(order, self.predict_encoded(encoded, order, scores, batch_forced)):
                results[i] = spans
        return results

    def predict_encoded(
        self,
        encoded: Encoded,
        order: Sequence[int],
        scores: bool = False,
        forced: Sequence[Sequence[Span]] | None = None,
    ) -> list[list[Span]]:
        """Tag the encoded texts ``order`` (one batch) and map tags back to character spans.

        ``forced[k]`` belongs to text ``order[k]``.
        """
        was_training = self.tagger.training
        self.tagger.eval()
        batch = self.codec.batch(encoded, order)
        tag_mask = None
        if forced is not None and any(forced):
            tag_mask = self.forced_mask([encoded.offsets[i] for i in order], forced, batch.unit_ids.shape[1])
            tag_mask = tag_mask.to(self.device, non_blocking=True)
        batch = batch.to(self.device, non_blocking=True)
        half = self.device.type == "cuda" and self.precision != "float32"
        with torch.autocast("cuda", dtype=getattr(torch, self.precision), enabled=half):
            tag_ids, marginals = self.tagger.decode(batch, tag_mask=tag_mask, with_marginals=scores)
        if was_training:
            self.tagger.train()
        tag_ids = tag_ids.cpu().numpy()
        probs = None
        if marginals is not None:
            probs = np.take_along_axis(marginals.cpu().numpy(), tag_ids[..., None], -1)[..., 0]
        names = self.meta.tags
        out = []
        for row, i in enumerate(order):
            n = len(encoded.ids[i])
            unit_spans = tags_to_spans([names[t] for t in tag_ids[row, :n]])
            spans = self.codec.to_spans(encoded.offsets[i], unit_spans)
            if probs is not None:
                spans = [
                    Span(s.start, s.end, s.label, float(probs[row, a:b].min()))
                    for s, (a, b, _) in zip(spans, unit_spans)
                ]
            out.append(spans)
        return out


    def forced_mask(self, offsets: Sequence[np.ndarray], forced: Sequence[Sequence[Span]], width: int) -> torch.Tensor:
        """(B, L, T) bool: which tags each unit may take so every forced span comes out whole.

        Forced spans off unit boundaries, or with a label the model lacks, raise ``ValueError``.
        """
        tags = self.meta.tags
        mask = torch.ones(len(offsets), width, len(tags), dtype=torch.bool)
        for row, (offs, spans) in enumerate(zip(offsets, forced)):
            aligned, bad = self.codec.align(offs, spans)
            if bad:
                raise ValueError(f"forced span {bad[0].start}..{bad[0].end} does not fall on unit boundaries")
            for start, end, label in aligned:
                for pos in range(start, end):
                    mask[row, pos] = self._allowed_at(pos - start, end - start, label)
                if end < width and self.meta.scheme is TagScheme.BIO:
                    # the unit after a forced span must not continue it
                    mask[row, end] &= torch.tensor([split_tag(t)[0] != "I" for t in tags])
        return mask

    def _allowed_at(self, index: int, length: int, label: str) -> torch.Tensor:
        scheme = self.meta.scheme
        if length == 1:
            prefixes = {"B"} if scheme is TagScheme.BIO else {"S"}
        elif index == 0:
            prefixes = {"B"}
        elif index == length - 1 and scheme is not TagScheme.BIO:
            prefixes = {"E"}
        else:
            prefixes = {scheme.inside}
        if label and label not in self.meta.labels:
            raise ValueError(f"label {label!r} is not one of this model's labels")
        allowed = []
        for tag in self.meta.tags:
            prefix, tag_label = split_tag(tag)
            allowed.append(prefix in prefixes and prefix != OUTSIDE and (not label or tag_label == label))
        return torch.tensor(allowed)


def plan_batches(lengths: Sequence[int], max_batch: int, max_units: int) -> list[list[int]]:
    """Group indices by length (longest first) so padded size stays within ``max_units``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= max_batch or width * (len(current) + 1) > max_units):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
