"""Fairness-aware mixed precision: choose each layer's bits to protect the worst-off group.

Mixed-precision methods in use (HAWQ, AIMET's sensitivity analysis) pick per-layer bits that
minimise the *average* loss increase, which is what leaves the smallest groups behind. Here the
per-layer, per-group excess losses ``G_{l,b}(a)`` (measured, or predicted by the second-order
Taylor terms of :mod:`fairquant.metrics.predict`) are summed over layers (an additive model: no
cross-layer terms) and the bits are chosen, exactly, by the mixed-integer program of
:func:`fairquant.quant.mixed.allocate_bits` under a size budget in average weight bits or in
packed bytes:

* ``"worst-group"``: minimise ``max_a Σ_l G_{l,b_l}(a)``;
* ``"phi"``: minimise ``max_a - min_a`` of the same sums (φ(D) of the prediction);
* ``"loss"``: minimise ``Σ_a p_a Σ_l G_{l,b_l}(a)`` with ``p_a`` the groups' shares of the
  population (the training split): the loss-only, HAWQ-style baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from torch import nn

from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.metrics.curvature import GroupCurvature
from fairquant.metrics.predict import measured_layer_excess, predict_excess, taylor_excess
from fairquant.quant.mixed import allocate_bits, layer_precision, layer_size_costs
from fairquant.quant.precision import Precision
from fairquant.quant.size import packed_size_bytes

AllocationObjective = Literal["worst-group", "phi", "loss"]
SensitivitySource = Literal["measured", "predicted"]
OBJECTIVES = {"worst-group": "worst", "phi": "phi", "loss": "mean"}
SENSITIVITIES = ("measured", "predicted")


def group_sensitivity(
    model: nn.Module,
    data: Split,
    group_names: Sequence[str],
    options: Sequence[int],
    *,
    sensitivity: SensitivitySource = "measured",
    per_channel: bool = False,
    block: int = 1,
) -> pd.DataFrame:
    """Per-layer, per-group excess loss ``G_{l,b}(a)`` on ``data`` (columns ``layer, bits,
    numel, group, excess``): ``"measured"`` quantizes one layer at a time and evaluates;
    ``"predicted"`` is the Taylor prediction ``g_a·δ + ½ δᵀH_aδ`` (Hessian-vector products)."""
    if sensitivity == "measured":
        return measured_layer_excess(model, data, group_names, options, per_channel=per_channel)
    if sensitivity == "predicted":
        op = GroupCurvature(model, data.x, data.y, data.g, len(group_names))
        table = taylor_excess(op, model, group_names, options, per_channel=per_channel, block=block)
        return table.rename(columns={"predicted": "excess"})
    raise ConfigError(f"sensitivity must be one of {SENSITIVITIES}; got {sensitivity!r}")


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
    (columns ``layer, bits, numel, group, excess``, e.g. :func:`group_sensitivity`) within
    ``budget_bits`` average weight bits or ``budget_bytes`` packed bytes (exactly one).

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
    chosen = allocate_bits(
        costs, sizes.tolist(), options, objective=OBJECTIVES[objective], weights=w, **budget
    )
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
