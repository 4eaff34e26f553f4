"""Per-layer (mixed) precision: the spec, its exact packed size and each layer's quantization error.

A per-layer precision gives each quantized layer its own bit width and saves as a ``@spec.json``
that any ``--precisions`` accepts (:func:`layer_precision`). Choosing those widths is the other
two parts of mixed precision: the per-layer, per-group excess loss it costs
(:mod:`fairquant.metrics.sensitivity`) and the allocation under a size budget
(:mod:`fairquant.mitigate.allocate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from torch import Tensor, nn

from fairquant.quant.functional import check_bits, quantize_symmetric
from fairquant.quant.model import quantized_layers
from fairquant.quant.precision import Precision, parse_precision
from fairquant.quant.size import SCALE_BYTES, packed_size_bytes


def layer_precision(
    layers: Sequence[str], bits: Sequence[int], *, name: str, per_channel: bool = False
) -> Precision:
    """A per-layer precision (``bits[i]`` for ``layers[i]``) that saves as a ``@spec.json``."""
    base = parse_precision(f"int{max(bits)}{'-pc' if per_channel else ''}")
    return replace(base, name=name, layers=tuple(zip(layers, (int(b) for b in bits), strict=True)))


def layer_size_costs(
    model: nn.Module, options: Sequence[int], *, per_channel: bool = False
) -> tuple[np.ndarray, int]:
    """Exact bytes of each quantized layer at each of ``options`` bits, and the fixed rest.

    Returns ``(costs, fixed)``: ``costs[l, k] = ceil(bits_k n_l / 8) + 4 * scales_l`` (as
    :func:`~fairquant.quant.size.packed_size_bytes` packs a layer) and ``fixed``, the bytes of
    every other tensor, so that a per-layer precision takes exactly ``fixed + sum_l costs[l, k_l]``.

    >>> costs, fixed = layer_size_costs(nn.Linear(10, 4), [2, 8])
    >>> costs.tolist(), fixed  # 40 weights: 10 or 40 bytes + one scale; 4 float32 biases
    ([[14.0, 44.0]], 16)
    """
    for b in options:
        check_bits(b)
    costs = []
    for _, layer in quantized_layers(model):
        w = layer.weight
        scales = w.shape[0] if per_channel and w.ndim > 1 else 1
        costs.append([math.ceil(b * w.numel() / 8) + SCALE_BYTES * scales for b in options])
    table = np.asarray(costs, dtype=float).reshape(-1, len(options))
    first = parse_precision(f"int{options[0]}{'-pc' if per_channel else ''}")
    fixed = packed_size_bytes(model, first) - int(table[:, 0].sum())
    return table, fixed


def layer_deltas(
    model: nn.Module, options: Sequence[int], *, per_channel: bool = False
) -> list[tuple[str, int, Tensor]]:
    """``(layer, bits, δ)`` for each quantized layer and bit width: ``δ = Q_b(w) - w`` of that
    layer's weight (shape of the weight), with the quantizer
    :func:`~fairquant.quant.model.quantize_model` applies."""
    for b in options:
        check_bits(b)
    out = []
    for name, layer in quantized_layers(model):
        w = layer.weight.detach()
        for b in options:
            out.append((name, int(b), quantize_symmetric(w, b, per_channel=per_channel) - w))
    return out
