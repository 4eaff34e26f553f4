"""The smallest model that keeps every group within tolerance: a measured mixed-precision search.

Mixed-precision tools take one scalar limit (AIMET's allowed accuracy drop, NNCF's max drop):
they may meet it by sacrificing the smallest group. :func:`search_smallest` answers "no group may
lose more than ``t_a`` points: what is the smallest model that keeps that?" on a validation split
(never the test split, which then judges the result: :func:`fairquant.metrics.verdict.verdict`):

    ``min_b size(b)``  s.t.  ``drop_a(b) <= t_a`` for every group ``a`` (and ``φ(b) <= φ_max``),

with ``drop_a(b)`` group ``a``'s measured accuracy drop (fp32 accuracy minus the model's with
layer ``l`` at ``b_l`` bits, same validation samples, points). The predictor proposes, measurement
verifies, cuts tighten (a cutting-plane loop):

1. every uniform width is measured (the :func:`smallest_uniform` baseline, shared); the smallest
   one that passes is the first incumbent, so the search is never larger than it;
2. the per-layer, per-group excess losses ``G_{l,b}(a)`` (predicted from one GGN-diagonal pass,
   :func:`~fairquant.metrics.sensitivity.group_sensitivity`, or measured) give the additive
   prediction ``P_a(b) = Σ_l G_{l,b_l}(a)``; each group's limit ``λ_a`` on ``P_a`` starts where
   its measured uniform drops cross ``t_a`` (:func:`boundary`);
3. :func:`~fairquant.mitigate.allocate.smallest_bits` proposes the smallest allocation with
   ``P_a(b) <= λ_a``, smaller than the incumbent and not dominated by a failed one; it is
   measured; a failure adds a dominance cut (every allocation with no more bits in any layer is
   excluded: it fails too when drops are monotone in bits), and each ``λ_a`` is re-read off all
   allocations measured so far (:func:`boundary`: regula falsi safeguarded by bisection);
4. when nothing is left to propose, the limits are relaxed, until they no longer constrain:
   then every smaller allocation is dominated by a measured failure and the result is
   ``proven`` (the smallest feasible allocation if drops are monotone in every layer's bits).

Each candidate is quantized and evaluated once (:class:`Evaluator`, shared by every method of a
run) and every method reports the seconds and forward evaluations it would cost alone. The
baselines at the same tolerance: :func:`smallest_uniform`, :func:`loss_only` (AIMET/HAWQ: the
population-weighted average drop within the tolerance) and :func:`hawq_order` (HAWQ-V2's
trace x quantization-error order, bits lowered while every group stays within tolerance). The
predictor and HAWQ's trace share one per-group GGN-diagonal pass (:meth:`Evaluator.diagonal`);
HAWQ pools its groups by their shares of the validation split.

On a deployed base (``SearchConfig(base="ort:int8")``) the same loop runs on the toolchain's own
kernels: a layer is quantized at the base or kept in float, each candidate is built by
:func:`fairquant.quantize` (``layers=``) and sized by the file it writes; the predictor is the
base's simulated twin, and a layer in float costs 0. :func:`smallest_within` is ``allocate
--max-drop`` as one call: search, write the chosen model (a ``@spec.json``, or the toolchain's
file), audit and judge it on the test split.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch
from torch import nn

from fairquant._audit import AuditResult, audit
from fairquant.data.base import GroupedDataset, Split
from fairquant.data.stream import Inputs
from fairquant.errors import ConfigError, DataError
from fairquant.metrics.curvature import GroupDiagonal, ggn_diagonal
from fairquant.metrics.functional import group_counts, group_mean, per_sample_loss
from fairquant.metrics.paired import drop_interval
from fairquant.metrics.policy import CONFIDENCE
from fairquant.metrics.sensitivity import (
    SENSITIVITIES,
    SensitivitySource,
    group_sensitivity,
    layer_trace_sensitivity,
    measured_layer_excess,
)
from fairquant.metrics.verdict import Tolerance, Verdict, verdict
from fairquant.mitigate.allocate import (
    CutsExhausted,
    ToleranceUnreachable,
    cost_cube,
    smallest_bits,
)
from fairquant.models.predict import predict_logits
from fairquant.options import CALIB_SIZE, N_BOOTSTRAP, SEARCH_CRITERION, SEARCH_ROUNDS, Criterion
from fairquant.quant.build import quantize, with_layers
from fairquant.quant.calibrate import calibration_indices, calibration_inputs
from fairquant.quant.configs import DeployedPrecision
from fairquant.quant.functional import check_bits
from fairquant.quant.mixed import layer_precision, layer_size_costs
from fairquant.quant.model import quantized_layers
from fairquant.quant.precision import FLOAT_BITS, AnyPrecision, Precision, parse_precision
from fairquant.quant.size import packed_size_bytes
from fairquant.train import Checkpoint, held_out_splits

#: The methods of :func:`compare_searches`, in the order of its table.
SearchMethod = Literal["fairquant", "measured", "uniform", "loss-only", "hawq"]
#: What "within the tolerance" means on the validation split (:class:`SearchConfig`).
METHODS: tuple[str, ...] = ("fairquant", "measured", "uniform", "loss-only", "hawq")
#: The methods that run on a deployed base (the others measure or trace fairquant's widths).
DEPLOYED_METHODS: tuple[str, ...] = ("fairquant",)
#: The widths a layer may take in a search of fairquant's simulated precisions.
SEARCH_BITS: tuple[int, ...] = (2, 3, 4, 8, 16)


@dataclass(frozen=True)
class SearchConfig:
    """Options of the measured search (one config for the workflow, as torchao's).

    ``bits``: the widths a layer may take (default :data:`SEARCH_BITS`); ``sensitivity``: the
    predictor of ``G_{l,b}(a)`` (``"diagonal"``: one GGN-diagonal pass; ``"predicted"``:
    Hessian-vector products; ``"measured"``: every layer at every width measured on the
    validation split, AIMET's exhaustive table); ``samples_per_group``: balanced, seeded
    validation samples per group for a predictor (and the HAWQ trace, from the same diagonal
    pass reweighted to the validation split's group shares); ``max_rounds``: proposals measured
    after the uniform widths; ``time_limit``: seconds per integer program; ``random_state``: the
    seed of the samples.

    ``criterion``: when a group counts as within its tolerance on the validation split.
    ``"estimate"``: its measured drop is (AIMET's and NNCF's rule). ``"upper-bound"``: the upper
    end of the paired 95 % interval of its drop is (Tango's score interval,
    :func:`~fairquant.metrics.paired.drop_interval`, the verdict's pass rule for one group, without
    Holm): a search that keeps the smallest of many candidates whose estimates sit just under the
    tolerance picks the ones whose validation noise flattered them (the winner's curse), and the
    test split then sees them lose more; the bound leaves room for that noise.

    ``base``: a deployed precision (``"ort:int8"``, a :class:`DeployedPrecision`) to search on
    its toolchain's own kernels instead: each layer is quantized at the base or kept in float
    (``bits`` becomes ``(base bits, FLOAT_BITS)``; :func:`fairquant.quantize`'s ``layers``), each
    candidate is built by the toolchain and measured, and its size is the bytes of the file the
    toolchain writes. The predictor is the base's simulated twin (its bits and per-channel
    scales; ``per_channel`` follows it); the ``measured`` table simulates fairquant's widths and
    is refused.
    """

    bits: tuple[int, ...] | None = None
    sensitivity: SensitivitySource = "diagonal"
    samples_per_group: int = 128
    max_rounds: int = SEARCH_ROUNDS
    per_channel: bool = False
    time_limit: float = 20.0
    random_state: int = 0
    criterion: Criterion = SEARCH_CRITERION
    base: str | DeployedPrecision | None = None

    def __post_init__(self) -> None:
        if self.base is not None:
            self._set_base()
        bits = tuple(sorted({int(b) for b in self.bits or SEARCH_BITS}))
        if not bits:
            raise ConfigError("SearchConfig.bits: give at least one bit width")
        for b in bits:
            if self.base is None or b != FLOAT_BITS:
                check_bits(b)
        object.__setattr__(self, "bits", bits)
        if self.sensitivity not in SENSITIVITIES:
            raise ConfigError(
                f"SearchConfig.sensitivity must be one of {list(SENSITIVITIES)}; "
                f"got {self.sensitivity!r}"
            )
        if self.samples_per_group < 1:
            raise ConfigError(
                f"SearchConfig.samples_per_group must be >= 1; got {self.samples_per_group}"
            )
        if self.max_rounds < 0:
            raise ConfigError(f"SearchConfig.max_rounds must be >= 0; got {self.max_rounds}")
        if self.criterion not in get_args(Criterion):
            raise ConfigError(
                f"SearchConfig.criterion must be one of {list(get_args(Criterion))}; "
                f"got {self.criterion!r}"
            )
        if not self.time_limit > 0:
            raise ConfigError(f"SearchConfig.time_limit must be > 0 seconds; got {self.time_limit}")

    def _set_base(self) -> None:
        """Resolve ``base`` and what it fixes: the widths and the predictor's scales."""
        base = parse_precision(self.base) if isinstance(self.base, str) else self.base
        if not isinstance(base, DeployedPrecision):
            raise ConfigError(
                f"SearchConfig.base={getattr(base, 'name', base)!r}: expected a deployed precision "
                "(ort:int8, openvino:int8, torch:int8, torchao:...); fairquant's simulated widths "
                "are chosen with bits"
            )
        if self.bits is not None and tuple(self.bits) != (base.bits, FLOAT_BITS):  # replace() keeps
            raise ConfigError(
                f"SearchConfig.bits={self.bits} with base={base.name!r}: a deployed base fixes the "
                "choice per layer (quantized at the base, or kept in float)"
            )
        if self.sensitivity == "measured":
            raise ConfigError(
                f"SearchConfig.sensitivity='measured' with base={base.name!r}: the measured table "
                "simulates fairquant's widths; use 'diagonal' or 'predicted'"
            )
        twin = twin_of(base)
        if self.per_channel and not twin.per_channel:
            raise ConfigError(
                f"SearchConfig.per_channel=True with base={base.name!r}, whose weights are per "
                "tensor; spell the per-channel precision instead (e.g. ort:int8-pc)"
            )
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "bits", (base.bits, FLOAT_BITS))
        object.__setattr__(self, "per_channel", twin.per_channel)


def twin_of(base: DeployedPrecision) -> Precision:
    """The simulated precision that predicts ``base``'s per-layer harm: its twin (bits and
    per-channel scales), or per-channel weights at its bits where it has none (torchao's int4
    groups)."""
    twin = parse_precision(base.twin or f"int{base.bits}-pc")
    assert isinstance(twin, Precision)
    return twin


def choosable_layers(
    model: nn.Module, base: DeployedPrecision | None
) -> list[tuple[str, nn.Module]]:
    """The weight layers whose precision a search chooses: every one
    (:func:`~fairquant.quant.model.quantized_layers`), or under a torchao base its
    ``nn.Linear`` layers (torchao quantizes no convolution: the others stay in float)."""
    layers = quantized_layers(model)
    if base is not None and base.toolchain == "torchao":
        return [(n, m) for n, m in layers if isinstance(m, nn.Linear)]
    return layers


@dataclass(frozen=True)
class Evaluation:
    """One allocation measured on the validation split."""

    bits: tuple[int, ...]
    size_bytes: int
    accuracy: pd.Series
    """Accuracy by group, points."""
    drop: pd.Series
    """fp32 accuracy minus this allocation's, by group, points (positive: the group loses)."""
    excess: pd.Series
    """Excess loss ``G(a)`` by group (cross-entropy units)."""
    drop_high: pd.Series
    """Upper end of the paired 95 % interval of each group's drop, points."""
    criterion: Criterion = "estimate"

    @property
    def judged(self) -> pd.Series:
        """What the tolerance is compared with: the drop, or its upper bound (``criterion``)."""
        return self.drop if self.criterion == "estimate" else self.drop_high

    @property
    def phi(self) -> float:
        """φ(D): max − min of the excess losses."""
        return float(self.excess.max() - self.excess.min())

    def margins(self, tolerance: Tolerance) -> pd.Series:
        """Each group's judged drop minus its tolerance (> 0: the group is broken)."""
        return self.judged - [tolerance.for_group(a) for a in self.judged.index]

    def feasible(self, tolerance: Tolerance) -> bool:
        """Whether every group is within ``tolerance`` (and φ within ``max_phi`` if set)."""
        phi_ok = tolerance.max_phi is None or self.phi <= tolerance.max_phi
        return bool((self.margins(tolerance) <= 0).all()) and phi_ok


class Evaluator:
    """Measures allocations of ``model`` on ``validation`` once each, and times them.

    The fp32 reference is evaluated once; each per-layer bits tuple (weights quantized by
    :func:`~fairquant.quant.build.quantize` at :func:`~fairquant.quant.mixed.layer_precision`)
    once; the per-layer tables (measured, predicted, HAWQ trace) once. Every method of a run
    shares it; :meth:`usage` gives what a method would have cost alone.

    With a deployed ``base`` (:class:`SearchConfig`), a bits tuple holds the base's bits or
    :data:`~fairquant.quant.precision.FLOAT_BITS` per layer of :func:`choosable_layers`: the
    toolchain builds it from ``calibration`` (model-ready inputs) with those layers in float,
    its own kernels predict, and its size is the bytes of the file it wrote.
    """

    def __init__(
        self,
        model: nn.Module,
        validation: Split,
        group_names: Sequence[str],
        *,
        per_channel: bool = False,
        criterion: Criterion = "estimate",
        batch_size: int = 512,
        base: DeployedPrecision | None = None,
        calibration: Inputs | None = None,
    ) -> None:
        if base is not None and calibration is None:
            raise ConfigError(
                f"a search on {base.name} builds every candidate on its toolchain: pass "
                "calibration inputs (fairquant.quant.calibrate.calibration_inputs)"
            )
        counts = group_counts(validation.g, len(group_names))
        if len(counts) > len(group_names):
            raise DataError(f"the validation split has group codes beyond {list(group_names)}")
        empty = [a for a, n in zip(group_names, counts.tolist(), strict=True) if n == 0]
        if empty:
            raise DataError(
                f"the validation split has no samples of the groups {empty}: their drop cannot be "
                "measured (enlarge the validation split, e.g. TrainConfig.val_size)"
            )
        self.model, self.validation = model, validation
        self.group_names = list(group_names)
        self.per_channel, self.batch_size = per_channel, batch_size
        self.criterion = criterion
        self.base, self.calibration = base, calibration
        chosen = choosable_layers(model, base)
        self.layers = [name for name, _ in chosen]
        if not self.layers:
            torchao = base is not None and base.toolchain == "torchao"
            kind = "nn.Linear" if torchao else "Conv or Linear"
            raise ConfigError(f"{type(model).__name__} has no {kind} layer to quantize")
        self.numel = np.array([m.weight.numel() for _, m in chosen])
        self.evaluations = 0
        self.seconds = 0.0
        self._memo: dict[Hashable, object] = {}
        self._cost: dict[Hashable, tuple[float, int]] = {}
        self._active: list[Usage] = []
        self._reference = self._cached(("fp32",), 1, lambda: self._stats(self._logits(model)))

    def _logits(self, model: nn.Module) -> torch.Tensor:
        return predict_logits(model, self.validation.x, batch_size=self.batch_size)

    def _stats(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each group's accuracy (points) and mean loss on the validation split, and which
        samples ``logits`` get right."""
        v, k = self.validation, len(self.group_names)
        right = logits.argmax(1) == v.y
        accuracy = group_mean(right.double() * 100, v.g, k)
        return accuracy, group_mean(per_sample_loss(logits, v.y), v.g, k), right

    def _cached(self, key: Hashable, count: int, compute: Callable[[], object]):
        for use in self._active:
            use.keys.add(key)
        if key not in self._memo:
            start = time.perf_counter()
            self._memo[key] = compute()
            spent = time.perf_counter() - start
            self._cost[key] = (spent, count)
            self.evaluations += count
            self.seconds += spent
            for use in self._active:
                use.inside += spent
        return self._memo[key]

    def evaluate(self, bits: Sequence[int]) -> Evaluation:
        """``bits[l]`` for layer ``l``, measured (once)."""
        key = tuple(int(b) for b in bits)
        if len(key) != len(self.layers):
            raise ConfigError(f"{len(key)} bit widths for the {len(self.layers)} quantized layers")
        return self._cached(key, 1, lambda: self._evaluate(key))

    def _evaluate(self, bits: tuple[int, ...]) -> Evaluation:
        if self.base is None:
            precision = self.precision(bits)
            logits = self._logits(quantize(self.model, precision).module)
            size = packed_size_bytes(self.model, precision)
        elif min(bits) >= FLOAT_BITS:  # nothing quantized: the float model itself
            logits, size = self._logits(self.model), self._float_size()
        else:
            built = quantize(
                self.model, self.base, calibration=self.calibration, layers=self.floats(bits)
            )
            x = self.validation.x.split(self.batch_size)
            logits, size = torch.cat([built.predict(b) for b in x]), built.size_bytes
        accuracy, loss, right = self._stats(logits)
        base_accuracy, base_loss, base_right = self._reference
        index = pd.Index(self.group_names, name="group")
        k, g = len(self.group_names), self.validation.g
        lost = torch.bincount(g[base_right & ~right], minlength=k).numpy()
        gained = torch.bincount(g[~base_right & right], minlength=k).numpy()
        n = torch.bincount(g, minlength=k).numpy()
        _, high = drop_interval(lost, gained, n, confidence=CONFIDENCE)
        return Evaluation(
            bits=bits,
            size_bytes=size,
            accuracy=pd.Series(accuracy.numpy(), index=index, name="accuracy"),
            drop=pd.Series((base_accuracy - accuracy).numpy(), index=index, name="drop"),
            excess=pd.Series((loss - base_loss).numpy(), index=index, name="excess"),
            drop_high=pd.Series(100.0 * high, index=index, name="drop_high"),
            criterion=self.criterion,
        )

    def cost(self, bits: Sequence[int]) -> float:
        """Seconds the (first) evaluation of ``bits`` took."""
        return self._cost[tuple(int(b) for b in bits)][0]

    def precision(self, bits: Sequence[int], name: str = "searched") -> AnyPrecision:
        """The per-layer precision (a ``@spec.json``) of ``bits``; with a deployed base, the
        base with the layers at :data:`~fairquant.quant.precision.FLOAT_BITS` kept in float."""
        if self.base is None:
            return layer_precision(self.layers, list(bits), name=name, per_channel=self.per_channel)
        base = replace(self.base, name=name)
        return with_layers(self.model, base, self.floats(bits), example=self.calibration)

    def _float_size(self) -> int:
        """A deployed base's every-layer-in-float size, which no toolchain build gives (ONNX
        Runtime refuses to quantize nothing): the file of every layer at the base plus what
        :meth:`size_costs` adds for each layer kept in float."""
        assert self.base is not None
        costs = self.size_costs([self.base.bits, FLOAT_BITS])
        quantized = self.evaluate((self.base.bits,) * len(self.layers)).size_bytes
        return quantized + int(costs[:, 1].sum() - costs[:, 0].sum())

    def floats(self, bits: Sequence[int]) -> dict[str, None]:
        """The layers ``bits`` keeps in float, as :func:`fairquant.quantize`'s ``layers``."""
        return {n: None for n, b in zip(self.layers, bits, strict=True) if b >= FLOAT_BITS}

    def size_costs(self, options: Sequence[int]) -> np.ndarray:
        """``(L, K)`` bytes of each layer at each of ``options``
        (:func:`~fairquant.quant.mixed.layer_size_costs`: exact for fairquant's widths). With a
        deployed base: the base's packed weights, or 4 bytes a float weight (an additive model
        of the bytes on disk that orders the proposals; each candidate's file is measured)."""
        if self.base is None:
            return layer_size_costs(self.model, options, per_channel=self.per_channel)[0]
        packed, _ = layer_size_costs(self.model, [self.base.bits], per_channel=self.per_channel)
        index = [n for n, _ in quantized_layers(self.model)]
        base = packed[[index.index(n) for n in self.layers], 0]
        return np.stack([base if b < FLOAT_BITS else self.numel * 4.0 for b in options], axis=1)

    def measured_table(self, options: Sequence[int]) -> pd.DataFrame:
        """AIMET's exhaustive table on the whole validation split: every layer at every width
        (:func:`~fairquant.metrics.sensitivity.measured_layer_excess`), once."""
        options = tuple(sorted(int(b) for b in options))
        _refuse_base(self.base, "the measured table")
        return self._cached(
            ("measured", options),
            len(self.layers) * len(options) + 1,
            lambda: measured_layer_excess(
                self.model, self.validation, self.group_names, options, per_channel=self.per_channel
            ),
        )

    def diagonal(self, samples: int, seed: int) -> GroupDiagonal:
        """Every group's gradient and GGN diagonal on ``samples`` balanced validation samples per
        group (:func:`~fairquant.metrics.curvature.ggn_diagonal`), once: the one pass that serves
        the diagonal predictor and HAWQ's trace."""
        subset = self._subset(samples, seed)
        return self._cached(
            ("ggn", samples, seed),
            0,
            lambda: ggn_diagonal(self.model, subset.x, subset.y, subset.g, len(self.group_names)),
        )

    def predicted_table(
        self, options: Sequence[int], sensitivity: SensitivitySource, samples: int, seed: int
    ) -> pd.DataFrame:
        """``G_{l,b}(a)`` predicted on ``samples`` balanced validation samples per group (the
        diagonal predictor from :meth:`diagonal`); a layer kept in float
        (:data:`~fairquant.quant.precision.FLOAT_BITS`, a deployed base's option) costs 0."""
        options = tuple(sorted(int(b) for b in options))
        subset = self._subset(samples, seed)
        curvature = self.diagonal(samples, seed) if sensitivity == "diagonal" else None
        widths = [b for b in options if b < FLOAT_BITS]

        def table() -> pd.DataFrame:
            out = group_sensitivity(
                self.model,
                subset,
                self.group_names,
                widths,
                sensitivity=sensitivity,
                per_channel=self.per_channel,
                curvature=curvature,
            )
            if len(widths) == len(options):
                return out
            first = out[out.bits == widths[0]]
            values = [c for c in out.columns if c not in ("layer", "bits", "numel", "group")]
            floats = first.assign(bits=FLOAT_BITS, **{c: 0.0 for c in values})
            return pd.concat([out, floats], ignore_index=True)

        return self._cached((sensitivity, options, samples, seed), 0, table)

    def trace_table(self, options: Sequence[int], samples: int, seed: int) -> pd.DataFrame:
        """HAWQ-V2's pooled trace x quantization error
        (:func:`~fairquant.metrics.sensitivity.layer_trace_sensitivity`) from the per-group
        diagonal of :meth:`diagonal`, its groups weighted by their shares of the validation split
        (the population's trace, without another pass)."""
        options = tuple(sorted(int(b) for b in options))
        _refuse_base(self.base, "HAWQ's trace order")
        curvature = self.diagonal(samples, seed)
        shares = group_counts(self.validation.g, len(self.group_names)).double()
        return self._cached(
            ("trace", options, samples, seed),
            0,
            lambda: layer_trace_sensitivity(
                self.model,
                self.validation,
                options,
                per_channel=self.per_channel,
                curvature=curvature,
                weights=shares,
            ),
        )

    def _subset(self, samples: int, seed: int) -> Split:
        """``samples`` balanced, seeded validation samples per group."""
        size = samples * len(self.group_names)
        index = calibration_indices(self.validation, size, balanced=True, seed=seed)
        return self.validation.subset(index)

    @contextmanager
    def usage(self) -> Iterator[Usage]:
        """Records what the block uses; ``seconds`` is what it would have cost alone (its own
        computing plus the first evaluation of everything it used, cached or not)."""
        use = Usage(self)
        self._active.append(use)
        try:
            yield use
        finally:
            self._active.remove(use)
            use.wall = time.perf_counter() - use.start


@dataclass
class Usage:
    """What one method used of an :class:`Evaluator` (:meth:`Evaluator.usage`)."""

    evaluator: Evaluator
    keys: set = field(default_factory=set)
    inside: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    wall: float = 0.0

    @property
    def evaluations(self) -> int:
        """Forward evaluations of the validation split used (the fp32 reference included)."""
        return 1 + sum(self.evaluator._cost[k][1] for k in self.keys if k != ("fp32",))

    @property
    def seconds(self) -> float:
        cost = self.evaluator._cost
        return self.wall - self.inside + cost[("fp32",)][0] + sum(cost[k][0] for k in self.keys)


@dataclass(frozen=True)
class SearchResult:
    """An allocation chosen by one method, measured on the validation split."""

    method: str
    precision: AnyPrecision
    """The per-layer spec (``precision.save(path)`` writes a ``@spec.json``); on a deployed base,
    the base with the layers kept in float in its config (:func:`fairquant.quantize` builds it)."""
    layers: pd.DataFrame
    """``layer, numel, bits``."""
    size_bytes: int
    """Packed bytes; on a deployed base, the bytes of the toolchain's file."""
    average_bits: float
    """Weight bits per weight (a layer in float counts 32)."""
    drop: pd.Series
    """Measured validation accuracy drop by group, points."""
    excess: pd.Series
    """Measured validation excess loss by group."""
    phi: float
    feasible: bool
    """Every group within the tolerance on the validation split (the loss-only baseline may
    break one: it only bounds the average)."""
    rounds: pd.DataFrame
    """One row per measured proposal: ``round, size_bytes, average_bits, feasible,
    worst_group, worst_margin`` (drop minus tolerance) and the drop of every group."""
    evaluations: int
    """Forward evaluations of the validation split it needed (alone)."""
    seconds: float
    """Seconds it would take alone (evaluations shared with other methods counted in full)."""
    proven: bool = False
    """No smaller allocation is left that a measured failure does not dominate."""

    def summary(self, tolerance: Tolerance) -> dict:
        """One row of :func:`compare`."""
        margins = self.drop - [tolerance.for_group(a) for a in self.drop.index]
        row = {
            "method": self.method,
            "size_bytes": self.size_bytes,
            "average_bits": self.average_bits,
            "feasible": self.feasible,
            "worst_group": margins.idxmax(),
            "worst_drop": float(self.drop[margins.idxmax()]),
            "phi": self.phi,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "proven": self.proven,
        }
        return row | {f"drop[{a}]": float(d) for a, d in self.drop.items()}


def _result(
    method: str,
    evaluator: Evaluator,
    best: Evaluation,
    tolerance: Tolerance,
    rounds: list[dict],
    use: Usage,
    *,
    proven: bool = False,
) -> SearchResult:
    numel = evaluator.numel
    groups = evaluator.group_names
    if evaluator.base is not None and min(best.bits) >= FLOAT_BITS:
        raise _nothing_quantized(evaluator, tolerance, use, proven)
    columns = ["round", "size_bytes", "average_bits", "feasible", "worst_group", "worst_margin"]
    return SearchResult(
        method=method,
        precision=evaluator.precision(best.bits, name=f"smallest-{method}"),
        layers=pd.DataFrame({"layer": evaluator.layers, "numel": numel, "bits": list(best.bits)}),
        size_bytes=best.size_bytes,
        average_bits=float(np.dot(numel, best.bits) / numel.sum()),
        drop=best.drop,
        excess=best.excess,
        phi=best.phi,
        feasible=best.feasible(tolerance),
        rounds=pd.DataFrame(rounds, columns=columns + [f"drop[{a}]" for a in groups]),
        evaluations=use.evaluations,
        seconds=use.seconds,
        proven=proven,
    )


def _round(index: int, ev: Evaluation, evaluator: Evaluator, feasible: bool, margins) -> dict:
    numel = evaluator.numel
    worst = margins.idxmax()
    return {
        "round": index,
        "size_bytes": ev.size_bytes,
        "average_bits": float(np.dot(numel, ev.bits) / numel.sum()),
        "feasible": feasible,
        "worst_group": worst,
        "worst_margin": float(margins[worst]),
    } | {f"drop[{a}]": float(d) for a, d in ev.drop.items()}


def _refuse_base(base: DeployedPrecision | None, what: str) -> None:
    """``what`` simulates fairquant's widths: an error on a deployed ``base``."""
    if base is not None:
        raise ConfigError(
            f"{what} simulates fairquant's widths; a search on {base.name} runs the methods "
            f"{list(DEPLOYED_METHODS)}"
        )


def _evaluator(
    evaluator: Evaluator | None,
    model: nn.Module,
    validation: Split,
    group_names: Sequence[str],
    tolerance: Tolerance,
    config: SearchConfig,
    calibration: Inputs | None = None,
) -> Evaluator:
    tolerance.check_groups(group_names)
    if evaluator is None:
        return Evaluator(
            model,
            validation,
            group_names,
            per_channel=config.per_channel,
            criterion=config.criterion,
            base=config.base,
            calibration=calibration,
        )
    same = (
        evaluator.model is model
        and evaluator.validation is validation
        and evaluator.group_names == list(group_names)
    )
    if not same or (evaluator.per_channel, evaluator.criterion, evaluator.base) != (
        config.per_channel,
        config.criterion,
        config.base,
    ):
        raise ConfigError(
            "the evaluator was built for another model, validation split, groups, per_channel, "
            "criterion or base"
        )
    return evaluator


def _uniform(evaluator: Evaluator, config: SearchConfig) -> list[Evaluation]:
    n = len(evaluator.layers)
    return [evaluator.evaluate((b,) * n) for b in config.bits]


def _nothing_quantized(
    evaluator: Evaluator, tolerance: Tolerance, use: Usage, proven: bool
) -> ToleranceUnreachable:
    """The error when, on a deployed base, only the float model kept every group within
    ``tolerance`` among the candidates a method measured (``use``): it names the group the best
    of those with a quantized layer broke most (and, unless ``proven``, that more rounds may
    find one)."""
    assert evaluator.base is not None
    measured = [evaluator._memo[k] for k in use.keys]
    tried = [e for e in measured if isinstance(e, Evaluation) and min(e.bits) < FLOAT_BITS]
    best = min(tried, key=lambda e: float(e.margins(tolerance).max()))
    group = best.margins(tolerance).idxmax()
    bound = "" if best.criterion == "estimate" else " (upper bound)"
    return ToleranceUnreachable(
        f"no candidate with a layer at {evaluator.base.name} keeps every group within tolerance "
        f"on the validation split: of the {len(tried)} measured, the best leaves group {group!r} "
        f"at a drop of {best.judged[group]:.2f} points{bound}, above its tolerance of "
        f"{tolerance.for_group(group):g} (with every layer in float the model is not quantized)"
        + ("" if proven else "; more rounds (max_rounds) may find one"),
        group=group,
        limit=tolerance.for_group(group),
        reachable=float(best.judged[group]),
    )


def _unreachable(evaluator: Evaluator, uniform: list[Evaluation], tolerance: Tolerance):
    """The error for a tolerance that even the largest width breaks on the validation split."""
    top = uniform[-1]
    margins = top.margins(tolerance)
    width = "in float" if top.bits[0] >= FLOAT_BITS else f"at {top.bits[0]} bits"
    if (margins > 0).any():
        group = margins.idxmax()
        reached = min(ev.judged[group] for ev in uniform)
        bound = "" if top.criterion == "estimate" else " (upper bound)"
        return ToleranceUnreachable(
            f"group {group!r} loses {top.judged[group]:.2f} points{bound} on the validation split "
            f"with every layer {width}, above its tolerance of "
            f"{tolerance.for_group(group):g}: no allocation is expected to keep it (the smallest "
            f"reached, by a uniform width, is {reached:.2f})",
            group=group,
            limit=tolerance.for_group(group),
            reachable=float(reached),
        )
    return ToleranceUnreachable(
        f"φ(D) is {top.phi:.3g} on the validation split with every layer {width}, above "
        f"max_phi {tolerance.max_phi:g} (the smallest reached by a uniform width is "
        f"{min(ev.phi for ev in uniform):.3g})",
        group="phi",
        limit=float(tolerance.max_phi or 0.0),
        reachable=float(min(ev.phi for ev in uniform)),
    )


def smallest_uniform(
    model: nn.Module,
    validation: Split,
    group_names: Sequence[str],
    tolerance: Tolerance,
    *,
    config: SearchConfig = SearchConfig(),
    evaluator: Evaluator | None = None,
    calibration: Inputs | None = None,
) -> SearchResult:
    """The smallest uniform width of ``config.bits`` that keeps every group within ``tolerance``
    on ``validation``: every width is measured. Raises :class:`ToleranceUnreachable` when none
    does (naming the group and the smallest drop reached). A deployed ``config.base`` builds its
    two widths (the base, float) from ``calibration``."""
    ev = _evaluator(evaluator, model, validation, group_names, tolerance, config, calibration)
    with ev.usage() as use:
        uniform = _uniform(ev, config)
        rounds = [
            _round(i, u, ev, u.feasible(tolerance), u.margins(tolerance))
            for i, u in enumerate(uniform)
        ]
        feasible = [u for u in uniform if u.feasible(tolerance)]
        if not feasible:
            raise _unreachable(ev, uniform, tolerance)
        best = min(feasible, key=lambda u: u.size_bytes)
    return _result("uniform", ev, best, tolerance, rounds, use)


def boundary(predicted: np.ndarray, measured: np.ndarray, target: float) -> float:
    """The predicted value at which the measured one reaches ``target``, read off the pairs
    ``(predicted[i], measured[i])`` measured so far: between the smallest failing prediction
    ``hi`` and the largest passing one below it ``lo``, the linear interpolation (regula falsi),
    but at most the midpoint ``(lo + hi) / 2`` (bisection: each failure at least halves the
    bracket, where the measured drops move in steps of one sample); through the origin when no
    pass lies below ``hi`` (``hi`` itself if that is not positive); ``inf`` when none fails.

    >>> boundary(np.array([0.0, 1.0, 3.0]), np.array([0.0, 0.5, 2.5]), 1.0)
    1.5
    """
    fail = measured > target
    if not fail.any():
        return float("inf")
    hi = int(np.flatnonzero(fail)[np.argmin(predicted[fail])])
    below = ~fail & (predicted < predicted[hi])
    if not below.any():
        p = predicted[hi]
        return float(p * target / measured[hi]) if p > 0 and measured[hi] > 0 else float(p)
    lo = int(np.flatnonzero(below)[np.argmax(predicted[below])])
    t = (target - measured[lo]) / (measured[hi] - measured[lo])
    return float(predicted[lo] + min(t, 0.5) * (predicted[hi] - predicted[lo]))


@dataclass
class _Criterion:
    """What the cut loop keeps within bounds: rows ``(R, L, K)`` of per-layer costs predicting
    the measured ``values(evaluation)`` ``(R,)``, each within ``targets``; optionally φ of the
    rows within ``max_phi``."""

    names: list[str]
    rows: np.ndarray
    targets: np.ndarray
    values: Callable[[Evaluation], np.ndarray]
    max_phi: float | None = None

    def margins(self, ev: Evaluation) -> pd.Series:
        return pd.Series(self.values(ev) - self.targets, index=self.names)

    def feasible(self, ev: Evaluation) -> bool:
        phi_ok = self.max_phi is None or ev.phi <= self.max_phi
        return bool((self.margins(ev) <= 0).all()) and phi_ok


def _lift(limit: float, failing: np.ndarray, top: float, step: float) -> float:
    """The next limit when nothing is left under ``limit``: the smallest prediction of a
    measured failure above it (the allocations just past the measured boundary come first),
    else ``limit`` plus its size (at least ``step``); ``inf`` from ``top`` (no constraint) on."""
    if limit >= top:
        return float("inf")
    above = failing[failing > limit]
    lifted = float(above.min()) if len(above) else limit + max(abs(limit), step)
    return float("inf") if lifted >= top else lifted


def _cut_loop(
    evaluator: Evaluator,
    criterion: _Criterion,
    uniform: list[Evaluation],
    config: SearchConfig,
    tolerance: Tolerance,
) -> tuple[Evaluation, list[dict], bool]:
    """The loop of the module docstring; returns the best measured-feasible allocation, the
    rounds and whether it is proven (step 4).

    Each row's limit is :func:`boundary` over every allocation measured so far (φ's too); when
    nothing is left to propose, a floor lifts every limit (:func:`_lift`): no allocation under
    the old limits is left, so they never fall back below it.
    """
    options = list(config.bits)
    layers = np.arange(len(evaluator.layers))
    size_costs = evaluator.size_costs(options)
    rows, targets = criterion.rows, criterion.targets
    top, bottom = rows.max(axis=2).sum(axis=1), rows.min(axis=2).sum(axis=1)
    step = np.maximum((top - bottom) / 16, 1e-12)
    phi_top = float(top.max() - bottom.min())
    phi_step = max(phi_top / 16, 1e-12)

    def predicted(bits: Sequence[int]) -> np.ndarray:
        return rows[:, layers, [options.index(b) for b in bits]].sum(axis=1)

    def layer_bytes(bits: Sequence[int]) -> float:  # the size without the fixed rest
        return float(size_costs[layers, [options.index(b) for b in bits]].sum())

    seen_p = [predicted(u.bits) for u in uniform]
    seen_v = [criterion.values(u) for u in uniform]
    seen_phi = [u.phi for u in uniform]
    floor, phi_floor = np.full(len(rows), -np.inf), -np.inf
    best = min((u for u in uniform if criterion.feasible(u)), key=lambda u: u.size_bytes)
    failed = [u.bits for u in uniform if not criterion.feasible(u)]
    log: list[dict] = []

    def limits() -> tuple[np.ndarray, float]:
        p, v = np.array(seen_p), np.array(seen_v)
        lim = np.array([boundary(p[:, r], v[:, r], targets[r]) for r in range(len(rows))])
        lim = np.maximum(lim, floor)
        if criterion.max_phi is None:
            return lim, np.inf
        spread = p.max(axis=1) - p.min(axis=1)
        phi = boundary(spread, np.array(seen_phi), criterion.max_phi)
        return lim, max(phi, phi_floor)

    def is_open(lim: np.ndarray, phi: float) -> bool:
        return bool((lim >= top).all()) and phi >= phi_top

    def propose(lim: np.ndarray, phi: float) -> list[int] | None:
        try:
            return smallest_bits(
                rows,
                size_costs,
                np.where(lim >= top, np.inf, lim),
                options,
                group_names=criterion.names,
                phi_limit=None if phi >= phi_top else phi,
                time_limit=config.time_limit,
                exclude_below=failed,
                max_size=layer_bytes(best.bits) - 1,
            )
        except (ToleranceUnreachable, CutsExhausted):  # nothing left to propose
            return None

    proven = False
    for index in range(1, config.max_rounds + 1):
        lim, phi = limits()
        bits = propose(lim, phi)
        while bits is None and not is_open(lim, phi):
            p, v = np.array(seen_p), np.array(seen_v)
            floor = np.array(
                [
                    _lift(lim[r], p[v[:, r] > targets[r], r], top[r], step[r])
                    for r in range(len(rows))
                ]
            )
            if criterion.max_phi is not None:
                spread, over = p.max(axis=1) - p.min(axis=1), np.array(seen_phi) > criterion.max_phi
                phi_floor = _lift(phi, spread[over], phi_top, phi_step)
            lim, phi = limits()
            bits = propose(lim, phi)
        if bits is None:
            proven = True
            break
        ev = evaluator.evaluate(bits)
        ok = criterion.feasible(ev)
        log.append(_round(index, ev, evaluator, ok, ev.margins(tolerance)))
        if ok:
            best = ev
        else:
            failed.append(ev.bits)
        seen_p.append(predicted(ev.bits))
        seen_v.append(criterion.values(ev))
        seen_phi.append(ev.phi)
    else:
        lim, phi = limits()
        proven = is_open(lim, phi) and propose(lim, phi) is None
    return best, log, proven


def search_smallest(
    model: nn.Module,
    validation: Split,
    group_names: Sequence[str],
    tolerance: Tolerance,
    *,
    config: SearchConfig = SearchConfig(),
    evaluator: Evaluator | None = None,
    calibration: Inputs | None = None,
) -> SearchResult:
    """The smallest per-layer bits of ``config.bits`` that keep every group's measured accuracy
    drop on ``validation`` within ``tolerance`` (and φ within ``tolerance.max_phi``): the
    predictor-led cutting-plane loop of the module docstring, ``config.max_rounds`` proposals
    at most. Never larger than :func:`smallest_uniform`; ``proven`` when the loop showed that
    no smaller allocation is left undominated by a measured failure. Raises
    :class:`~fairquant.mitigate.allocate.ToleranceUnreachable` when every layer at the largest
    width already breaks a group. With a deployed ``config.base``, each layer is quantized at the
    base or kept in float, every candidate built on the toolchain from ``calibration``
    (model-ready inputs, e.g. :func:`~fairquant.quant.calibrate.calibration_inputs`)."""
    ev = _evaluator(evaluator, model, validation, group_names, tolerance, config, calibration)
    groups = ev.group_names
    with ev.usage() as use:
        uniform = _uniform(ev, config)
        if not uniform[-1].feasible(tolerance):
            raise _unreachable(ev, uniform, tolerance)
        if config.sensitivity == "measured":
            table = ev.measured_table(config.bits)
        else:
            table = ev.predicted_table(
                config.bits, config.sensitivity, config.samples_per_group, config.random_state
            )
        criterion = _Criterion(
            names=groups,
            rows=cost_cube(table, ev.layers, groups, config.bits),
            targets=np.array([tolerance.for_group(a) for a in groups]),
            values=lambda e: e.judged.to_numpy(),
            max_phi=tolerance.max_phi,
        )
        best, rounds, proven = _cut_loop(ev, criterion, uniform, config, tolerance)
    method = "fairquant" if config.sensitivity == "diagonal" else config.sensitivity
    return _result(method, ev, best, tolerance, rounds, use, proven=proven)


def population_weights(validation: Split, group_names: Sequence[str]) -> dict[str, float]:
    """Each group's share of ``validation`` (a stratified split keeps the training shares)."""
    counts = group_counts(validation.g, len(group_names)).double()
    return dict(zip(group_names, (counts / counts.sum()).tolist(), strict=True))


def loss_only(
    model: nn.Module,
    validation: Split,
    group_names: Sequence[str],
    tolerance: Tolerance,
    *,
    config: SearchConfig = SearchConfig(),
    weights: Mapping[str, float] | None = None,
    evaluator: Evaluator | None = None,
) -> SearchResult:
    """The AIMET/HAWQ-style baseline: the smallest bits whose population-``weights``-averaged
    drop (:func:`population_weights` by default; the overall accuracy drop) stays within
    ``tolerance.max_drop`` on ``validation``, with the measured per-layer table and the same
    cut loop as :func:`search_smallest`. Its per-group drops are reported as measured: it may
    break a group (``feasible`` is then False), which is the point of the comparison."""
    _refuse_base(config.base, "the loss-only baseline's measured table")
    ev = _evaluator(evaluator, model, validation, group_names, tolerance, config)
    groups = ev.group_names
    shares = population_weights(validation, groups) if weights is None else dict(weights)
    missing = [a for a in groups if a not in shares]
    if missing:
        raise ConfigError(f"weights {shares} do not cover the groups {missing}")
    w = np.array([float(shares[a]) for a in groups])
    if (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights must be non-negative and not all 0; got {shares}")
    w = w / w.sum()
    with ev.usage() as use:
        uniform = _uniform(ev, config)
        average = _Criterion(
            names=["average"],
            rows=np.tensordot(
                w, cost_cube(ev.measured_table(config.bits), ev.layers, groups, config.bits), 1
            )[None],
            targets=np.array([tolerance.max_drop]),
            values=lambda e: np.array([float(w @ e.drop.to_numpy())]),
        )
        if not average.feasible(uniform[-1]):
            raise ToleranceUnreachable(
                f"the average drop is {float(w @ uniform[-1].drop.to_numpy()):.2f} points on the "
                f"validation split with every layer at {config.bits[-1]} bits, above "
                f"max_drop {tolerance.max_drop:g}",
                group="average",
                limit=tolerance.max_drop,
                reachable=float(min(w @ u.drop.to_numpy() for u in uniform)),
            )
        best, rounds, proven = _cut_loop(ev, average, uniform, config, tolerance)
    return _result("loss-only", ev, best, tolerance, rounds, use, proven=proven)


def hawq_order(
    model: nn.Module,
    validation: Split,
    group_names: Sequence[str],
    tolerance: Tolerance,
    *,
    config: SearchConfig = SearchConfig(),
    evaluator: Evaluator | None = None,
) -> SearchResult:
    """HAWQ-V2's order as a baseline: from every layer at the largest width, lower one layer
    by one width at a time, always the step whose trace x quantization error (``score`` of
    :func:`~fairquant.metrics.sensitivity.layer_trace_sensitivity`, groups pooled) at the lower
    width is smallest, until every group would no longer stay within ``tolerance`` on
    ``validation``.

    The scores fix the order of all steps in advance, so the point where the limit breaks is found
    by bisection over the number of steps taken (about log2 of the steps in evaluations instead of
    one per step): the same allocation as stopping at the first step that breaks the limit when
    the drops grow along the order, which is what the order assumes."""
    _refuse_base(config.base, "HAWQ's trace order")
    ev = _evaluator(evaluator, model, validation, group_names, tolerance, config)
    options = list(config.bits)
    with ev.usage() as use:
        top = ev.evaluate((options[-1],) * len(ev.layers))
        if not top.feasible(tolerance):
            raise _unreachable(ev, _uniform(ev, config), tolerance)
        table = ev.trace_table(options, config.samples_per_group, config.random_state)
        score = table.set_index(["layer", "bits"])["score"]
        current, order = list(top.bits), []
        while True:
            steps = [
                (score[(layer, options[options.index(b) - 1])], i)
                for i, (layer, b) in enumerate(zip(ev.layers, current, strict=True))
                if b != options[0]
            ]
            if not steps:
                break
            i = min(steps)[1]
            current[i] = options[options.index(current[i]) - 1]
            order.append(tuple(current))
        best, rounds = top, []
        lo, hi = 0, len(order)  # the steps kept lie in [lo, hi]; lo steps pass
        while lo < hi:
            mid = (lo + hi + 1) // 2
            trial = ev.evaluate(order[mid - 1])
            ok = trial.feasible(tolerance)
            rounds.append(_round(len(rounds) + 1, trial, ev, ok, trial.margins(tolerance)))
            if ok:
                lo, best = mid, trial
            else:
                hi = mid - 1
    return _result("hawq", ev, best, tolerance, rounds, use)


def compare(results: Sequence[SearchResult], tolerance: Tolerance) -> pd.DataFrame:
    """The methods side by side: one row each (``method, size_bytes, average_bits, feasible,
    worst_group, worst_drop, phi, evaluations, seconds, proven`` and ``drop[<group>]``), with
    ``speedup``, the measured search's seconds over each method's."""
    frame = pd.DataFrame([r.summary(tolerance) for r in results])
    measured = frame.loc[frame.method == "measured", "seconds"]
    frame["speedup"] = float(measured.iloc[0]) / frame.seconds if len(measured) else np.nan
    return frame


def compare_searches(
    model: nn.Module,
    validation: Split,
    group_names: Sequence[str],
    tolerance: Tolerance,
    *,
    config: SearchConfig = SearchConfig(),
    methods: Sequence[str] = METHODS,
    weights: Mapping[str, float] | None = None,
    evaluator: Evaluator | None = None,
    calibration: Inputs | None = None,
) -> tuple[dict[str, SearchResult], pd.DataFrame]:
    """Run ``methods`` (of :data:`METHODS`) on one shared :class:`Evaluator`: ``"fairquant"``
    (:func:`search_smallest` with ``config``'s predictor), ``"measured"`` (the same with
    AIMET's exhaustive table), ``"uniform"``, ``"loss-only"`` and ``"hawq"``; ``evaluator``
    (optional) shares the evaluations with other calls, e.g. other tolerances. With a deployed
    ``config.base`` (built from ``calibration``) only :data:`DEPLOYED_METHODS` run. Returns the
    results by method and :func:`compare`'s table."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown search methods {unknown}; expected some of {list(METHODS)}")
    for m in methods:
        if m not in DEPLOYED_METHODS:
            _refuse_base(config.base, f"the {m!r} method")
    ev = _evaluator(evaluator, model, validation, group_names, tolerance, config, calibration)
    common = {"config": config, "evaluator": ev}
    run: dict[str, Callable[[], SearchResult]] = {
        "fairquant": lambda: search_smallest(model, validation, group_names, tolerance, **common),
        "measured": lambda: search_smallest(
            model,
            validation,
            group_names,
            tolerance,
            config=replace(config, sensitivity="measured"),
            evaluator=ev,
        ),
        "uniform": lambda: smallest_uniform(model, validation, group_names, tolerance, **common),
        "loss-only": lambda: loss_only(
            model, validation, group_names, tolerance, weights=weights, **common
        ),
        "hawq": lambda: hawq_order(model, validation, group_names, tolerance, **common),
    }
    results = {m: run[m]() for m in methods}
    return results, compare(list(results.values()), tolerance)


@dataclass(frozen=True)
class SmallestWithin:
    """What :func:`smallest_within` found, wrote and judged."""

    validation_note: str
    """Which validation split the search selected on (and whether the model saw it)."""
    results: dict[str, SearchResult]
    """By method; ``"fairquant"`` is the search with the config's predictor."""
    table: pd.DataFrame
    """:func:`compare`'s table of the methods."""
    path: Path
    """The file written: the ``@spec.json``, or the toolchain's own file for a deployed base."""
    audit: AuditResult
    """Every method's model audited on the test split (each under its method's name)."""
    verdict: Verdict
    """The test-split verdict of ``"fairquant"``."""
    others: dict[str, str]
    """Each other method's test-split verdict status."""

    @property
    def chosen(self) -> SearchResult:
        return self.results["fairquant"]


def smallest_within(
    checkpoint: Checkpoint,
    dataset: GroupedDataset,
    tolerance: Tolerance,
    out: str | Path,
    *,
    config: SearchConfig = SearchConfig(),
    val_size: float | int | None = None,
    baselines: bool = False,
    n_bootstrap: int = N_BOOTSTRAP,
    calib_size: int = CALIB_SIZE,
) -> SmallestWithin:
    """``allocate --max-drop`` as one call: the smallest model within ``tolerance`` on the
    checkpoint's validation split (:func:`~fairquant.train.held_out_validation`; ``val_size``
    carves one from a checkpoint trained without), written to ``out``, then audited and judged
    on the test split.

    ``baselines``: also run the other :data:`METHODS` (``measured`` not when it is
    ``config.sensitivity``). ``out`` gets the ``@spec.json`` (named after its stem); with a
    deployed ``config.base``, the chosen model in its toolchain's own format (``.onnx`` for
    ``ort:``), built from ``calib_size`` training samples drawn as ``fairquant audit`` draws
    them (seed ``config.random_state``), but from outside the validation split, by every
    candidate and by the audit, so the file written predicts what the audit reports."""
    if baselines and config.base is not None:
        raise ConfigError(
            f"baselines=True compares fairquant's simulated widths; a search on "
            f"{config.base.name} runs alone"
        )
    rest, validation, note = held_out_splits(checkpoint, dataset, size=val_size)
    methods = tuple(m for m in METHODS if m != config.sensitivity) if baselines else ("fairquant",)
    calibration = None
    if config.base is not None:  # never the samples it selects on
        calibration, _, _ = calibration_inputs(
            rest, size=calib_size, balanced=False, seed=config.random_state
        )
    model, names = checkpoint.model, dataset.group_names
    results, table = compare_searches(
        model, validation, names, tolerance, config=config, methods=methods, calibration=calibration
    )
    chosen, out = results["fairquant"], Path(out)
    if config.base is None:
        path = replace(chosen.precision, name=out.stem).save(out)
    else:
        path = quantize(model, chosen.precision, calibration=calibration).save(out)
    specs = [replace(r.precision, name=m) for m, r in results.items()]
    with warnings.catch_warnings():  # the audit's notes on CEV/SDE: not what is judged here
        warnings.simplefilter("ignore")
        audited = audit(model, dataset, precisions=specs, n_bootstrap=0, calibration=calibration)
    judged = verdict(audited, tolerance, precisions=["fairquant"], n_bootstrap=n_bootstrap)
    others = {
        m: verdict(audited, tolerance, precisions=[m], n_bootstrap=0).status[m]
        for m in results
        if m != "fairquant"
    }
    return SmallestWithin(note, results, table, path, audited, judged, others)
