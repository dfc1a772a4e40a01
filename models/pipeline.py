"""Inference: texts -> codec -> tensors -> tagger -> tags -> spans on the original texts."""

from __future__ import annotations

import bisect
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch

from models.checkpoint import ModelMeta, load_checkpoint
from models.codec import Codec, Encoded
from models.dictionary import Dictionary, DictionaryError, Entry, without_labels
from models.lexicon import Lexicon
from models.schemes import OUTSIDE, TagScheme, split_tag, tags_to_spans
from models.spans import Span, SpanTable
from models.tagger import Tagger
from models.textsplit import split_text

DictionaryMode = Literal["hard", "soft"]


_B, _I, _E, _S, _O = range(5)
_PREFIX_CODE = {"B": _B, "M": _I, "I": _I, "E": _E, "S": _S, OUTSIDE: _O}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
        return self._check_labels(Dictionary(entries, normalize=self.codec.normalize,
                                        normalize_many=self.codec.normalize_all))

    def soft_lexicon(self, dictionary: Dictionary | Iterable[Entry]) -> Lexicon:
        """A dictionary's entries as a lexicon overlay for :meth:`Codec.encode` (``soft``); a
        :class:`~models.dictionary.DictionaryError` for a model trained without lexicon features."""
        entries = dictionary.entries() if isinstance(dictionary, Dictionary) else list(dictionary)
        try:
            return self.codec.soft_lexicon(entries)
        except ValueError as exc:
            raise DictionaryError(str(exc)) from None

    def _check_labels(self, dictionary: Dictionary) -> Dictionary:
        if self.task == "seg" and dictionary.labels:
            return self.dictionary(dictionary.entries())
        unknown = sorted(dictionary.labels - set(self.meta.labels))
        if unknown:
            have = ", ".join(self.meta.labels) or "none: it only segments"
            raise DictionaryError(f"dictionary label(s) {', '.join(map(repr, unknown))} are not labels of this "
                                  f"{self.task} model (labels: {have})")
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
        if window is not None:
            return self._predict_pieces(texts, window, scores=scores, max_batch=max_batch, max_units=max_units,
                                        forced=forced, dictionary=dictionary, workers=workers,
                                        dictionary_mode=dictionary_mode)
        soft = None
        if isinstance(dictionary, Lexicon):  # a soft_lexicon made once for many calls
            soft, dictionary = dictionary, None
        elif dictionary is not None and dictionary_mode == "soft":
            soft, dictionary = self.soft_lexicon(dictionary), None
        encoded = self.codec.encode(texts, soft)
        if dictionary is not None:
            if forced is not None:
                raise ValueError("give forced spans or a dictionary, not both")
            matcher = (self._check_labels(dictionary) if isinstance(dictionary, Dictionary)
                       else self.dictionary(dictionary))
            if len(matcher):
                forced = [self.codec.on_boundaries(encoded.offsets[i], matcher.find(text))
                          for i, text in enumerate(texts)]
        plan = plan_batches(encoded.lengths, max_batch, max_units)

        def tag(order: list[int]) -> SpanTable:
            return self.tag_encoded(encoded, order, scores, [forced[i] for i in order] if forced is not None else None)

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
        where[np.asarray(rows, dtype=np.int64)] = np.arange(len(rows))  # text i is row where[i]
        return SpanTable.concat(parts, self.label_names).take(where)

    def _predict_pieces(self, texts: Sequence[str], window: int, *, forced: Sequence[Sequence[Span]] | None,
                        **options: Any) -> SpanTable:
        """:meth:`predict_table` with ``window``: the texts' pieces tagged as texts, their spans shifted back."""
        if window < 1:
            raise ValueError(f"window must be at least 1 character, not {window}")
        owners: list[int] = []
        starts: list[int] = []
        pieces: list[str] = []
        piece_forced: list[list[Span]] | None = [] if forced is not None else None
        for i, text in enumerate(texts):
            cuts = split_text(text, window)
            owners += [i] * len(cuts)
            starts += [a for a, _ in cuts]
            pieces += [text[a:b] for a, b in cuts]
            if piece_forced is not None:
                piece_forced += _forced_in_pieces(forced[i], cuts)
        table = self.predict_table(pieces, forced=piece_forced, **options)
        shift = np.repeat(np.asarray(starts, dtype=np.int64), table.counts)
        counts = np.bincount(np.asarray(owners, dtype=np.int64), weights=table.counts, minlength=len(texts))
        return SpanTable(counts.astype(np.int64), table.starts + shift, table.ends + shift, table.labels,
                         table.label_names, table.scores)

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
        tag_mask = None
        if forced is not None and any(forced):
            offsets = np.split(flat_offsets, np.cumsum(lengths)[:-1])
            tag_mask = self.forced_mask(offsets, forced, width)
        if self.task in ("seg", "pos"):
            tag_mask = self._break_at_whitespace(flat_offsets, lengths, width, tag_mask)
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
        return self._span_table(tag_ids, lengths, flat_offsets, probs)

    @property
    def label_names(self) -> list[str]:
        """The labels a :class:`SpanTable` of this model indexes ("" for plain words)."""
        self._tag_tables()
        return self._labels

    def _span_table(self, tag_ids: np.ndarray, lengths: np.ndarray, flat_offsets: np.ndarray,
                    probs: np.ndarray | None) -> SpanTable:
        """Character spans of every row, built with array operations over the whole batch
        (``flat_offsets``: the (units, 2) offsets of all rows' units, row by row).

        Works for any tag sequence the CRF's transition constraints allow; a row with anything
        else (a softmax decoder's output) goes through the repairing :func:`tags_to_spans`.
        """
        prefix, label = self._tag_tables()
        b, width = tag_ids.shape
        valid = np.arange(width)[None, :] < lengths[:, None]
        pre = prefix[tag_ids]
        if self.meta.scheme is TagScheme.BIO:
            lab = label[tag_ids]
            nxt_pre = np.concatenate([pre[:, 1:], np.full((b, 1), _O)], axis=1)
            nxt_lab = np.concatenate([lab[:, 1:], np.full((b, 1), -1)], axis=1)
            nxt_valid = np.concatenate([valid[:, 1:], np.zeros((b, 1), bool)], axis=1)
            starts = valid & (pre == _B)
            ends = valid & (pre != _O) & ~(nxt_valid & (nxt_pre == _I) & (nxt_lab == lab))
        else:
            starts = valid & ((pre == _B) | (pre == _S))
            ends = valid & ((pre == _E) | (pre == _S))
        s_row, s_col = np.nonzero(starts)  # row-major: spans in order, row by row
        e_row, e_col = np.nonzero(ends)
        count = np.bincount(s_row, minlength=b)
        good = count == np.bincount(e_row, minlength=b)
        if len(s_row) == len(e_row):  # the k-th start pairs with the k-th end of the same row
            e_col1 = e_col + 1
            bad_pair = (s_row != e_row) | (s_col >= e_col1)
            bad_pair[1:] |= (s_row[1:] == s_row[:-1]) & (s_col[1:] < e_col1[:-1])  # overlapping spans
            good &= np.bincount(s_row[bad_pair], minlength=b) == 0
            covered = np.bincount(s_row, weights=e_col1 - s_col, minlength=b)
            good &= covered == ((pre != _O) & valid).sum(axis=1)
        else:
            good[:] = False
        # flat unit index of each row's first unit, to read offsets and scores of the whole batch at once
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        flat_probs = probs[valid] if probs is not None else None
        if good.all():  # (all False whenever starts and ends do not pair up)
            unit_s, unit_e = first[s_row] + s_col, first[e_row] + e_col + 1
            labels = label[tag_ids[s_row, s_col]]
        else:  # some row is not a sequence the constraints allow: those rows are repaired one by one
            names = self.meta.tags
            per_row = []
            for row in range(b):
                n = int(lengths[row])
                if good[row]:
                    pick_s, pick_e = s_row == row, e_row == row
                    per_row.append((s_col[pick_s], e_col[pick_e] + 1, label[tag_ids[row, s_col[pick_s]]]))
                else:  # repair it the documented way
                    repaired = tags_to_spans([names[t] for t in tag_ids[row, :n].tolist()])
                    per_row.append((np.asarray([a for a, _, _ in repaired], dtype=np.int64),
                                    np.asarray([z for _, z, _ in repaired], dtype=np.int64),
                                    np.asarray([self._labels.index(c) for _, _, c in repaired], dtype=np.int64)))
            count = np.asarray([len(s) for s, _, _ in per_row], dtype=np.int64)
            shift = np.repeat(first, count)
            unit_s = np.concatenate([s for s, _, _ in per_row] + [np.zeros(0, np.int64)]) + shift
            unit_e = np.concatenate([e for _, e, _ in per_row] + [np.zeros(0, np.int64)]) + shift
            labels = np.concatenate([c for _, _, c in per_row] + [np.zeros(0, np.int64)])
        mins = _span_minima(flat_probs, unit_s, unit_e) if flat_probs is not None else None
        return SpanTable(count.astype(np.int64), flat_offsets[unit_s, 0], flat_offsets[unit_e - 1, 1],
                         labels.astype(np.int64), self._labels, mins)

    def _tag_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Per tag id: its prefix code and the index of its label in ``self._labels``."""
        if getattr(self, "_tables", None) is None or self._tables[0] is not self.meta.tags:
            split = [split_tag(t) for t in self.meta.tags]
            self._labels = sorted({lab for _, lab in split})
            prefix = np.asarray([_PREFIX_CODE[p] for p, _ in split], dtype=np.int8)  # small: fast gathers
            label = np.asarray([self._labels.index(lab) for _, lab in split])
            self._tables = (self.meta.tags, prefix, label)
        return self._tables[1], self._tables[2]


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
                    mask[row, end] &= torch.from_numpy(self._tag_tables()[0] != _I)
        return mask

    def _break_at_whitespace(
        self, flat_offsets: np.ndarray, lengths: np.ndarray, width: int, tag_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Words never span whitespace: a unit that follows whitespace must start a word.

        ``flat_offsets``: the (units, 2) offsets of all rows' units, row by row (``lengths`` per row).
        """
        after_gap = np.zeros(len(flat_offsets), dtype=bool)
        after_gap[1:] = flat_offsets[1:, 0] > flat_offsets[:-1, 1]
        firsts = np.cumsum(lengths) - lengths
        after_gap[firsts[lengths > 0]] = False  # a row's first unit follows nothing
        if not after_gap.any():
            return tag_mask
        where = np.flatnonzero(after_gap)
        row = np.searchsorted(firsts, where, side="right") - 1
        gaps = np.zeros((len(lengths), width), dtype=bool)
        gaps[row, where - firsts[row]] = True
        starts = torch.from_numpy(np.isin(self._tag_tables()[0], (_B, _S, _O)))
        if tag_mask is None:
            tag_mask = torch.ones(len(lengths), width, len(self.meta.tags), dtype=torch.bool)
        gap = torch.from_numpy(gaps)
        restricted = tag_mask & starts
        # where a forced (dictionary) word crosses the whitespace, the user's word wins
        keep_forced = ~restricted.any(-1, keepdim=True)
        return torch.where(gap.unsqueeze(-1) & ~keep_forced, restricted, tag_mask)

    def _allowed_at(self, index: int, length: int, label: str) -> torch.Tensor:
        bio = self.meta.scheme is TagScheme.BIO
        if length == 1:
            code = _B if bio else _S
        elif index == 0:
            code = _B
        elif index == length - 1 and not bio:
            code = _E
        else:
            code = _I
        if label and label not in self.meta.labels:
            raise ValueError(f"label {label!r} is not one of this model's labels")
        prefix, label_index = self._tag_tables()
        allowed = prefix == code
        if label:
            allowed &= label_index == self._labels.index(label)
        return torch.from_numpy(allowed)


