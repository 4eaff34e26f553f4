"""Sensitivity-based mixed precision: per-layer sensitivity and a bit allocation under a budget.

Sensitivity (as in HAWQ and AIMET's per-layer analysis): the increase of the mean loss on a
calibration set when only one layer is quantized to ``b`` bits and every other layer stays fp32.
Allocation picks one bit width per layer to minimise the summed sensitivity subject to a size
budget. Summing per-layer costs assumes they add up (no interaction between layers), the usual
approximation of these methods.

The allocation is solved exactly as a mixed-integer program (``scipy.optimize.milp``, HiGHS):
binary ``x[l, k]`` choose option ``k`` for layer ``l`` (``sum_k x[l, k] = 1``) under a size row
``sum_lk s[l, k] x[l, k] <= budget`` (``s = n_l bits_k`` for a budget in weight bits, or the
exact packed bytes of :func:`layer_size_costs` for a budget in bytes). With one cost row
``c[g] x = sum_lk c[g, l, k] x[l, k]`` per group ``g`` the objective is, linearised with
auxiliary continuous variables:

* ``"worst"``: ``min t`` s.t. ``c[g] x <= t`` for every ``g`` (minimax, the worst-off group);
* ``"phi"``: ``min u - v`` s.t. ``v <= c[g] x <= u`` for every ``g`` (the spread φ);
* ``"mean"``: ``min sum_g w_g c[g] x`` (the weighted average: the loss-only, HAWQ-style choice).

Ties of ``"worst"`` and ``"phi"`` are broken by a second program that minimises the weighted
average among the allocations within ``1e-9`` (relative) of the optimum.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.models.predict import predict_logits
from fairquant.quant.functional import check_bits, quantize_symmetric
from fairquant.quant.model import quantized_layers
from fairquant.quant.precision import Precision, parse_precision
from fairquant.quant.size import SCALE_BYTES, packed_size_bytes

DEFAULT_OPTIONS = (2, 3, 4, 8)
Objective = Literal["worst", "phi", "mean"]
OBJECTIVES = ("worst", "phi", "mean")
_TIE_RTOL = 1e-6


def _mean_loss(model: nn.Module, data: Split) -> float:
    logits = predict_logits(model, data.x).float()
    return F.cross_entropy(logits, data.y, reduction="none").double().mean().item()


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


def _solve(
    objective: np.ndarray,
    constraints: list[LinearConstraint],
    integrality: np.ndarray,
    bounds: Bounds,
    time_limit: float,
) -> np.ndarray:
    result = milp(
        objective,
        constraints=constraints,
        integrality=integrality,
        bounds=bounds,
        options={"mip_rel_gap": 0.0, "time_limit": time_limit},
    )
    if result.status == 1 and result.x is not None:  # time limit, with a feasible allocation
        warnings.warn(
            f"bit allocation stopped at the {time_limit:g} s time limit before proving its best "
            f"allocation optimal (MILP gap {result.mip_gap:.3g}); using the best one found",
            stacklevel=3,
        )
        return result.x
    if not result.success:
        raise ConfigError(f"bit allocation failed: {result.message}")
    return result.x


def allocate_bits(
    costs: np.ndarray,
    sizes: Sequence[int],
    options: Sequence[int],
    budget_bits: float | None = None,
    *,
    size_costs: np.ndarray | None = None,
    budget: float | None = None,
    objective: Objective = "worst",
    weights: Sequence[float] | None = None,
    time_limit: float = 20.0,
) -> list[int]:
    """Bits per layer minimising ``objective`` over the cost rows within a size budget.

    ``costs`` is ``(G, L, K)`` (or ``(L, K)`` for one row); ``sizes`` the weights per layer. The
    budget is either ``budget_bits`` weight bits over all layers, or ``budget`` in the units of
    ``size_costs`` (``(L, K)``, e.g. bytes from :func:`layer_size_costs`, with the fixed bytes
    already subtracted from ``budget``). ``objective`` is ``"worst"`` (minimax over rows),
    ``"phi"`` (max minus min) or ``"mean"`` (``weights``-weighted average of the rows, uniform by
    default; also the tie-break of the other two). Each program stops after ``time_limit``
    seconds with the best allocation found and a warning (``"phi"`` can be slow to prove
    optimal: many allocations come close to equal group costs). Raises :class:`ConfigError` if
    even the smallest choice exceeds the budget.

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
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
    w = np.full(g, 1.0 / g) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (g,) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights must be {g} non-negative numbers, not all 0; got {weights}")
    if (budget_bits is None) == (budget is None):
        raise ConfigError("give exactly one budget: budget_bits, or budget with size_costs")
    if budget_bits is not None:
        s, limit, unit = np.outer(sizes_arr, opts), float(budget_bits), "weight bits"
    else:
        if size_costs is None or np.shape(size_costs) != (n_layers, k):
            raise ConfigError(f"a budget needs size_costs of shape ({n_layers}, {k})")
        s, limit, unit = np.asarray(size_costs, dtype=float), float(budget), "size units"
    smallest = float(s.min(axis=1).sum())
    if limit < smallest:
        raise ConfigError(
            f"budget of {limit:.0f} {unit} is below the smallest model "
            f"({smallest:.0f} {unit}, every layer at its smallest option)"
        )
    nx = n_layers * k
    n_aux = {"worst": 1, "phi": 2, "mean": 0}[objective]
    rows = np.hstack([c.reshape(g, nx), np.zeros((g, n_aux))])
    one_hot = np.zeros((n_layers, nx + n_aux))
    for layer in range(n_layers):
        one_hot[layer, layer * k : (layer + 1) * k] = 1.0
    size_row = np.append(s.ravel(), np.zeros(n_aux))[None]
    constraints = [
        LinearConstraint(one_hot, 1.0, 1.0),
        LinearConstraint(size_row, -np.inf, limit),
    ]
    average = np.append(w @ c.reshape(g, nx) / w.sum(), np.zeros(n_aux))
    primary = np.zeros(nx + n_aux)
    if objective == "worst":  # c_g x - t <= 0
        primary[-1] = 1.0
        constraints.append(LinearConstraint(rows - primary, -np.inf, 0.0))
    elif objective == "phi":  # c_g x - u <= 0 and c_g x - v >= 0; minimise u - v
        primary[-2], primary[-1] = 1.0, -1.0
        upper, lower = np.zeros(nx + 2), np.zeros(nx + 2)
        upper[-2], lower[-1] = 1.0, 1.0
        constraints.append(LinearConstraint(rows - upper, -np.inf, 0.0))
        constraints.append(LinearConstraint(rows - lower, 0.0, np.inf))
    else:
        primary = average
    integrality = np.append(np.ones(nx), np.zeros(n_aux))
    bounds = Bounds(
        np.append(np.zeros(nx), np.full(n_aux, -np.inf)),
        np.append(np.ones(nx), np.full(n_aux, np.inf)),
    )
    x = _solve(primary, constraints, integrality, bounds, time_limit)
    if objective != "mean":  # among (near-)optimal allocations, the lowest average cost
        best = float(primary @ x)
        tol = _TIE_RTOL * max(1.0, abs(best))
        constraints.append(LinearConstraint(primary[None], -np.inf, best + tol))
        # HiGHS may call the tie-break infeasible when the optimum sits on its feasibility
        # tolerance: the optimum found is then kept as it is
        with contextlib.suppress(ConfigError):
            x = _solve(average, constraints, integrality, bounds, time_limit)
    choice = x[:nx].reshape(n_layers, k).argmax(axis=1)
    return [int(options[i]) for i in choice]


def layer_precision(
    layers: Sequence[str], bits: Sequence[int], *, name: str, per_channel: bool = False
) -> Precision:
    """A per-layer precision (``bits[i]`` for ``layers[i]``) that saves as a ``@spec.json``."""
    base = parse_precision(f"int{max(bits)}{'-pc' if per_channel else ''}")
    return replace(base, name=name, layers=tuple(zip(layers, (int(b) for b in bits), strict=True)))


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
    return layer_precision(
        layers, chosen, name=name or f"mixed-{budget_bits:g}b", per_channel=per_channel
    )
