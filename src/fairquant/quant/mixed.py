"""Sensitivity-based mixed precision: per-layer sensitivity and a bit allocation under a budget.

Sensitivity (as in HAWQ and AIMET's per-layer analysis): the increase of the mean loss on a
calibration set when only one layer is quantized to ``b`` bits and every other layer stays fp32.
Allocation picks one bit width per layer to minimise the summed sensitivity subject to a size
budget. Summing per-layer costs assumes they add up (no interaction between layers), the usual
approximation of these methods.

The allocation is solved exactly as a mixed-integer program (``scipy.optimize.milp``): binary
``x[l, k]`` choose option ``k`` for layer ``l``; with cost rows ``c[g, l, k]`` for ``G`` groups
(``G = 1`` for the plain loss) it minimises ``t`` subject to ``sum_lk c[g, l, k] x[l, k] <= t`` for
every ``g``, ``sum_k x[l, k] = 1`` and ``sum_lk n_l bits_k x[l, k] <= budget``, so the same code
minimises a worst-group cost when given one cost row per group.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.metrics.functional import per_sample_loss
from fairquant.models.predict import predict_logits
from fairquant.quant.functional import check_bits, quantize_symmetric
from fairquant.quant.model import quantized_layers
from fairquant.quant.precision import Precision, parse_precision

DEFAULT_OPTIONS = (2, 3, 4, 8)


def _mean_loss(model: nn.Module, data: Split) -> float:
    return per_sample_loss(predict_logits(model, data.x), data.y).double().mean().item()


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    data: Split,
    options: Sequence[int] = DEFAULT_OPTIONS,
    *,
    per_channel: bool = False,
) -> pd.DataFrame:
    """Loss increase on ``data`` when only one layer is quantized, for each layer and bit width.

    Returns columns ``layer``, ``bits``, ``numel``, ``loss_increase``; ``model`` is unchanged.
    """
    for b in options:
        check_bits(b)
    work = copy.deepcopy(model).eval()
    base = _mean_loss(work, data)
    rows = []
    for name, layer in quantized_layers(work):
        original = layer.weight.detach().clone()
        for b in options:
            layer.weight.copy_(quantize_symmetric(original, b, per_channel=per_channel))
            rows.append((name, b, original.numel(), _mean_loss(work, data) - base))
        layer.weight.copy_(original)
    return pd.DataFrame(rows, columns=["layer", "bits", "numel", "loss_increase"])


def allocate_bits(
    costs: np.ndarray, sizes: Sequence[int], options: Sequence[int], budget_bits: float
) -> list[int]:
    """Bits per layer minimising ``max_g sum_l costs[g, l, chosen]`` within ``budget_bits`` total.

    ``costs`` is ``(G, L, K)`` (or ``(L, K)`` for one objective); ``budget_bits`` counts weight bits
    over all layers. Raises :class:`ConfigError` if even the lowest bits exceed the budget.

    >>> allocate_bits(np.array([[5.0, 0.0], [1.0, 0.0]]), [10, 10], [2, 8], budget_bits=100)
    [8, 2]
    """
    c = np.asarray(costs, dtype=float)
    c = c[None] if c.ndim == 2 else c
    g, n_layers, k = c.shape
    sizes_arr = np.asarray(sizes, dtype=float)
    opts = np.asarray(options, dtype=float)
    if len(sizes_arr) != n_layers or len(opts) != k:
        raise ConfigError(f"costs {c.shape} do not match {n_layers} layers and {k} options")
    smallest = float(sizes_arr.sum() * opts.min())
    if budget_bits < smallest:
        raise ConfigError(
            f"budget of {budget_bits:.0f} weight bits is below the smallest model "
            f"({smallest:.0f} bits, every layer at {int(opts.min())} bits)"
        )
    nx = n_layers * k  # variables: x (layer-major) then t
    objective = np.zeros(nx + 1)
    objective[-1] = 1.0
    group_rows = np.hstack([c.reshape(g, nx), -np.ones((g, 1))])
    one_hot = np.zeros((n_layers, nx + 1))
    for layer in range(n_layers):
        one_hot[layer, layer * k : (layer + 1) * k] = 1.0
    size_row = np.append(np.outer(sizes_arr, opts).ravel(), 0.0)[None]
    constraints = [
        LinearConstraint(group_rows, -np.inf, 0.0),
        LinearConstraint(one_hot, 1.0, 1.0),
        LinearConstraint(size_row, -np.inf, budget_bits),
    ]
    integrality = np.append(np.ones(nx), 0.0)
    bounds = Bounds(np.append(np.zeros(nx), -np.inf), np.append(np.ones(nx), np.inf))
    result = milp(objective, constraints=constraints, integrality=integrality, bounds=bounds)
    if not result.success:
        raise ConfigError(f"bit allocation failed: {result.message}")
    choice = result.x[:nx].reshape(n_layers, k).argmax(axis=1)
    return [int(options[i]) for i in choice]


def sensitivity_precision(
    sensitivity: pd.DataFrame,
    *,
    budget_bits: float,
    name: str | None = None,
    per_channel: bool = False,
) -> Precision:
    """The loss-minimising per-layer allocation at ``budget_bits`` average bits per weight."""
    table = sensitivity.pivot(index="layer", columns="bits", values="loss_increase")
    layers = list(dict.fromkeys(sensitivity.layer))  # model order
    table = table.loc[layers]
    sizes = sensitivity.drop_duplicates("layer").set_index("layer").loc[layers, "numel"]
    options = [int(b) for b in table.columns]
    chosen = allocate_bits(
        table.to_numpy(), sizes.tolist(), options, budget_bits * float(sizes.sum())
    )
    base = parse_precision(f"int{max(options)}{'-pc' if per_channel else ''}")
    return Precision(
        name=name or f"mixed-{budget_bits:g}b",
        kind="int",
        bits=base.bits,
        per_channel=per_channel,
        layers=tuple(zip(layers, chosen, strict=True)),
    )
