"""Fairness-aware mixed precision: choose each layer's bits to protect the worst-off group.

Mixed-precision methods in use (HAWQ, AIMET's sensitivity analysis) pick per-layer bits that
minimise the *average* loss increase, which is what leaves the smallest groups behind. Here the
per-layer, per-group excess losses ``G_{l,b}(a)`` (measured, or predicted by the second-order
Taylor terms: :func:`fairquant.metrics.sensitivity.group_sensitivity`) are summed over layers
(an additive model: no cross-layer terms, the usual approximation of these methods) and the bits
are chosen, exactly, under a size budget in average weight bits or in packed bytes, for one of
the :data:`OBJECTIVES`:

* ``"worst-group"``: minimise ``max_a Σ_l G_{l,b_l}(a)``;
* ``"phi"``: minimise ``max_a - min_a`` of the same sums (φ(D) of the prediction);
* ``"loss"``: minimise ``Σ_a p_a Σ_l G_{l,b_l}(a)`` with ``p_a`` the groups' shares of the
  population (the training split): the loss-only, HAWQ-style baseline. With all samples in one
  group it is HAWQ's pooled allocation.

The allocation is a mixed-integer program (``scipy.optimize.milp``, HiGHS): binary ``x[l, k]``
choose option ``k`` for layer ``l`` (``sum_k x[l, k] = 1``) under a size row
``sum_lk s[l, k] x[l, k] <= budget`` (``s = n_l bits_k`` for a budget in weight bits, or the
exact packed bytes of :func:`~fairquant.quant.mixed.layer_size_costs` for a budget in bytes).
With one cost row ``c[g] x = sum_lk c[g, l, k] x[l, k]`` per group ``g`` the objectives are,
linearised with auxiliary continuous variables: ``min t`` s.t. ``c[g] x <= t`` (worst-group);
``min u - v`` s.t. ``v <= c[g] x <= u`` (phi); ``min sum_g w_g c[g] x`` (loss). Ties of
``"worst-group"`` and ``"phi"`` are broken by a second program that minimises the weighted average
among the allocations within ``1e-6`` (relative) of the optimum.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from fairquant.data.base import GroupedDataset
from fairquant.errors import ConfigError
from fairquant.metrics.sensitivity import SensitivitySource, group_sensitivity, predict_excess
from fairquant.quant.calibrate import calibration_indices
from fairquant.quant.mixed import layer_precision, layer_size_costs
from fairquant.quant.precision import Precision
from fairquant.quant.size import packed_size_bytes

#: What an allocation minimises (module docstring).
AllocationObjective = Literal["worst-group", "phi", "loss"]
OBJECTIVES: tuple[str, ...] = get_args(AllocationObjective)
_TIE_RTOL = 1e-6


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
    objective: AllocationObjective = "worst-group",
    weights: Sequence[float] | None = None,
    time_limit: float = 20.0,
) -> list[int]:
    """Bits per layer minimising ``objective`` over the cost rows within a size budget.

    ``costs`` is ``(G, L, K)`` (or ``(L, K)`` for one row); ``sizes`` the weights per layer. The
    budget is either ``budget_bits`` weight bits over all layers, or ``budget`` in the units of
    ``size_costs`` (``(L, K)``, e.g. bytes from :func:`~fairquant.quant.mixed.layer_size_costs`,
    with the fixed bytes already subtracted from ``budget``). ``objective`` is one of
    :data:`OBJECTIVES`: ``"worst-group"`` (minimax over rows), ``"phi"`` (max minus min) or
    ``"loss"`` (``weights``-weighted average of the rows, uniform by default; also the tie-break of
    the other two). Each program stops after ``time_limit`` seconds with the best allocation found
    and a warning (``"phi"`` can be slow to prove optimal: many allocations come close to equal
    group costs). Raises :class:`ConfigError` if even the smallest choice exceeds the budget.

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
        raise ConfigError(f"objective must be one of {list(OBJECTIVES)}; got {objective!r}")
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
    n_aux = {"worst-group": 1, "phi": 2, "loss": 0}[objective]
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
    if objective == "worst-group":  # c_g x - t <= 0
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
    if objective != "loss":  # among (near-)optimal allocations, the lowest average cost
        best = float(primary @ x)
        tol = _TIE_RTOL * max(1.0, abs(best))
        constraints.append(LinearConstraint(primary[None], -np.inf, best + tol))
        # HiGHS may call the tie-break infeasible when the optimum sits on its feasibility
        # tolerance: the optimum found is then kept as it is
        with contextlib.suppress(ConfigError):
            x = _solve(average, constraints, integrality, bounds, time_limit)
    choice = x[:nx].reshape(n_layers, k).argmax(axis=1)
    return [int(options[i]) for i in choice]


@dataclass(frozen=True)
class Allocation:
    """A per-layer precision chosen by :func:`allocate_precision` and what it is predicted to do."""

    precision: Precision
    layers: pd.DataFrame
    """One row per quantized layer: ``layer, numel, bits``."""
    predicted: pd.Series
    """The additive prediction ``Σ_l G_{l,b_l}(a)`` by group."""
    average_bits: float
    size_bytes: int


