"""Inference: texts -> codec -> tensors -> tagger -> tags -> spans on the original texts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import torch

from seqtag.models import engine
from seqtag.models.engine import plan_batches
from seqtag.models.checkpoint import ModelMeta, load_checkpoint
from seqtag.models.codec import Codec, Encoded
from seqtag.models.dictionary import Dictionary, DictionaryError, Entry, clip, without_labels
from seqtag.models.lexicon import Lexicon
from seqtag.models.runtime import pick_device, quantize_int8
from seqtag.models.schemes import JOINED, TagTable
from seqtag.models.spans import Span, SpanTable
from seqtag.models.tagger import Tagger

DictionaryMode = Literal["hard", "soft"]


@dataclass
class Pipeline:
    tagger: Tagger
    codec: Codec
    meta: ModelMeta
    device: torch.device
    # On CUDA the encoder may run in half precision ("float16"/"bfloat16"); the CRF always runs in float32.
    precision: str = "float32"
    int8: bool = False  # the tagger was quantised to dynamic int8 (CPU)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "auto", precision: str = "float32",
             int8: bool = True) -> "Pipeline":
        """The checkpoint in ``directory`` on ``device``.

        ``int8``: on a CPU, quantise the encoder to dynamic int8 where the checkpoint asks for it (its
        config's ``inference.quantize``, set by ``seqtag compact --int8``). False keeps it float32, so a
        text's tags never depend on the other texts in its batch: dynamic int8 picks one quantisation scale
        per step for the whole batch, and with the shipped zh-seg about 1% of CTB6 dev sentences come out
        differently in different batches (see BENCHMARKS.md).
        """
        if precision not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"precision must be float32, float16 or bfloat16, not {precision!r}")
        device = pick_device(device)
        tagger, codec, meta = load_checkpoint(directory, device)
        inference = meta.extra.get("inference") or {}
        quantised = int8 and device.type == "cpu" and inference.get("quantize") == "int8"
        if quantised:
            weights = inference.get("int8_weights", "per-tensor")
            if weights not in ("per-tensor", "per-channel"):
                raise ValueError(f"{directory}: config.json inference.int8_weights must be per-tensor or "
                                 f"per-channel, not {weights!r}")
            tagger = quantize_int8(tagger, per_channel=weights == "per-channel")
        return cls(tagger, codec, meta, device, precision, int8=quantised)

    @property
    def arithmetic(self) -> str:
        """What the encoder computes in: "int8" (dynamic, on CPU), else the float type it runs in."""
        if self.int8:
            return "int8"
        return self.precision if self.device.type == "cuda" else "float32"

    @property
    def task(self) -> str:
        return self.meta.task

    def batch_workers(self, cores: int) -> int:
        """How many batches to tag at once on ``cores`` CPU cores, each with one torch thread: one per core for
        a recurrent encoder on the CPU, whose time steps are too small to share among threads (zh-seg on 2
        cores, CTB6 dev: 109k chars/s with 2 torch threads, 143k with 2 batches at once; zh-ner 71k -> 91k);
        1 for the convolutional encoder, which gains more from 2 torch threads (953k vs 849k chars/s for
        zh-seg-fast), and on a GPU."""
        recurrent = self.tagger.config.encoder in ("lstm", "gru")
        return max(1, cores) if recurrent and self.device.type == "cpu" else 1

    def predict(
        self,
        texts: Sequence[str],
        *,
        scores: bool = False,
        max_batch: int = 256,
        max_units: int = 16384,
        forced: Sequence[Sequence[Span]] | None = None,
        dictionary: Dictionary | Lexicon | Iterable[Entry] | None = None,
        workers: int = 1,
        window: int | None = None,
        dictionary_mode: DictionaryMode = "hard",
    ) -> list[list[Span]]:
        """Spans for every text: words (seg), tagged words (pos) or entities (ner).

        ``forced[i]`` are character spans that must come out whole in text ``i``
        (label "" = any label), honoured inside the decoder (constrained Viterbi).
        ``dictionary``: user dictionary entries (``"word"`` or ``("word", "LABEL")``), or a
        :meth:`dictionary` built from them; its words found in a text are forced there, by the rules of
        :mod:`models.dictionary` (leftmost-longest; matches off unit boundaries are skipped).
        ``dictionary_mode``: ``"hard"`` (default) forces the dictionary's words as above; ``"soft"`` adds them
        to the model's lexicon for these texts, as evidence the model weighs against the context (models
        trained with ``--lexicon`` only; others raise :class:`~models.dictionary.DictionaryError`). A
        segmentation model uses a labelled entry's word either way.
        ``workers``: batches tagged at once, each on its own thread (see :meth:`batch_workers`).
        ``window``: tag each text in pieces, as the service does: cut at every sentence end, and pieces
        longer than ``window`` characters cut again (:func:`models.textsplit.split_text`); spans come back on
        the whole text. Long documents then cost time and memory in proportion to their length, and a
        model trained on sentences sees sentences. None (default): each text in one piece.
        """
        return self.predict_table(texts, scores=scores, max_batch=max_batch, max_units=max_units, forced=forced,
                                  dictionary=dictionary, workers=workers, window=window,
                                  dictionary_mode=dictionary_mode).to_lists()

    def dictionary(self, entries: Iterable[Entry]) -> Dictionary:
        """A matcher for ``entries`` that finds them as this model's codec normalises text (full-width,
        case, ...). Raises :class:`~models.dictionary.DictionaryError` for a label the model lacks."""
        if self.task == "seg":  # words only: a labelled entry (jieba's "word FREQ TAG") gives its word
            entries = without_labels(entries)
        return self.check_labels(Dictionary(entries, normalize=self.codec.normalize,
                                        normalize_many=self.codec.normalize_all))

    def soft_lexicon(self, dictionary: Dictionary | Iterable[Entry]) -> Lexicon:
        """A dictionary's entries as a lexicon overlay for :meth:`Codec.encode` (``soft``); a
        :class:`~models.dictionary.DictionaryError` for a model trained without lexicon features."""
        entries = dictionary.entries() if isinstance(dictionary, Dictionary) else list(dictionary)
        try:
            return self.codec.soft_lexicon(entries)
        except ValueError as exc:
            raise DictionaryError(str(exc)) from None

    def check_labels(self, dictionary: Dictionary) -> Dictionary:
        """``dictionary`` ready for this model: a segmenter's without its labels (it takes the words), others'
        as it is; a :class:`~models.dictionary.DictionaryError` naming (at most five, clipped) labels the model
        lacks."""
        if self.task == "seg" and dictionary.labels:
            return self.dictionary(dictionary.entries())
        unknown = sorted(dictionary.labels - set(self.meta.labels))
        if unknown:
            have = ", ".join(self.meta.labels) or "none: it only segments"
            named = ", ".join(clip(label) for label in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise DictionaryError(f"dictionary label(s) {named}{more} are not labels of this {self.task} model "
                                  f"(labels: {have})")
        return dictionary

    def predict_table(
        self,
        texts: Sequence[str],
        *,
        scores: bool = False,
        max_batch: int = 256,
        max_units: int = 16384,
        forced: Sequence[Sequence[Span]] | None = None,
        dictionary: Dictionary | Lexicon | Iterable[Entry] | None = None,
        workers: int = 1,
        window: int | None = None,
        dictionary_mode: DictionaryMode = "hard",
    ) -> SpanTable:
        """:meth:`predict` as one :class:`SpanTable` (flat arrays, no :class:`Span` objects)."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, not {workers}")
        if dictionary_mode not in ("hard", "soft"):
            raise ValueError(f"dictionary_mode must be 'hard' or 'soft', not {dictionary_mode!r}")
        if window is not None and window < 1:
            raise ValueError(f"window must be at least 1 character, not {window}")
        soft = None
        if isinstance(dictionary, Lexicon):  # a soft_lexicon made once for many calls
            soft, dictionary = dictionary, None
        elif dictionary is not None and dictionary_mode == "soft":
            soft, dictionary = self.soft_lexicon(dictionary), None
        matcher = None
        if dictionary is not None:
            if forced is not None:
                raise ValueError("give forced spans or a dictionary, not both")
            matcher = (self.check_labels(dictionary) if isinstance(dictionary, Dictionary)
                       else self.dictionary(dictionary))
            matcher = matcher if len(matcher) else None
        pieces = engine.prepare(texts, window, matcher, forced)
        # dictionary words off unit boundaries are left out; the caller's own forced spans are kept (an error)
        encoded, piece_forced = engine.encode_texts(self.codec, pieces, soft, drop_off_boundaries=matcher is not None,
                                                          links=engine.word_level(self))
        plan = plan_batches(encoded.lengths, max_batch, max_units)

        def tag(order: list[int]) -> SpanTable:
            return self.tag_encoded(encoded, order, scores,
                                    [piece_forced[i] for i in order] if piece_forced is not None else None)

        if workers > 1 and len(plan) > 1:  # torch releases the GIL inside its operations
            was_training = self.tagger.training
            self.tagger.eval()  # once for all threads (tag_encoded's own switch back is per call)
            try:
                with ThreadPoolExecutor(min(workers, len(plan)), thread_name_prefix="seqtag-predict") as pool:
                    parts = list(pool.map(tag, plan))
            finally:
                self.tagger.train(was_training)
        else:
            parts = [tag(order) for order in plan]
        rows = [i for order in plan for i in order]
        where = np.empty(len(rows), dtype=np.int64)
        where[np.asarray(rows, dtype=np.int64)] = np.arange(len(rows))  # piece i is row where[i]
        table = SpanTable.concat(parts, self.label_names).take(where)
        return engine.assemble(pieces, table, len(texts)) if window is not None else table

    def tag_encoded(
        self,
        encoded: Encoded,
        order: Sequence[int],
        scores: bool = False,
        forced: Sequence[Sequence[Span]] | None = None,
    ) -> SpanTable:
        """Tag the encoded texts ``order`` (one batch) and map tags back to character spans: row k of the
        table is text ``order[k]``, and ``forced[k]`` belongs to it."""
        was_training = self.tagger.training
        self.tagger.eval()
        pick, lengths = encoded.rows(order)
        lexicon = encoded.flat_lexicon
        batch = self.codec.pad(encoded.flat_ids[pick], lengths, None if lexicon is None else lexicon[pick])
        flat_offsets = np.take(encoded.flat_offsets, pick, axis=0)  # the batch's units, row by row
        width = batch.unit_ids.shape[1]
        tags = self.tag_table
        tag_mask = None
        if forced is not None and any(forced):
            offsets = np.split(flat_offsets, np.cumsum(lengths)[:-1])
            if self.tagger.crf is None:  # a softmax decoder tags units one by one: only whole words hold
                forced = [[Span(s.start, s.end, "") if s.label == JOINED else s for s in row] for row in forced]
            tag_mask = tags.forced_mask([self._aligned(offs, spans) for offs, spans in zip(offsets, forced)], width)
        if self.task in ("seg", "pos"):
            tag_mask = tags.break_at_whitespace(flat_offsets, lengths, width, tag_mask)
        if self.device.type == "cuda":  # page-locked host memory: the copies below run asynchronously
            batch = batch.pin_memory()
            tag_mask = tag_mask.pin_memory() if tag_mask is not None else None
        if tag_mask is not None:
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
        return tags.spans(tag_ids, lengths, flat_offsets, probs)

    def _aligned(self, offsets: np.ndarray, spans: Sequence[Span]) -> list[tuple[int, int, str]]:
        aligned, bad = self.codec.align(offsets, spans)
        if bad:
            raise ValueError(f"forced span {bad[0].start}..{bad[0].end} does not fall on unit boundaries")
        return aligned

    def forced_mask(self, offsets: Sequence[np.ndarray], forced: Sequence[Sequence[Span]], width: int) -> torch.Tensor:
        """(B, L, T) bool: which tags each unit may take so every forced span comes out whole.

        Forced spans off unit boundaries, or with a label the model lacks, raise ``ValueError``.
        """
        return self.tag_table.forced_mask([self._aligned(o, f) for o, f in zip(offsets, forced)], width)

    @property
    def tag_table(self) -> TagTable:
        """The model's tags as arrays (made again when the tag list changes, as ``--init-from`` grows it)."""
        cached = self.__dict__.get("_tag_table")
        if cached is None or cached.tags != self.meta.tags:
            cached = self.__dict__["_tag_table"] = TagTable(self.meta.tags, self.meta.scheme)
        return cached

    @property
    def label_names(self) -> list[str]:
        """The labels a :class:`SpanTable` of this model indexes ("" for plain words)."""
        return self.tag_table.labels
