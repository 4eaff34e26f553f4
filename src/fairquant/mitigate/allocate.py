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

``"phi"`` is solved to a resolution. Its program used to run out of time (no allocation proven,
or none found, in 100 s on a 21-layer ResNet-18 with 5 groups): whenever fractional allocations
can level the groups, the linear relaxation's bound is 0, so branch and bound has to prove an
integer optimum that is a multi-dimensional number-partitioning value (~1e-4 on such a
problem) and never closes the gap; its exact optimum also levels every group at a high cost
(sums near 0.3 where the worst-group allocation reaches 0.1), since the tie-break then applies
only to allocations equal to 1e-6. Now ``u`` and ``v`` are bounded by what the group sums can
reach, the phi program stops once its best allocation is within ``PHI_RESOLUTION`` (``1e-3``)
times the largest span of a group's total (``sum_l max_k - sum_l min_k``) of its lower bound
(HiGHS' ``mip_abs_gap``), and the tie-break takes the lowest weighted average among the
allocations within that resolution of it (to ``PHI_RESOLUTION`` relative). On the 21-layer,
5-group shape this takes 0.4-3 s (``bench/allocate_solver.py``); differences of phi below the
resolution are far below the error of the predicted sensitivities.

:func:`smallest_bits` turns the program round (issue 18): minimise the size ``s x`` subject to
``c[g] x <= limit_g`` for every group, optionally ``v <= c[g] x <= u``, ``u - v <= phi_limit`` and
``sum_g w_g c[g] x <= average_limit``, with the same tie-break by the weighted average among the
smallest allocations. A limit no allocation meets is reported with the smallest value reachable
for it: alone from the separable minimum ``sum_l min_k c[g, l, k]``, jointly (negative costs, or
with the phi and average limits) from the elastic program that minimises the largest violation.
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
from fairquant.options import AllocationObjective as AllocationObjective
from fairquant.quant.calibrate import calibration_indices
from fairquant.quant.mixed import layer_precision, layer_size_costs
from fairquant.quant.precision import Precision
from fairquant.quant.size import packed_size_bytes

#: What an allocation minimises (module docstring).
OBJECTIVES: tuple[str, ...] = get_args(AllocationObjective)
_TIE_RTOL = 1e-6
#: The resolution of the "phi" objective, relative to the largest span of a group's total over
#: allocations (module docstring).
PHI_RESOLUTION = 1e-3


class ToleranceUnreachable(ConfigError):
    """A limit no allocation meets: ``group`` names the group (or ``"phi"``, ``"average"`` for
    those constraints), ``limit`` its limit and ``reachable`` the smallest value reachable."""

    def __init__(self, message: str, *, group: str, limit: float, reachable: float) -> None:
        super().__init__(message)
        self.group, self.limit, self.reachable = group, float(limit), float(reachable)


class CutsExhausted(ConfigError):
    """The limits are met by some allocation, but ``exclude_below`` and ``max_size`` leave none."""


class _Infeasible(ConfigError):
    """HiGHS proved the program infeasible."""


def _solve(
    objective: np.ndarray,
    constraints: list[LinearConstraint],
    integrality: np.ndarray,
    bounds: Bounds,
    time_limit: float,
    abs_gap: float = 0.0,
    rel_gap: float = 0.0,
) -> tuple[np.ndarray, float]:
    """The solution and the solver's lower bound on the objective."""
    options = {"mip_rel_gap": rel_gap, "time_limit": time_limit}
    with warnings.catch_warnings():
        if abs_gap > 0:  # scipy passes HiGHS' option through, warning that it does not know it
            options["mip_abs_gap"] = abs_gap
            warnings.simplefilter("ignore", RuntimeWarning)
        result = milp(
            objective,
            constraints=constraints,
            integrality=integrality,
            bounds=bounds,
            options=options,
        )
    if result.status == 1 and result.x is not None:  # time limit, with a feasible allocation
        warnings.warn(
            f"bit allocation stopped at the {time_limit:g} s time limit before proving its best "
            f"allocation optimal (MILP gap {result.mip_gap:.3g}); using the best one found",
            stacklevel=3,
        )
        return result.x, float(result.mip_dual_bound)
    if result.status == 2:
        raise _Infeasible(f"bit allocation failed: {result.message}")
    if not result.success:
        raise ConfigError(f"bit allocation failed: {result.message}")
    return result.x, float(result.mip_dual_bound)


@dataclass
class _Program:
    """The shared mixed-integer program over ``x[l, k]`` (one option per layer) and ``n_aux``
    continuous auxiliaries appended after it (module docstring)."""

    costs: np.ndarray  # (G, L, K)
    weights: np.ndarray  # (G,), sum 1
    n_aux: int
    aux_bounds: list[tuple[float, float]]
    constraints: list[LinearConstraint]

    @classmethod
    def new(cls, costs: np.ndarray, weights: np.ndarray, n_aux: int = 0) -> _Program:
        _, n_layers, k = costs.shape
        nx = n_layers * k
        one_hot = np.zeros((n_layers, nx + n_aux))
        for layer in range(n_layers):
            one_hot[layer, layer * k : (layer + 1) * k] = 1.0
        program = cls(costs, weights / weights.sum(), n_aux, [(-np.inf, np.inf)] * n_aux, [])
        program.constraints.append(LinearConstraint(one_hot, 1.0, 1.0))
        return program

    @property
    def nx(self) -> int:
        return self.costs.shape[1] * self.costs.shape[2]

    def row(self, values: np.ndarray, aux: dict[int, float] | None = None) -> np.ndarray:
        """A row over the variables: ``values`` (``(L, K)``) on ``x``, ``aux`` on auxiliaries."""
        out = np.append(np.ravel(values), np.zeros(self.n_aux))
        for i, a in (aux or {}).items():
            out[self.nx + i] = a
        return out

    @property
    def group_rows(self) -> np.ndarray:
        return np.stack([self.row(c) for c in self.costs])

    @property
    def average(self) -> np.ndarray:
        return self.row(np.tensordot(self.weights, self.costs, axes=1))

    def add(self, rows: np.ndarray, low: float | np.ndarray, high: float | np.ndarray) -> None:
        self.constraints.append(LinearConstraint(np.atleast_2d(rows), low, high))

    def spread(self, u: int, v: int) -> None:
        """``v <= c_g x <= u`` for every group, with ``u, v`` bounded by what the sums can reach
        (``u`` within the largest group minimum and maximum, ``v`` within the smallest)."""
        rows = self.group_rows
        lows, highs = self.costs.min(axis=2).sum(axis=1), self.costs.max(axis=2).sum(axis=1)
        self.add(rows - self.row(0.0 * self.costs[0], {u: 1.0}), -np.inf, 0.0)
        self.add(rows - self.row(0.0 * self.costs[0], {v: 1.0}), 0.0, np.inf)
        self.aux_bounds[u] = (float(lows.max()), float(highs.max()))
        self.aux_bounds[v] = (float(lows.min()), float(highs.min()))

    def solve(
        self,
        primary: np.ndarray,
        time_limit: float,
        *,
        tie: bool = True,
        tie_tol: float | None = None,
        resolution: float = 0.0,
    ) -> np.ndarray:
        """Minimise ``primary``; then (``tie``) the weighted average among the allocations within
        ``tie_tol`` (default ``1e-6`` relative) of the optimum. With a ``resolution`` the first
        program stops once its best allocation is within ``resolution`` of its lower bound, the
        tie-break takes every allocation within ``resolution`` of that allocation and stops
        within :data:`PHI_RESOLUTION` (relative) of its own optimum."""
        integrality = np.append(np.ones(self.nx), np.zeros(self.n_aux))
        low, high = zip(*self.aux_bounds, strict=True) if self.n_aux else ((), ())
        bounds = Bounds(np.append(np.zeros(self.nx), low), np.append(np.ones(self.nx), high))
        x, _ = _solve(primary, self.constraints, integrality, bounds, time_limit, resolution)
        if not tie:
            return x
        best = float(primary @ x)
        tol = _TIE_RTOL * max(1.0, abs(best)) if tie_tol is None else tie_tol
        tied = LinearConstraint(primary[None], -np.inf, best + max(tol, resolution))
        # HiGHS may call the tie-break infeasible when the optimum sits on its feasibility
        # tolerance: the optimum found is then kept as it is
        with contextlib.suppress(ConfigError):
            x, _ = _solve(
                self.average,
                [*self.constraints, tied],
                integrality,
                bounds,
                time_limit,
                0.0,
                PHI_RESOLUTION if resolution > 0 else 0.0,
            )
        return x

    def choice(self, x: np.ndarray) -> np.ndarray:
        return x[: self.nx].reshape(self.costs.shape[1:]).argmax(axis=1)


def _weights(weights: Sequence[float] | None, g: int) -> np.ndarray:
    w = np.full(g, 1.0 / g) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (g,) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights must be {g} non-negative numbers, not all 0; got {weights}")
    return w


def _phi_resolution(costs: np.ndarray) -> float:
    """``PHI_RESOLUTION`` times the largest range a group's total can span over allocations."""
    span = costs.max(axis=2).sum(axis=1) - costs.min(axis=2).sum(axis=1)
    return PHI_RESOLUTION * float(span.max())


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
    :data:`OBJECTIVES`: ``"worst-group"`` (minimax over rows), ``"phi"`` (max minus min, to
    within :data:`PHI_RESOLUTION` of the largest span of a row's total; module docstring) or
    ``"loss"`` (``weights``-weighted average of the rows, uniform by default; also the tie-break of
    the other two). Each program stops after ``time_limit`` seconds with the best allocation found
    and a warning. Raises :class:`ConfigError` if even the smallest choice exceeds the budget.

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
    w = _weights(weights, g)
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
    program = _Program.new(c, w, {"worst-group": 1, "phi": 2, "loss": 0}[objective])
    program.add(program.row(s), -np.inf, limit)
    if objective == "worst-group":  # c_g x - t <= 0
        primary = program.row(0.0 * s, {0: 1.0})
        program.add(program.group_rows - primary, -np.inf, 0.0)
        x = program.solve(primary, time_limit)
    elif objective == "phi":  # v <= c_g x <= u; minimise u - v
        program.spread(0, 1)
        primary = program.row(0.0 * s, {0: 1.0, 1: -1.0})
        x = program.solve(primary, time_limit, resolution=_phi_resolution(c))
    else:
        x = program.solve(program.average, time_limit, tie=False)
    return [int(options[i]) for i in program.choice(x)]


def smallest_bits(
    costs: np.ndarray,
    size_costs: np.ndarray,
    limits: Sequence[float],
    options: Sequence[int],
    *,
    group_names: Sequence[str],
    phi_limit: float | None = None,
    average_limit: float | None = None,
    weights: Sequence[float] | None = None,
    time_limit: float = 20.0,
    exclude_below: Sequence[Sequence[int]] = (),
    max_size: float | None = None,
) -> list[int]:
    """Bits per layer of the smallest model (``sum_l size_costs[l, k_l]``) whose predicted
    per-group costs ``sum_l costs[g, l, k_l]`` stay within ``limits`` (``math.inf``: none).

    ``costs`` is ``(G, L, K)`` (e.g. predicted accuracy drops or excess losses of option ``k`` at
    layer ``l`` for group ``g``), ``size_costs`` ``(L, K)`` (e.g. bytes from
    :func:`~fairquant.quant.mixed.layer_size_costs`). Optional: ``phi_limit`` bounds the largest
    minus the smallest group sum; ``average_limit`` the ``weights``-weighted mean of the sums (the
    loss-only, AIMET/HAWQ-style constraint); ``exclude_below`` removes every allocation with no
    more bits in any layer than one of the given allocations (dominance cuts); ``max_size`` bounds
    the size. Among the smallest allocations the lowest weighted-average cost is chosen.

    Raises :class:`ToleranceUnreachable` naming the group (or ``"phi"``/``"average"``) whose
    limit no allocation meets, with the smallest value reachable for it: alone (every layer at
    its best option) or, when the limits are only jointly unreachable, in the program that
    minimises the largest violation of any limit. Raises :class:`CutsExhausted` when the cuts or
    ``max_size`` leave nothing.

    >>> smallest_bits(np.array([[[2.0, 0.0], [1.0, 0.0]]]), np.array([[1, 4], [1, 4]]), [1.5],
    ...               [2, 8], group_names=["a"])
    [8, 2]
    """
    c = np.asarray(costs, dtype=float)
    s = np.asarray(size_costs, dtype=float)
    if c.ndim != 3:
        raise ConfigError(f"costs must be (groups, layers, options); got shape {c.shape}")
    g, n_layers, k = c.shape
    lim = np.asarray(limits, dtype=float)
    if s.shape != (n_layers, k) or len(options) != k:
        raise ConfigError(
            f"size_costs {s.shape} and {len(options)} options do not match costs {c.shape}"
        )
    if lim.shape != (g,) or len(group_names) != g or np.isnan(lim).any():
        raise ConfigError(
            f"limits {list(limits)} and group_names {list(group_names)} must give one number "
            f"and one name for each of the {g} groups"
        )
    w = _weights(weights, g)
    alone = c.min(axis=2).sum(axis=1)  # each group's minimum: the additive model is separable
    over = np.where(np.isfinite(lim), alone - lim, -np.inf)
    if over.max() > 0:
        a = int(over.argmax())
        raise ToleranceUnreachable(
            f"group {group_names[a]!r} cannot be kept within {lim[a]:g} (limit): the smallest "
            f"reachable is {alone[a]:.4g} (every layer at its best option)",
            group=str(group_names[a]),
            limit=float(lim[a]),
            reachable=float(alone[a]),
        )
    average_alone = float(np.tensordot(w / w.sum(), c, axes=1).min(axis=1).sum())
    if average_limit is not None and average_alone > average_limit:
        raise ToleranceUnreachable(
            f"the average cannot be kept within {average_limit:g} (average_limit): the smallest "
            f"reachable is {average_alone:.4g} (every layer at its best option)",
            group="average",
            limit=average_limit,
            reachable=average_alone,
        )
    program = _Program.new(c, w, 2 if phi_limit is not None else 0)
    finite = np.isfinite(lim)
    if finite.any():
        program.add(program.group_rows[finite], -np.inf, lim[finite])
    if phi_limit is not None:
        program.spread(0, 1)
        program.add(program.row(0.0 * s, {0: 1.0, 1: -1.0}), -np.inf, float(phi_limit))
    if average_limit is not None:
        program.add(program.average, -np.inf, float(average_limit))
    structural = len(program.constraints)
    opts = np.asarray(options)
    for bits in exclude_below:  # at least one layer above the excluded allocation's bits
        if len(bits) != n_layers:
            raise ConfigError(f"exclude_below allocation {list(bits)} is not {n_layers} layers")
        program.add(program.row(opts[None, :] > np.asarray(bits)[:, None]), 1.0, np.inf)
    if max_size is not None:
        program.add(program.row(s), -np.inf, float(max_size))
    size = program.row(s)
    integral = bool(np.all(s == np.round(s)))
    try:
        x = program.solve(size, time_limit, tie_tol=0.5 if integral else None)
    except _Infeasible:
        if len(program.constraints) > structural:  # cuts or max_size may be the reason
            del program.constraints[structural:]
            with contextlib.suppress(_Infeasible):
                program.solve(size, time_limit, tie=False)
                raise CutsExhausted(
                    "no allocation within the limits is left by exclude_below and max_size"
                ) from None
        raise _elastic(c, w, lim, group_names, phi_limit, average_limit, time_limit) from None
    return [int(options[i]) for i in program.choice(x)]


def _elastic(
    c: np.ndarray,
    w: np.ndarray,
    lim: np.ndarray,
    group_names: Sequence[str],
    phi_limit: float | None,
    average_limit: float | None,
    time_limit: float,
) -> ToleranceUnreachable:
    """The error for limits that are reachable one by one but not together: the program that
    minimises the largest violation ``z`` of any limit names the most violated one."""
    phi = phi_limit is not None
    program = _Program.new(c, w, 1 + 2 * phi)  # z, then u, v
    finite = np.isfinite(lim)
    z = program.row(0.0 * c[0], {0: 1.0})
    program.add(program.group_rows[finite] - z, -np.inf, lim[finite])
    if phi:
        program.spread(1, 2)
        program.add(program.row(0.0 * c[0], {0: -1.0, 1: 1.0, 2: -1.0}), -np.inf, phi_limit)
    if average_limit is not None:
        program.add(program.average - z, -np.inf, float(average_limit))
    x = program.solve(z, time_limit, tie=False)
    choice = program.choice(x)
    sums = c[:, np.arange(c.shape[1]), choice].sum(axis=1)
    named = [  # (name, what, value, limit)
        (str(n), f"group {str(n)!r}", float(v), float(limit))
        for n, v, limit, f in zip(group_names, sums, lim, finite, strict=True)
        if f
    ]
    if phi:
        named.append(("phi", "phi", float(np.ptp(sums)), float(phi_limit)))
    if average_limit is not None:
        named.append(("average", "the average", float(w @ sums / w.sum()), float(average_limit)))
    name, what, value, limit = max(named, key=lambda t: t[2] - t[3])
    return ToleranceUnreachable(
        f"{what} cannot be kept within {limit:g} (limit) together with the other limits: the "
        f"smallest reachable is {value:.4g} (when no limit is exceeded by more than "
        f"{float(x[program.nx]):.4g})",
        group=name,
        limit=limit,
        reachable=value,
    )


def cost_cube(
    table: pd.DataFrame, layers: Sequence[str], groups: Sequence[str], options: Sequence[int]
) -> np.ndarray:
    """``(G, L, K)`` costs of the programs from a per-layer table (columns ``layer, bits, group,
    excess``, e.g. :func:`~fairquant.metrics.sensitivity.group_sensitivity`), in the order of
    ``groups``, ``layers`` and ``options``; every (group, layer, bits) must have one value."""
    cube = table.pivot_table(index=["group", "layer"], columns="bits", values="excess")
    cube = cube.reindex(pd.MultiIndex.from_product([list(groups), list(layers)]))[list(options)]
    if cube.isna().any().any():
        raise ConfigError("the sensitivity table must give every (group, layer, bits) one excess")
    return cube.to_numpy().reshape(len(groups), len(layers), len(options))


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
    costs = cost_cube(table, layers, groups, options)
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