def allocate_precision(
    model: nn.Module,
    table: pd.DataFrame,
    *,
    objective: AllocationObjective = "worst-group",
    budget_bits: float | None = None,
    budget_bytes: int | None = None,
    weights: Mapping[str, float] | None = None,
    per_channel: bool = False,
    name: str = "allocated",
) -> Allocation:
    """Per-layer bits minimising ``objective`` over the per-group excess losses of ``table``
    (columns ``layer, bits, numel, group, excess``, e.g.
    :func:`~fairquant.metrics.sensitivity.group_sensitivity`) within ``budget_bits`` average
    weight bits or ``budget_bytes`` packed bytes (exactly one).

    ``weights`` (group name -> population share) weight the ``"loss"`` objective and the tie-break
    of the others; uniform when omitted.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {list(OBJECTIVES)}; got {objective!r}")
    if (budget_bits is None) == (budget_bytes is None):
        raise ConfigError("give exactly one budget: average bits or bytes")
    layers = list(dict.fromkeys(table.layer))
    groups = list(dict.fromkeys(table.group))
    options = sorted({int(b) for b in table.bits})
    cube = table.pivot_table(index=["group", "layer"], columns="bits", values="excess")
    cube = cube.reindex(pd.MultiIndex.from_product([groups, layers]))[options]
    if cube.isna().any().any():
        raise ConfigError("the sensitivity table must give every (group, layer, bits) one excess")
    costs = cube.to_numpy().reshape(len(groups), len(layers), len(options))
    sizes = table.drop_duplicates("layer").set_index("layer").loc[layers, "numel"].to_numpy()
    w = None
    if weights is not None:
        w = [float(weights.get(a, np.nan)) for a in groups]
        if any(np.isnan(w)):
            raise ConfigError(f"weights {dict(weights)} do not cover the groups {groups}")
    budget: dict = {}
    if budget_bits is not None:
        budget["budget_bits"] = float(budget_bits) * float(sizes.sum())
    else:
        size_costs, fixed = layer_size_costs(model, options, per_channel=per_channel)
        if len(size_costs) != len(layers):
            raise ConfigError(f"the table's layers {layers} are not the model's quantized layers")
        budget.update(size_costs=size_costs, budget=float(budget_bytes) - fixed)
    chosen = allocate_bits(costs, sizes.tolist(), options, objective=objective, weights=w, **budget)
    precision = layer_precision(layers, chosen, name=name, per_channel=per_channel)
    bits = dict(zip(layers, chosen, strict=True))
    return Allocation(
        precision=precision,
        layers=pd.DataFrame({"layer": layers, "numel": sizes, "bits": chosen}),
        predicted=predict_excess(table, bits, column="excess").reindex(groups),
        average_bits=float(np.dot(sizes, chosen) / sizes.sum()),
        size_bytes=packed_size_bytes(model, precision),
    )


_BYTE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "kib": 1024, "mib": 1024**2}


def parse_budget(text: str) -> tuple[Literal["bits", "bytes"], float]:
    """Parse a size budget: ``4bits`` / ``4.5bits`` (average weight bits) or ``120000B``,
    ``120KB``, ``1.5MB``, ``100KiB`` (packed bytes; KB = 1000 bytes, KiB = 1024).

    >>> parse_budget("4.5bits"), parse_budget("120KB")
    (('bits', 4.5), ('bytes', 120000.0))
    """
    t = text.strip().lower().replace(" ", "")
    unit = next((u for u in ("bits", "kib", "mib", "kb", "mb", "b") if t.endswith(u)), None)
    try:
        value = float(t[: -len(unit)]) if unit else math.nan
    except ValueError:
        value = math.nan
    if unit is None or not value > 0:
        raise ConfigError(
            f"budget {text!r}: expected a positive number with a unit, e.g. 4bits, 4.5bits "
            "(average weight bits), 120000B, 120KB, 1.5MB or 100KiB (packed size)"
        )
    if unit == "bits":
        return "bits", value
    return "bytes", float(math.floor(value * _BYTE_UNITS[unit]))


def allocate(
    model: nn.Module,
    data: GroupedDataset,
    *,
    budget: str = "4bits",
    bits: Sequence[int] = (2, 3, 4, 8),
    objective: AllocationObjective = "worst-group",
    sensitivity: SensitivitySource = "measured",
    samples_per_group: int = 128,
    per_channel: bool = False,
    seed: int = 0,
    name: str = "allocated",
) -> Allocation:
    """Per-layer bits from ``bits`` for ``model`` within ``budget`` (:func:`parse_budget`:
    ``4bits`` average weight bits, or a packed size such as ``120KB``) that minimise
    ``objective`` over the groups of ``data``.

    The sensitivities (:func:`group_sensitivity`) are taken on ``samples_per_group`` training
    images of each group (:func:`~fairquant.quant.calibrate.calibration_indices`, balanced and
    seeded by ``seed``), and the groups are weighted by their shares of the training split
    (:func:`allocate_precision`).
    """
    kind, amount = parse_budget(budget)
    names = data.group_names
    index = calibration_indices(
        data.train, samples_per_group * len(names), balanced=True, seed=seed
    )
    table = group_sensitivity(
        model,
        data.train.subset(index),
        names,
        sorted({int(b) for b in bits}),
        sensitivity=sensitivity,
        per_channel=per_channel,
    )
    counts = data.train.g.bincount(minlength=len(names)).double()
    return allocate_precision(
        model,
        table,
        objective=objective,
        budget_bits=amount if kind == "bits" else None,
        budget_bytes=int(amount) if kind == "bytes" else None,
        weights=dict(zip(names, (counts / counts.sum()).tolist(), strict=True)),
        per_channel=per_channel,
        name=name,
    )
