"""The network: unit (+ bigram) embeddings -> recurrent encoder -> projection -> CRF or softmax.

Tensors in, tensors out; the caller picks the device once. Text never gets here.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqtag.models.codec import PAD_ID, Batch
from seqtag.models.crf import CRF


class TaggerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    unit_dim: int = Field(128, ge=1)
    """unit (character) embedding size"""
    bigram_dim: int = Field(64, ge=0)
    """bigram embedding size (0 = no bigram features)"""
    lexicon_dim: int = Field(32, ge=0)
    """inputs per unit made from the lexicon features (used with --lexicon; 0 = ignore the lexicon)"""
    encoder: Literal["lstm", "gru", "cnn"] = "lstm"
    """encoder over the units"""
    hidden: int = Field(256, ge=1)
    """hidden size per direction (lstm, gru) or channels (cnn)"""
    layers: int = Field(1, ge=1)
    """encoder layers"""
    bidirectional: bool = True
    """read both directions (lstm, gru)"""
    kernel: int = Field(3, ge=1)
    """cnn only: units per window (odd); block l looks 2**l units apart"""
    embed_dropout: float = Field(0.3, ge=0, lt=1)
    """dropout on the embeddings"""
    dropout: float = Field(0.3, ge=0, lt=1)
    """dropout between layers and before the output layer"""
    decoder: Literal["crf", "softmax"] = "crf"
    """output layer"""
    embed_init: Literal["scaled", "small"] = "small"
    """initial embedding range: ±sqrt(3/dim) (scaled) or ±0.1 (small)"""

    @model_validator(mode="after")
    def _odd_kernel(self) -> "TaggerConfig":
        if self.kernel % 2 == 0:
            raise ValueError("kernel must be odd (a window centred on the unit)")
        return self


class Tagger(nn.Module):
    def __init__(
        self,
        config: TaggerConfig,
        num_units: int,
        num_bigrams: int,
        num_tags: int,
        allowed: torch.Tensor | None = None,
        num_lexicon_features: int = 0,
    ):
        super().__init__()
        self.config = config
        self.unit_embed = nn.Embedding(num_units, config.unit_dim, padding_idx=PAD_ID)
        self.use_bigrams = config.bigram_dim > 0 and num_bigrams > 0
        in_dim = config.unit_dim
        if self.use_bigrams:
            self.bigram_embed = nn.Embedding(num_bigrams, config.bigram_dim, padding_idx=PAD_ID)
            in_dim += 2 * config.bigram_dim  # left and right bigram
        self.use_lexicon = config.lexicon_dim > 0 and num_lexicon_features > 0
        if self.use_lexicon:  # feature bits -> a learnt vector per unit (the sum of its features' columns)
            self.lexicon_proj = nn.Linear(num_lexicon_features, config.lexicon_dim)
            self.register_buffer("lexicon_bits", torch.arange(num_lexicon_features), persistent=False)
            in_dim += config.lexicon_dim
        self.encoder: nn.Module
        if config.encoder == "cnn":
            self.encoder = ConvEncoder(in_dim, config.hidden, config.layers, config.kernel, config.dropout)
            out_dim = config.hidden
        else:
            rnn = nn.LSTM if config.encoder == "lstm" else nn.GRU
            self.encoder = rnn(
                in_dim,
                config.hidden,
                num_layers=config.layers,
                bidirectional=config.bidirectional,
                dropout=config.dropout if config.layers > 1 else 0.0,
                batch_first=True,
            )
            out_dim = config.hidden * (2 if config.bidirectional else 1)
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.project = nn.Linear(out_dim, num_tags)
        self.crf = CRF(num_tags, allowed) if config.decoder == "crf" else None
        self._init_weights()

    def _init_weights(self) -> None:
        for embed in self.embeddings():
            # "scaled": uniform with variance 1/dim (±sqrt(3/dim)), as NCRF++ and most taggers start;
            # "small": uniform ±0.1, the older default
            bound = math.sqrt(3.0 / embed.embedding_dim) if self.config.embed_init == "scaled" else 0.1
            nn.init.uniform_(embed.weight, -bound, bound)
        if isinstance(self.encoder, nn.LSTM):
            # Keras' unit_forget_bias: forget gate starts open (gates are i, f, g, o).
            h = self.config.hidden
            for name, param in self.encoder.named_parameters():
                if name.startswith("bias_ih"):
                    nn.init.zeros_(param)
                    param.data[h : 2 * h] = 1.0
                elif name.startswith("bias_hh"):
                    nn.init.zeros_(param)

    def embeddings(self) -> list[nn.Embedding]:
        """The unit table, then the bigram table if there is one."""
        return [self.unit_embed] + ([self.bigram_embed] if self.use_bigrams else [])

    @property
    def num_tags(self) -> int:
        return self.project.out_features

    def emissions(self, batch: Batch) -> torch.Tensor:
        """Batch on this module's device -> (B, L, T) tag scores."""
        if isinstance(self.encoder, ConvEncoder):
            h = self._conv_input(batch)
            mask = _length_mask(batch.lengths.to(h.device), h.shape[1]).to(h.dtype).unsqueeze(-1)
            return self.project(self.dropout(self.encoder(h, mask)))
        x = self.embed_dropout(self._embed(batch))
        width = x.shape[1]
        # Packing keeps padding out of the backward direction; empty rows are
        # given length 1 (over PAD) and masked out by the decoder.
        lengths = batch.lengths.clamp(min=1).cpu()
        # Batches planned longest-first (Pipeline, service) need no sorting permutation inside packing.
        longest_first = bool((lengths[:-1] >= lengths[1:]).all())
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=longest_first)
        out, _ = self.encoder(packed)
        # Project the packed rows (units only), then pad the T-wide scores: padding rows are never scored,
        # and padding T columns is cheaper than padding 2 * hidden (padded positions score 0; decoders mask them).
        scores = out._replace(data=self.project(self.dropout(out.data)))
        return pad_packed_sequence(scores, batch_first=True, total_length=width)[0]  # (B, L, T)

    def _embed(self, batch: Batch) -> torch.Tensor:
        """(B, L, unit_dim [+ 2 * bigram_dim] [+ lexicon_dim]): each unit's embedding, its two bigrams' and
        its lexicon features'."""
        x = self.unit_embed(batch.unit_ids)  # (B, L, unit_dim)
        if self.use_bigrams:
            bi = self.bigram_embed(batch.bigram_ids)  # (B, L, 2, bigram_dim)
            x = torch.cat([x, bi.flatten(2)], dim=-1)
        if self.use_lexicon:
            x = torch.cat([x, self._lexicon_vectors(batch, x.dtype)], dim=-1)
        return x

    def _lexicon_vectors(self, batch: Batch, dtype: torch.dtype) -> torch.Tensor:
        """(B, L, lexicon_dim) from the batch's feature bits (all zero where a batch has none)."""
        bits = batch.lexicon
        if bits is None:
            bits = torch.zeros_like(batch.unit_ids)
        onehot = ((bits.unsqueeze(-1) >> self.lexicon_bits) & 1).float()
        return self.lexicon_proj(onehot).to(dtype)

    def _conv_input(self, batch: Batch) -> torch.Tensor:
        """The convolutional encoder's input layer over the embeddings, (B, L, channels).

        At inference the layer is folded into the embedding tables (see :meth:`_folded_tables`):
        three gathers and two adds instead of a concatenation and a matrix product.
        """
        if self.training or torch.is_grad_enabled():
            return self.encoder.input(self.embed_dropout(self._embed(batch)))
        units, left, right = self._folded_tables()
        h = F.embedding(batch.unit_ids, units)
        if left is not None:
            h = h + F.embedding(batch.bigram_ids[..., 0], left) + F.embedding(batch.bigram_ids[..., 1], right)
        if self.use_lexicon:  # the input layer's last columns read the lexicon vectors
            weight = self.encoder.input.weight
            lex = self._lexicon_vectors(batch, weight.dtype)
            h = h + F.linear(lex, weight[:, weight.shape[1] - self.config.lexicon_dim :]).to(h.dtype)
        return h

    def _folded_tables(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Unit, left-bigram and right-bigram tables already multiplied by their slices of the
        input layer's weights (bias in the unit table), in float32. Cached, and rebuilt whenever
        any weight they come from changes (in-place updates bump a tensor's version; moved or
        replaced tensors have a new address) and on every train/eval switch.
        """
        layer = self.encoder.input
        sources = [self.unit_embed.weight, layer.weight, layer.bias]
        if self.use_bigrams:
            sources.append(self.bigram_embed.weight)
        key = tuple((w.data_ptr(), w._version, w.dtype, w.device) for w in sources)
        cached = self.__dict__.get("_folded")
        if cached is None or cached[0] != key:
            weight, unit_dim, bigram_dim = layer.weight.float(), self.config.unit_dim, self.config.bigram_dim
            with torch.autocast(layer.weight.device.type, enabled=False):
                units = self.unit_embed.weight.float() @ weight[:, :unit_dim].T + layer.bias.float()
                left = right = None
                if self.use_bigrams:
                    bigrams = self.bigram_embed.weight.float()
                    left = bigrams @ weight[:, unit_dim : unit_dim + bigram_dim].T
                    right = bigrams @ weight[:, unit_dim + bigram_dim : unit_dim + 2 * bigram_dim].T
            cached = self.__dict__["_folded"] = (key, (units, left, right))
        return cached[1]

    def train(self, mode: bool = True) -> "Tagger":
        if mode != self.training:
            self.__dict__.pop("_folded", None)
        return super().train(mode)

    def forward(self, batch: Batch, tags: torch.Tensor) -> torch.Tensor:
        """Training forward pass = the loss (so DistributedDataParallel can wrap the tagger)."""
        return self.loss(batch, tags)

    def loss(self, batch: Batch, tags: torch.Tensor) -> torch.Tensor:
        """Summed negative log-likelihood of gold ``tags`` (B, L)."""
        scores = self.emissions(batch)
        lengths = batch.lengths.to(scores.device)
        if self.crf is not None:
            return self.crf.nll(scores, tags, lengths, reduction="sum")
        mask = _length_mask(lengths, scores.shape[1])
        logp = scores.float().log_softmax(-1).gather(-1, tags.unsqueeze(-1)).squeeze(-1)
        return -(logp * mask).sum()

    @torch.no_grad()
    def decode(
        self, batch: Batch, tag_mask: torch.Tensor | None = None, with_marginals: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Best tags (B, L) and, if asked, per-unit marginals (B, L, T)."""
        scores = self.emissions(batch).float()
        lengths = batch.lengths.to(scores.device)
        if self.crf is not None:
            tags, _ = self.crf.viterbi(scores, lengths, tag_mask)
            marginals = self.crf.marginals(scores, lengths) if with_marginals else None
            return tags, marginals
        if tag_mask is not None:
            usable = tag_mask.any(-1, keepdim=True)
            scores = scores.masked_fill(usable & ~tag_mask, -1e4)
        probs = scores.softmax(-1) * _length_mask(lengths, scores.shape[1]).unsqueeze(-1)
        return probs.argmax(-1), (probs if with_marginals else None)

    def extend_tags(self, num_new: int, allowed: torch.Tensor | None) -> None:
        """Grow the output layer (and CRF) by ``num_new`` tags, keeping what was learned."""
        old = self.project
        self.project = nn.Linear(old.in_features, old.out_features + num_new).to(old.weight.device)
        with torch.no_grad():
            self.project.weight.zero_()
            self.project.bias.zero_()
            self.project.weight[: old.out_features] = old.weight
            self.project.bias[: old.out_features] = old.bias
        if self.crf is not None:
            self.crf.extend(num_new, allowed)

    def extend_embeddings(self, num_units: int, num_bigrams: int) -> None:
        """Grow the embedding tables to the codec's new vocabulary sizes."""
        self.unit_embed = _grow(self.unit_embed, num_units)
        if self.use_bigrams:
            self.bigram_embed = _grow(self.bigram_embed, num_bigrams)


    def truncate_bigrams(self, num_bigrams: int) -> None:
        """Drop bigram rows past ``num_bigrams`` (see :meth:`Codec.truncate_bigrams`)."""
        if self.use_bigrams and num_bigrams < self.bigram_embed.num_embeddings:
            weight = self.bigram_embed.weight.detach()[:num_bigrams].clone()
            self.bigram_embed = nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=PAD_ID)


