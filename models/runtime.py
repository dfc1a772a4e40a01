"""Where and how a model runs: the device, the CPU cores, and int8 quantisation for CPU inference."""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from seqtag.models.tagger import Tagger


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
