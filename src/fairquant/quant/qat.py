"""Quantization-aware training: fine-tune from the fp32 weights through fake-quantized weights.

Every Conv and Linear weight is re-parametrized as ``Q(w)``, the papers' symmetric quantizer with
the straight-through estimator (:func:`~fairquant.quant.functional.quantize_symmetric` with
``ste=True``), so the forward pass sees quantized weights and the optimiser updates the latent
float weights. After training the quantized values are written into the weights, so the returned
model is an ordinary module whose weights lie on the grid.

With ``lsq=True`` the step of each layer (or channel) is learned instead of set to
``max|w| / q``: LSQ (Esser et al., ICLR 2020, "Learned Step Size Quantization"),
``w~ = s * round(clamp(w / s, -2^(b-1), 2^(b-1) - 1))`` with ``s`` initialised to
``2 mean|w| / sqrt(q)`` and its gradient scaled by ``1 / sqrt(n_w q)``. The steps are trained with
the same optimiser settings as the weights (weight decay included, unlike the paper).
"""

from __future__ import annotations

import copy
import math

from torch import Tensor, nn
from torch.nn.utils import parametrize

from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.options import DEFAULT_QAT_CONFIG as DEFAULT_QAT_CONFIG
from fairquant.quant.functional import clamp_inclusive, quantize_symmetric, round_ste
from fairquant.quant.model import layer_bits, quantized_layers
from fairquant.quant.precision import Precision
from fairquant.train.loop import TrainConfig, train_model

#: QAT's own optimiser settings: a short, gentle fine-tune from the trained fp32 weights.


class FakeQuantize(nn.Module):
    """Parametrization ``w -> Q_b(w)`` with the straight-through estimator."""

    def __init__(self, bits: int, *, per_channel: bool) -> None:
        super().__init__()
        self.bits = bits
        self.per_channel = per_channel

    def forward(self, w: Tensor) -> Tensor:
        return quantize_symmetric(w, self.bits, per_channel=self.per_channel, ste=True)


def _scale_grad(x: Tensor, factor: float) -> Tensor:
    """``x`` forward, ``factor * grad`` backward."""
    return (x - x * factor).detach() + x * factor


class LearnedStepQuantize(nn.Module):
    """LSQ parametrization ``w -> s * round_ste(clamp(w / s, lo, hi))`` with a learned step."""

    def __init__(self, weight: Tensor, bits: int, *, per_channel: bool) -> None:
        super().__init__()
        self.bits = bits
        q = 2 ** (bits - 1) - 1
        w = weight.detach().abs()
        dims = tuple(range(1, w.ndim)) if per_channel and w.ndim > 1 else tuple(range(w.ndim))
        n = w[0].numel() if per_channel and w.ndim > 1 else w.numel()
        self.step = nn.Parameter(2 * w.mean(dim=dims, keepdim=True) / math.sqrt(q) + 1e-12)
        self.grad_factor = 1.0 / math.sqrt(n * q)

    def forward(self, w: Tensor) -> Tensor:
        s = _scale_grad(self.step, self.grad_factor)
        lo, hi = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        return round_ste(clamp_inclusive(w / s, lo, hi)) * s


def qat_finetune(
    model: nn.Module,
    train: Split,
    precision: Precision,
    config: TrainConfig = DEFAULT_QAT_CONFIG,
    *,
    lsq: bool = False,
    class_weights: Tensor | None = None,
    focal_gamma: float = 0.0,
    show_progress: bool = True,
) -> nn.Module:
    """A QAT copy of ``model`` at integer ``precision``, fine-tuned on ``train``; ``model`` is
    unchanged. The seed of ``config`` makes it deterministic. ``class_weights`` and
    ``focal_gamma`` shape the fine-tuning loss as in :func:`~fairquant.train.loop.train_model`."""
    if precision.kind != "int":
        raise ConfigError(
            f"QAT applies to integer precisions (int8, int4, int4-fl8, ...); got {precision.name!r}"
        )
    if precision.fold_bn:
        raise ConfigError(
            f"{precision.name!r} folds BatchNorm, which QAT here keeps in place while it "
            "fine-tunes; audit it with --method ptq"
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
        if lsq:
            fake = LearnedStepQuantize(layer.weight, bits[name], per_channel=precision.per_channel)
        else:
            fake = FakeQuantize(bits[name], per_channel=precision.per_channel)
        parametrize.register_parametrization(layer, "weight", fake)
    train_model(
        q,
        train,
        config,
        class_weights=class_weights,
        focal_gamma=focal_gamma,
        show_progress=show_progress,
    )
    for _, layer in layers:
        # drops the parametrization with LSQ's step: the state-dict keys are the original ones
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return q.eval()