#: Linear layers with fewer outputs than this stay float under int8 (see quantize_int8).
INT8_MIN_LINEAR_OUT = 64


def quantize_int8(tagger: Tagger, per_channel: bool = False) -> Tagger:
    """Dynamic int8 quantisation of the encoder (and projection, for 64+ tags) for CPU inference; CRF stays float.

    ``per_channel``: one weight scale per output row instead of one per matrix (zh-ner's dev F1 drop 0.14 ->
    0.07; zh-seg and zh-pos within ±0.01 either way; the LSTM 2-4% slower)."""
    import warnings

    from torch.ao.nn.quantized import dynamic
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    # Linear layers with few outputs (the projection to 4-20 tags) stay float: the int8 kernel's cost of
    # quantising its input each call outweighs the smaller matmul (measured on 512 inputs, one thread:
    # 4 tags 406 vs 262 us, 17 tags 451 vs 355 us; 140 tags 797 vs 1,528 us, for 1,600 rows).
    names = {name for name, module in tagger.named_modules()
             if isinstance(module, (torch.nn.LSTM, torch.nn.GRU))
             or (isinstance(module, torch.nn.Linear) and module.out_features >= INT8_MIN_LINEAR_OUT)}
    with warnings.catch_warnings():  # torch marks the quantised tensor constructors as deprecated
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        tagger = quantize_dynamic(tagger, {name: qconfig for name in names}, dtype=torch.qint8)
    for module in tagger.modules():
        if type(module) is dynamic.LSTM:
            module.__class__ = _packed_int8_rnn(dynamic.LSTM, torch.ops.aten.quantized_lstm.data, lstm=True)
        elif type(module) is dynamic.GRU:
            module.__class__ = _packed_int8_rnn(dynamic.GRU, torch.ops.aten.quantized_gru.data, lstm=False)
    return tagger


