"""Quantization-aware training: fine-tune from the fp32 weights through fake-quantized weights.

Every Conv and Linear weight is re-parametrized as ``Q(w)``, the papers' symmetric quantizer with
the straight-through estimator (:func:`~fairquant.quant.functional.quantize_symmetric` with
``ste=True``), so the forward pass sees quantized weights and the optimiser updates the latent
float weights. After training the quantized values are written into the weights, so the returned
model is an ordinary module whose weights lie on the grid.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn
from torch.nn.utils import parametrize

from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.quant.functional import quantize_symmetric
from fairquant.quant.model import layer_bits, quantized_layers
from fairquant.quant.precision import Precision
from fairquant.train.loop import TrainConfig, train_model

#: QAT's own optimiser settings: a short, gentle fine-tune from the trained fp32 weights.
DEFAULT_QAT_CONFIG = TrainConfig(epochs=5, lr=0.005, schedule="cosine")


class FakeQuantize(nn.Module):
    """Parametrization ``w -> Q_b(w)`` with the straight-through estimator."""

    def __init__(self, bits: int, *, per_channel: bool) -> None:
        super().__init__()
        self.bits = bits
        self.per_channel = per_channel

    def forward(self, w: Tensor) -> Tensor:
        return quantize_symmetric(w, self.bits, per_channel=self.per_channel, ste=True)


def qat_finetune(
    model: nn.Module,
    train: Split,
    precision: Precision,
    config: TrainConfig = DEFAULT_QAT_CONFIG,
    *,
    show_progress: bool = True,
) -> nn.Module:
    """A QAT copy of ``model`` at integer ``precision``, fine-tuned on ``train``; ``model`` is
    unchanged. The seed of ``config`` makes it deterministic."""
    if precision.kind != "int":
        raise ConfigError(
            f"QAT applies to integer precisions (int8, int4, int4-fl8, ...); got {precision.name!r}"
        )
    if precision.act_bits is not None:
        raise ConfigError(
            f"QAT here fake-quantizes weights only; {precision.name!r} also quantizes "
            "activations: audit it with --method ptq"
        )
    q = copy.deepcopy(model)
    bits = layer_bits(q, precision)
    layers = quantized_layers(q)
    for name, layer in layers:
        fake = FakeQuantize(bits[name], per_channel=precision.per_channel)
        parametrize.register_parametrization(layer, "weight", fake)
    train_model(q, train, config, show_progress=show_progress)
    for _, layer in layers:
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return q.eval()
