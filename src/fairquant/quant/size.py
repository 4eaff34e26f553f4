"""The exact storage a model needs at a precision, in bytes.

Integer layers pack ``bits x elements`` bits (rounded up to whole bytes per tensor) plus one
float32 scale per tensor or per output channel (the symmetric quantizer has no zero point);
static activation quantization adds a float32 scale and an int32 zero point per layer. Every
other parameter and buffer (biases, BatchNorm) is counted at its stored size: float32 for integer
precisions, the half dtype for fp16/bf16.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fairquant.quant.model import fold_batchnorm, layer_bits, quantized_layers
from fairquant.quant.precision import FLOAT_BITS, Precision

SCALE_BYTES = 4


def packed_size_bytes(model: nn.Module, precision: Precision) -> int:
    """Bytes to store ``model`` at ``precision`` (weights packed, scales and float tensors added).

    >>> m = nn.Linear(10, 4)  # 40 weights + 4 biases
    >>> from fairquant.quant.precision import parse_precision
    >>> packed_size_bytes(m, parse_precision("fp32")), packed_size_bytes(m, parse_precision("int4"))
    (176, 40)
    """
    packed: dict[str, tuple[int, int]] = {}
    if precision.fold_bn:
        model = fold_batchnorm(model)
    if precision.kind == "int":
        bits = layer_bits(model, precision)
        for name, layer in quantized_layers(model):
            if bits[name] >= FLOAT_BITS:
                continue
            w = layer.weight
            scales = w.shape[0] if precision.per_channel and w.ndim > 1 else 1
            packed[f"{name}.weight" if name else "weight"] = (bits[name], scales)
    total = 0
    if precision.act_bits is not None and not precision.dynamic:
        total += 2 * SCALE_BYTES * len(packed)
    for key, tensor in model.state_dict().items():
        if key in packed:
            b, scales = packed[key]
            total += math.ceil(b * tensor.numel() / 8) + SCALE_BYTES * scales
        elif tensor.is_floating_point() and precision.kind == "float":
            total += tensor.numel() * torch.empty((), dtype=precision.dtype).element_size()
        else:
            total += tensor.numel() * tensor.element_size()
    return total