class ConvEncoder(nn.Module):
    """Stacked gated convolutions over units: a fast, parallel alternative to the recurrent encoder.

    An input projection to ``channels`` (applied by the tagger, which folds it into the embedding
    tables at inference), then ``layers`` residual blocks. Block l sees ``kernel``
    units 2**l apart (1, 2, 4, ...; 3 blocks of kernel 3 see 15 units) and gates its output with a
    GLU. Each window is built by concatenating shifted copies and run as one matrix product, so
    any batch shape costs the same kernels. Positions past a sentence's end are zeroed before every
    block: a sentence's output does not depend on what it is batched with.
    """

    def __init__(self, in_dim: int, channels: int, layers: int, kernel: int, dropout: float):
        super().__init__()
        self.kernel = kernel
        self.input = nn.Linear(in_dim, channels)
        self.blocks = nn.ModuleList(nn.Linear(kernel * channels, 2 * channels) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, channels) = ``self.input`` over the embeddings, and a (B, L, 1) 0/1 mask -> (B, L, channels)."""
        h = h * mask
        for level, block in enumerate(self.blocks):
            gated = F.glu(block(self._windows(h, 2**level)), dim=-1)
            h = (h + self.dropout(gated)) * mask
        return h

    def _windows(self, h: torch.Tensor, step: int) -> torch.Tensor:
        width = h.shape[1]
        reach = (self.kernel // 2) * step
        padded = F.pad(h, (0, 0, reach, reach))
        return torch.cat([padded[:, i * step : i * step + width] for i in range(self.kernel)], dim=-1)


def _grow(embed: nn.Embedding, size: int) -> nn.Embedding:
    if size <= embed.num_embeddings:
        return embed
    new = nn.Embedding(size, embed.embedding_dim, padding_idx=PAD_ID).to(embed.weight.device)
    with torch.no_grad():
        nn.init.uniform_(new.weight, -0.1, 0.1)
        new.weight[: embed.num_embeddings] = embed.weight
    return new


def _length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return (torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)).float()