@functools.cache
def _packed_int8_rnn(base: type, op: Any, lstm: bool) -> type:
    """``base`` (torch's dynamic int8 LSTM or GRU) calling the packed-input overload of its op directly.

    torch's module calls the op's overload packet, which tries the padded-input overload first; that fails
    on packed input and formats every argument (``batch_sizes`` included) into an error message before the
    right overload runs: ~5% of a serving batch's time, spent holding the GIL. Same op, same arguments."""

    def forward_impl(self: Any, input: torch.Tensor, hx: Any, batch_sizes: torch.Tensor | None,
                     max_batch_size: int, sorted_indices: torch.Tensor | None) -> Any:
        if batch_sizes is None:
            return base.forward_impl(self, input, hx, batch_sizes, max_batch_size, sorted_indices)
        if hx is None:
            zeros = torch.zeros(self.num_layers * (2 if self.bidirectional else 1), max_batch_size,
                                self.hidden_size, dtype=input.dtype, device=input.device)
            hx = (zeros, zeros) if lstm else zeros
        else:
            hx = self.permute_hidden(hx, sorted_indices)
        self.check_forward_args(input, hx, batch_sizes)
        params = [m.param for m in self._all_weight_values]
        if lstm:
            result = op(input, batch_sizes, list(hx), params, self.bias, self.num_layers, float(self.dropout),
                        self.training, self.bidirectional, dtype=self.dtype, use_dynamic=True)
            return result[0], result[1:]
        result = op(input, batch_sizes, hx, params, self.bias, self.num_layers, float(self.dropout),
                    self.training, self.bidirectional)
        return result[0], result[1]

    return type(base.__name__, (base,), {"forward_impl": forward_impl, "__module__": __name__})


def _forced_in_pieces(spans: Sequence[Span], cuts: Sequence[tuple[int, int]]) -> list[list[Span]]:
    """Forced spans of a text moved onto its pieces ``cuts``; one that a cut goes through is a ``ValueError``."""
    out: list[list[Span]] = [[] for _ in cuts]
    bounds = [a for a, _ in cuts]
    for span in spans:
        k = bisect.bisect_right(bounds, span.start) - 1
        if k < 0 or span.end > cuts[k][1]:
            raise ValueError(f"forced span {span.start}..{span.end} crosses a sentence end or window cut; "
                             "tag without a window")
        out[k].append(Span(span.start - bounds[k], span.end - bounds[k], span.label, span.score))
    return out


def _span_minima(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """min(values[s:e]) for each span, in one reduceat over the interleaved bounds."""
    if not len(starts):
        return np.zeros(0)
    bounds = np.stack([starts, ends], axis=1).ravel()
    return np.minimum.reduceat(np.append(values, 1.0), bounds)[::2]


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
