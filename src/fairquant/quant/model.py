"""Quantized copies of a model; the full-precision model is never changed."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from fairquant.errors import ConfigError
from fairquant.quant.activations import attach_activation_quantization
from fairquant.quant.functional import quantize_symmetric
from fairquant.quant.precision import FLOAT_BITS, Precision

#: Layers whose weights the papers quantize: every convolution and fully connected layer.
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs whose weights weight-only quantization touches, in forward order
    of registration."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def layer_bits(model: nn.Module, precision: Precision) -> dict[str, int]:
    """Weight bits of each quantized layer: ``precision.bits``, ``edge_bits`` for the first and
    last layer (in registration order, which is forward order for the registered models), and
    any per-layer bits of ``precision.layers``, which must name layers of ``model``
    (:data:`~fairquant.quant.precision.FLOAT_BITS`: the layer stays in float)."""
    names = [n for n, _ in quantized_layers(model)]
    bits = dict.fromkeys(names, precision.bits)
    if precision.edge_bits is not None and names:
        bits[names[0]] = bits[names[-1]] = precision.edge_bits
    unknown = [layer for layer, _ in precision.layers if layer not in bits]
    if unknown:
        raise ConfigError(
            f"precision {precision.name!r} names layers the model does not have: {unknown}; "
            f"its quantized layers are {names}"
        )
    bits.update(precision.layers)
    return bits


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with each BatchNorm folded into the convolution before it.

    Uses ``torch.fx``'s Conv+BN fusion, so the model must be traceable; layer names are kept.
    A model without BatchNorm, or with a BatchNorm that does not directly follow a convolution
    (which cannot be folded), is refused rather than quantized as if it had been folded.
    """
    from torch.fx.experimental.optimization import fuse

    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    name = type(model).__name__
    if not any(isinstance(m, norms) for m in model.modules()):
        raise ConfigError(f"{name} has no BatchNorm layer to fold: use the precision without -bn")
    try:
        fused = fuse(copy.deepcopy(model).eval(), inplace=True)
    except Exception as e:  # torch.fx raises many types on untraceable control flow
        raise ConfigError(
            f"cannot fold BatchNorm in {name}: torch.fx could not trace it ({e})"
        ) from None
    left = [n for n, m in fused.named_modules() if isinstance(m, norms)]
    if left:
        raise ConfigError(
            f"cannot fold BatchNorm in {name}: {left} do not directly follow a convolution; "
            "use the precision without -bn"
        )
    return fused


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    precision: Precision,
    *,
    calibration: Tensor | None = None,
    calibration_method: str = "minmax",
) -> nn.Module:
    """A copy of ``model`` at ``precision``, in eval mode.

    ``int<b>``: every Conv and Linear weight is quantize-dequantized with the papers' symmetric
    quantizer (per tensor, or per output channel for ``-pc``; ``-fl<k>`` layers at ``k`` bits);
    biases, BatchNorm and activations stay float32 (weights-only PTQ). With ``-a<k>`` the inputs
    of those layers are quantized too, with ranges calibrated on ``calibration`` (model-ready
    images) by ``calibration_method`` (see :mod:`fairquant.quant.activations`); ``-da<k>`` takes
    them per batch. ``-bn`` quantizes the BatchNorm-folded weights.
    ``fp16``/``bf16``: all weights and the computation are cast to that dtype. Their copies are
    also made channels-last: on CPUs without native half-precision units PyTorch's half
    convolutions are ~4x faster in that layout (same values, only the memory order differs).
    """
    q = copy.deepcopy(model).eval()
    if precision.kind == "float":
        q = q.to(precision.dtype)
        return q if precision.is_reference else q.to(memory_format=torch.channels_last)
    if precision.fold_bn:
        q = fold_batchnorm(q)
    bits = layer_bits(q, precision)
    layers = [(n, m) for n, m in quantized_layers(q) if bits[n] < FLOAT_BITS]
    for name, layer in layers:
        w = quantize_symmetric(layer.weight, bits[name], per_channel=precision.per_channel)
        layer.weight.copy_(w)
    if precision.act_bits is not None:
        attach_activation_quantization(
            q,
            layers,
            precision.act_bits,
            calibration=calibration,
            method=calibration_method,
            dynamic=precision.dynamic,
        )
    return q
