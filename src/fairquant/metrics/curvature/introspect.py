"""What curvature is taken of: a deterministic model, and which of its parameters.

The piecewise-linearity of a model, which decides whether the Hessian trace equals the GGN trace
exactly, is declared by the models themselves (:mod:`fairquant.models.piecewise`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from fairquant.errors import ConfigError, DataError
from fairquant.metrics.functional import group_counts
from fairquant.options import Curvature as Curvature
from fairquant.quant.model import quantized_layers

#: The second-order matrix: the Hessian ``H_a`` or the generalized Gauss-Newton ``G_a``.
#: The parameters it is taken over (:func:`curvature_parameters`).
Parameters = Literal["quantized", "all"]


def check_curvature(curvature: str) -> None:
    """Refuse anything but ``"hessian"`` or ``"ggn"`` with a :class:`ConfigError`."""
    if curvature not in ("hessian", "ggn"):
        raise ConfigError(f"curvature must be 'hessian' or 'ggn'; got {curvature!r}")


def check_deterministic(model: nn.Module, x: Tensor) -> nn.Module:
    """Put ``model`` in eval mode (BatchNorm statistics frozen, dropout off) and check it is a
    deterministic function: two identical forward passes must give identical outputs.

    Curvature is the derivative of one fixed function; a model whose outputs differ between calls
    (dropout in a custom module, a sampling layer) has none, so it is refused with a
    :class:`ConfigError`.
    """
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    if not torch.equal(a, b):
        raise ConfigError(
            f"{type(model).__name__} is not deterministic in eval mode (two identical forward "
            f"passes differ by up to {(a - b).abs().max().item():.3g}); curvature needs a fixed "
            "function: remove stochastic layers or make them respect model.eval()"
        )
    return model


def check_group_data(model: nn.Module, x: Tensor, y: Tensor, g: Tensor, num_groups: int) -> Tensor:
    """Check that ``x``, ``y`` and ``g`` match in length and ``model`` is deterministic on ``x``
    (:func:`check_deterministic`, on its first 8 samples); return the samples per group."""
    if not len(x) == len(y) == len(g):
        raise DataError(f"x, y and g differ in length: {len(x)}, {len(y)}, {len(g)}")
    check_deterministic(model, x[: min(len(x), 8)])
    return group_counts(g, num_groups)


def curvature_parameters(model: nn.Module, which: Parameters = "quantized") -> list[nn.Parameter]:
    """The parameters curvature is taken over: ``"quantized"`` = the weights that weight-only
    quantization changes (every Conv/Linear weight, the ``θ`` of Liu et al.'s bound), or ``"all"``.
    """
    if which == "quantized":
        params = [m.weight for _, m in quantized_layers(model)]
    elif which == "all":
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        raise ConfigError(f"parameters must be 'quantized' or 'all'; got {which!r}")
    if not params:
        raise ConfigError(f"{type(model).__name__} has no {which} parameters to differentiate")
    return params


def named_parameters(model: nn.Module, which: Parameters) -> dict[str, Tensor]:
    """:func:`curvature_parameters` by name, detached (the point ``θ`` of the curvature)."""
    chosen = {id(p) for p in curvature_parameters(model, which)}
    return {n: p.detach() for n, p in model.named_parameters() if id(p) in chosen}
