"""Repair a deployed precision on its own toolchain: the cheapest change that keeps every group
within tolerance on the validation split, judged on the test split.

NNCF's ``quantize_with_accuracy_control`` keeps the most harmful operations in float until *one*
scalar metric is within ``max_drop``; a group can still collapse behind a good average. Here a
candidate is **within tolerance** when every group's validation accuracy drop against fp32,
``drop(a) = 100 (acc_fp32(a) - acc_q(a))`` on the same validation samples, is at most that group's
tolerance (the verdict's :class:`~fairquant.metrics.verdict.Tolerance`: ``max_drop``, per-group
overrides, and ``max_phi`` on φ = max_a G(a) - min_a G(a), G(a) the group's mean excess
cross-entropy). Candidates are tried cheapest first, and the search stops at the **first tier**
with a candidate within tolerance (in the float tier, at the shortest passing prefix of its
ranking); the smallest file within tolerance is chosen:

1. ``as given``: the precision as the audit builds it (calibration: ``calib_size`` training
   samples drawn at random, seeded, as ``fairquant audit`` draws them, but only from the
   training samples outside the validation split, so that no candidate is calibrated on what it
   is selected on);
2. ``calibration set``: group-stratified (each group's share of the training split) or
   group-balanced (equal per group) samples instead;
3. ``calibrator``: ONNX Runtime's MinMax / Entropy / Percentile; NNCF's ``performance`` or
   ``mixed`` preset (symmetric or asymmetric activations), on the best calibration set so far;
4. ``per-channel``: per-output-channel weight scales (ONNX Runtime ``-pc``) on the best candidate
   so far; NNCF's OpenVINO weights are per channel already, so this tier is skipped there;
5. ``logit offsets``: on the best candidate so far (the smallest total excess of the groups over
   their tolerance), a vector added to its logits by one last ``Add`` in its own file, no weight
   retrained: first the last layer's bias correction (:func:`bias_correction`, the mean fp32 -
   quantized logits on the calibration set, no labels), then per-class offsets fitted on the
   validation split (:func:`fit_logit_offsets`). The file grows by K floats;
6. ``layers in float``: starting from the best uncorrected candidate so far, each weight layer is
   kept in float alone and ranked, without a validation pass, by how far that brings the logits
   of the groups over tolerance back to fp32's on training samples outside the validation split
   (:func:`_rank_layers`, as NNCF ranks its quantizers); then the shortest prefix of the ranking
   that keeps every group within tolerance, found by a galloping search over its length
   (:func:`_float_layers`: about 2 log2(k) validation passes for k layers), stays in float
   (ONNX Runtime ``nodes_to_exclude``, NNCF ``ignored_scope``); where no prefix passes, each
   layer alone is measured on the validation samples of the groups over tolerance and the search
   runs again on that order. The file grows by the float weights;
7. ``smaller file``: after the choice, where keeping layers in float makes the file *smaller*
   (a small model, whose int8 weights with their scales and quantize/dequantize nodes take more
   bytes than float weights: one build tells), the chosen candidate with those layers in float
   too, if it is within tolerance (:func:`_smaller_file`).

Every candidate is one build on the toolchain and one evaluation of the validation split
(``evaluations`` counts them, the fp32 reference pass included; the bias correction's passes of
the calibration set and the ranking's builds and passes of training samples are not validation
passes; the float tier's fallback measures layers on part of the split, counted as that
fraction of a pass). The test split is read once, at the end, for the
chosen candidate's verdict (:func:`fairquant.metrics.verdict.verdict`). Offsets fitted on the
validation split and selected on it are judged optimistically there: the test verdict is the one
to trust.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from fairquant.data.base import GroupedDataset, Split
from fairquant.data.preprocess import Preprocess
from fairquant.data.split import validation_indices, validation_split
from fairquant.errors import ConfigError
from fairquant.metrics.functional import per_sample_loss
from fairquant.metrics.samples import PerSample
from fairquant.metrics.verdict import Tolerance, Verdict, verdict
from fairquant.mitigate.allocate import ToleranceUnreachable
from fairquant.models.onnx import OnnxModel
from fairquant.options import REPAIR_VAL_SIZE, REPAIRABLE
from fairquant.quant.artifact import Quantized, file_saver
from fairquant.quant.build import quantize
from fairquant.quant.calibrate import calibration_indices
from fairquant.quant.configs import DeployedPrecision
from fairquant.quant.openvino import OpenVinoConfig, OpenVinoModel, weight_layers
from fairquant.quant.openvino import append_logit_offsets as append_openvino_offsets
from fairquant.quant.ort import ORT_CALIBRATIONS, OrtStaticConfig, export_onnx, weight_nodes
from fairquant.quant.ort import append_logit_offsets as append_onnx_offsets
from fairquant.quant.precision import parse_precision

__all__ = [
    "CALIBRATION_SETS",
    "REPAIRABLE",
    "Candidate",
    "RepairResult",
    "RepairUnreachable",
    "calibration_set",
    "candidates_table",
    "repair",
    "shortest_prefix",
]

#: How the calibration samples are drawn from the training split.
CALIBRATION_SETS = ("random", "stratified", "balanced")
#: The repairs, cheapest first.
TIERS = (
    "as given",
    "calibration set",
    "calibrator",
    "per-channel",
    "logit offsets",
    "layers in float",
    "smaller file",
)
#: The post-hoc corrections of the ``logit offsets`` tier, cheapest first.
CORRECTIONS = ("bias correction", "logit offsets")
_BATCH = 256
#: Training samples (outside the validation split) that rank the layers for the float tier, as
#: NNCF's ``ranking_subset_size``.
RANKING_SAMPLES = 300


@dataclass(frozen=True)
class Candidate:
    """One repair tried: its deployed ``precision`` (config included), the calibration set, the
    layers kept in float, the file's ``size_bytes``, ``latency_ms`` per sample on this CPU
    (validation pass, batches of 256), each group's validation ``drop`` (points, positive is a
    loss), ``phi`` on validation, whether it is ``within`` tolerance and the ``seconds`` it took."""

    tier: str
    precision: DeployedPrecision
    calibration_set: str
    float_layers: tuple[str, ...]
    size_bytes: int
    latency_ms: float
    drop: pd.Series
    phi: float
    within: bool
    seconds: float
    deployed: Quantized = field(repr=False)
    correction: str = ""
    """``""``, ``"bias correction"`` or ``"logit offsets"`` (:data:`CORRECTIONS`)."""
    offsets: tuple[float, ...] = ()
    """The vector added to the logits by the artifact's last operation (a correction's)."""
    evaluations: int = 1
    """Validation passes this candidate cost."""

    @property
    def label(self) -> str:
        """e.g. ``ort:int8-pc-percentile, balanced calibration, 2 layers in float``."""
        floats = f", {len(self.float_layers)} layers in float" if self.float_layers else ""
        fixed = f", {self.correction}" if self.correction else ""
        return f"{self.precision.name}, {self.calibration_set} calibration{floats}{fixed}"


@dataclass
class RepairResult:
    """What :func:`repair` tried and chose. ``verdict``: the chosen candidate judged on the test
    split against fp32; ``evaluations``: validation passes (the float tier's fallback adds
    fractions of a pass, which the candidates table's ``evaluations_total`` leaves out);
    ``validation``: what the validation split is (a sentence).
    :func:`fairquant.report.repair.write_repair` writes it to a folder."""

    precision: str
    chosen: Candidate
    candidates: list[Candidate]
    tolerance: Tolerance
    verdict: Verdict
    group_names: list[str]
    validation: str
    evaluations: float
    seconds: float
    notes: list[str]
    ranking: pd.DataFrame | None = None
    """The float tier's ranking of the layers (:func:`_rank_layers`), when that tier ran."""
    _workdir: Any = field(default=None, repr=False)

    def table(self) -> pd.DataFrame:
        """One row per candidate (:func:`candidates_table`)."""
        return candidates_table(self.candidates, self.group_names, self.chosen)


def candidates_table(
    candidates: list[Candidate], group_names: list[str], chosen: Candidate | None = None
) -> pd.DataFrame:
    """One row per candidate, in the order tried: tier, precision, calibration set, layers in
    float, size, latency, validation drop per group (``drop[group]``), φ, within, chosen
    (``chosen`` is that candidate; ``None``: none was), the validation passes it cost
    (``evaluations``) and all passes so far, fp32's reference pass included
    (``evaluations_total``), seconds."""
    rows, total = [], 1
    for c in candidates:
        rows.append(
            {
                "tier": c.tier,
                "precision": c.precision.name,
                "calibration_set": c.calibration_set,
                "float_layers": " ".join(c.float_layers),
                "n_float_layers": len(c.float_layers),
                "size_bytes": c.size_bytes,
                "latency_ms": round(c.latency_ms, 4),
                **{f"drop[{a}]": round(float(c.drop[a]), 4) for a in group_names},
                "correction": c.correction,
                "offsets": " ".join(f"{b:.6g}" for b in c.offsets),
                "phi": round(c.phi, 6),
                "within": c.within,
                "chosen": c is chosen,
                "evaluations": c.evaluations,
                "evaluations_total": total + c.evaluations,
                "seconds": round(c.seconds, 3),
            }
        )
        total += c.evaluations
    return pd.DataFrame(rows)


class RepairUnreachable(ToleranceUnreachable):
    """No candidate is within tolerance on the validation split: ``group``, ``limit`` and
    ``reachable`` as :class:`~fairquant.mitigate.allocate.ToleranceUnreachable` (the smallest
    value any candidate reached), and ``candidates``, the table of every candidate tried
    (:func:`candidates_table`), for the user to see how close each came."""

    def __init__(
        self, message: str, *, group: str, limit: float, reachable: float, candidates: pd.DataFrame
    ) -> None:
        super().__init__(message, group=group, limit=limit, reachable=reachable)
        self.candidates = candidates


def calibration_set(pool: Split, kind: str, *, size: int, seed: int) -> Tensor:
    """Indices of the ``size`` calibration samples of ``kind`` (:data:`CALIBRATION_SETS`) in
    ``pool``, seeded: ``random`` as ``fairquant audit`` draws them, ``stratified`` each group's
    share of ``pool`` (largest remainder), ``balanced`` equal per group."""
    if kind == "stratified":
        zeros = torch.zeros_like(pool.g)
        return torch.from_numpy(validation_indices(zeros, pool.g, size, seed=seed)[1])
    if kind not in CALIBRATION_SETS:
        raise ConfigError(f"calibration set {kind!r}: expected one of {CALIBRATION_SETS}")
    return calibration_indices(pool, size, balanced=kind == "balanced", seed=seed)


def _cold(built: Quantized) -> Quantized:
    """``built`` without its loaded runtime, reopened from its file when it is used again: a
    repair measures one candidate per layer and more, and holding each one's ONNX Runtime
    session or compiled OpenVINO model held each one's memory to the end."""
    path, hint, loaded = built.artifact, built.precision.config, []
    hint = getattr(hint, "inference_precision", "f32")  # nothing here refers to `built`
    assert path is not None  # ort: and openvino: precisions write their file

    def model() -> Any:
        if not loaded:
            xml = path.suffix == ".xml"
            loaded.append(OpenVinoModel(path, inference_precision=hint) if xml else OnnxModel(path))
        return loaded[0]

    saver = (lambda to: model().save(to)) if path.suffix == ".xml" else file_saver(path)
    return replace(built, run=lambda x: model().predict(x), saver=saver)


def _repairable(precision: str | DeployedPrecision) -> DeployedPrecision:
    parsed = parse_precision(precision) if isinstance(precision, str) else precision
    if not parsed.deployed or not isinstance(parsed.config, OrtStaticConfig | OpenVinoConfig):
        raise ConfigError(
            f"precision {precision if isinstance(precision, str) else precision.name!r} cannot be "
            f"repaired: repair builds and searches on a toolchain that keeps chosen layers in "
            f"float; expected one of: {REPAIRABLE}"
        )
    return parsed


def _logits(predict: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, float]:
    """Logits of ``x`` in batches, and the seconds per sample."""
    predict(x[:8])  # warm-up: the first call allocates and compiles
    start = time.perf_counter()
    out = torch.cat([predict(x[i : i + _BATCH]) for i in range(0, len(x), _BATCH)])
    return out.float(), (time.perf_counter() - start) / max(len(x), 1)


def _torch_predict(model: nn.Module) -> Callable[[Tensor], Tensor]:
    @torch.inference_mode()
    def run(x: Tensor) -> Tensor:
        return model(x).float()

    return run


def _group_stats(logits: Tensor, split: Split, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group accuracy (points) and mean cross-entropy of ``logits`` on ``split``."""
    g = split.g.numpy()
    correct = (logits.argmax(1) == split.y).numpy().astype(np.float64)
    loss = per_sample_loss(logits, split.y).numpy().astype(np.float64)
    counts = np.maximum(np.bincount(g, minlength=k), 1)
    return (
        100 * np.bincount(g, correct, minlength=k) / counts,
        np.bincount(g, loss, minlength=k) / counts,
    )


class _Bench:
    """Builds candidates on the toolchain and measures each on the validation split once."""

    def __init__(self, model, source, pool: Split, validation: Split, names, tolerance, options):
        self.model, self.source, self.pool, self.validation = model, source, pool, validation
        self.names, self.tolerance, self.options = names, tolerance, options
        self.workdir = Path(options["workdir"])
        self.k = len(names)
        self.fp32 = _fp32(model)
        ref, _ = _logits(self.fp32, validation.x)
        self.acc_ref, self.loss_ref = _group_stats(ref, validation, self.k)
        self.evaluations: float = 1  # passes of the validation split
        self.tried: dict[tuple, Candidate] = {}
        self.order: list[Candidate] = []
        self.logits: dict[int, Tensor] = {}  # each candidate's validation logits
        self._calib: dict[str, Tensor] = {}
        self.builds = 0  # builds not measured on validation (ranking, size probes)
        self.ranking_table: pd.DataFrame | None = None

    def ranking_set(self, groups: list[int]) -> tuple[Tensor, Tensor]:
        """Up to :data:`RANKING_SAMPLES` training samples (outside the validation split) of
        ``groups``, an equal share each, drawn at random (seeded): inputs and groups."""
        gen = torch.Generator().manual_seed(self.options["seed"])
        share = RANKING_SAMPLES // max(len(groups), 1)
        index = []
        for a in groups:
            members = torch.nonzero(self.pool.g == a).flatten()
            index.append(members[torch.randperm(len(members), generator=gen)[:share]])
        chosen = torch.cat(index).sort().values if index else torch.zeros(0, dtype=torch.long)
        return self.pool.x[chosen], self.pool.g[chosen]

    def build(self, precision: DeployedPrecision, calib: str, folder: str = "") -> Quantized:
        """``precision`` built on ``calib``'s samples into ``workdir/folder`` (by default a
        numbered ``build-NNN``: a ranking's or a size probe's build, not a candidate)."""
        if not folder:
            folder, self.builds = f"build-{self.builds:03d}", self.builds + 1
        calibration, workdir = self.calibration(calib), self.workdir / folder
        return quantize(self.source, precision, calibration=calibration, workdir=workdir)

    def calibration(self, kind: str) -> Tensor:
        if kind not in self._calib:
            size, seed = self.options["calib_size"], self.options["seed"]
            index = calibration_set(self.pool, kind, size=size, seed=seed)
            self._calib[kind] = self.pool.x[index]
        return self._calib[kind]

    def margins(self, c: Candidate) -> np.ndarray:
        return c.drop.to_numpy() - [self.tolerance.for_group(a) for a in self.names]

    def over_tolerance(self, c: Candidate) -> tuple[list[int], np.ndarray]:
        """The groups ``c`` leaves over their tolerance and by how much (points); every group,
        each weighing 1, when φ alone is over its limit."""
        margins = self.margins(c)
        over = [a for a in range(self.k) if margins[a] > 0]
        return (over, margins[over]) if over else (list(range(self.k)), np.ones(self.k))

    def excess(self, c: Candidate) -> tuple[float, float]:
        """(sum of the groups' drops above their tolerance, the largest margin)."""
        margins = self.margins(c)
        return float(np.clip(margins, 0, None).sum()), float(margins.max())

    def evaluate(self, tier: str, precision: DeployedPrecision, calib: str) -> Candidate:
        key = (precision, calib)
        if key in self.tried:
            return self.tried[key]
        start = time.perf_counter()
        built = self.build(precision, calib, folder=f"candidate-{len(self.order):03d}")
        fields = {"tier": tier, "precision": precision, "calibration_set": calib}
        candidate = self.measure(built, start, **fields, float_layers=_floats(precision.config))
        self.tried[key] = candidate
        return candidate

    def measure(self, built: Quantized, start: float, **fields: Any) -> Candidate:
        """One pass of the validation split through ``built``: its candidate, recorded."""
        logits, per_sample = _logits(built.predict, self.validation.x)
        self.evaluations += 1
        acc, loss = _group_stats(logits, self.validation, self.k)
        drop = pd.Series(self.acc_ref - acc, index=self.names)
        excess = loss - self.loss_ref
        phi = float(excess.max() - excess.min())
        ok = bool((drop.to_numpy() <= [self.tolerance.for_group(a) for a in self.names]).all())
        ok = ok and (self.tolerance.max_phi is None or phi <= self.tolerance.max_phi)
        candidate = Candidate(
            **fields,
            size_bytes=built.size_bytes,
            latency_ms=1000 * per_sample,
            drop=drop,
            phi=phi,
            within=ok,
            seconds=time.perf_counter() - start,
            deployed=_cold(built),
        )
        self.logits[id(candidate)] = logits
        self.order.append(candidate)
        return candidate

    def correct(self, base: Candidate, correction: str) -> Candidate:
        """``base`` with a vector added to its logits by one last operation in its own file: the
        bias correction (:func:`bias_correction`, on the calibration set) or the logit offsets
        (:func:`fit_logit_offsets`, on the validation split's labels)."""
        start = time.perf_counter()
        if correction == "bias correction":
            x = self.calibration(base.calibration_set)
            ref, _ = _logits(self.fp32, x)
            offsets = bias_correction(ref, _logits(base.deployed.predict, x)[0])
        else:
            offsets = fit_logit_offsets(self.logits[id(base)], self.validation.y)
        folder = self.workdir / f"candidate-{len(self.order):03d}"
        folder.mkdir(parents=True)
        source = base.deployed.artifact
        assert source is not None  # ort: and openvino: precisions write their file
        note = (*base.deployed.notes, f"{correction} added to the logits: {offsets.tolist()}")
        if source.suffix == ".xml":
            path = append_openvino_offsets(source, offsets, folder / "model.xml")
            hint = getattr(base.precision.config, "inference_precision", "f32")
            ir = OpenVinoModel(path, inference_precision=hint)
            built = Quantized(base.precision, ir.size_bytes, note, ir.predict, ir.save, path)
        else:
            path = append_onnx_offsets(source, offsets, folder / "model.onnx")
            size, run, save = path.stat().st_size, OnnxModel(path).predict, file_saver(path)
            built = Quantized(base.precision, size, note, run, save, path)
        fields = {k: getattr(base, k) for k in ("precision", "calibration_set", "float_layers")}
        return self.measure(
            built,
            start,
            tier=TIERS[4],
            **fields,
            correction=correction,
            offsets=tuple(float(b) for b in offsets),
        )


def _variant(precision: DeployedPrecision, **changes: Any) -> DeployedPrecision:
    """``precision`` with its config changed, named as the parser spells it (``+N float`` for
    layers kept in float, which no precision string spells)."""
    config = replace(precision.config, **changes)
    if isinstance(config, OrtStaticConfig):
        calibrator = "" if config.calibration == "minmax" else f"-{config.calibration}"
        flags = ("-pc" if config.per_channel else "") + calibrator
        name = f"ort:int8{flags}{'-rr' if config.reduce_range else ''}"
    else:
        mixed = "-mixed" if config.preset == "mixed" else ""
        name = f"openvino:int8{mixed}{'' if config.fast_bias_correction else '-bc'}"
    floats = _floats(config)
    name += f" +{len(floats)} float" if floats else ""
    return replace(precision, name=name, config=config)


def _best(candidates: list[Candidate], bench: _Bench) -> Candidate:
    """The passing candidate with the smallest file (then the largest slack), else the one with
    the smallest total excess of the groups over their tolerance (then worst margin)."""
    passing = [c for c in candidates if c.within]
    if passing:
        return min(passing, key=lambda c: (c.size_bytes, bench.margins(c).max()))
    return min(candidates, key=bench.excess)


def fit_logit_offsets(logits: Tensor, y: Tensor, *, ridge: float = 1e-4) -> np.ndarray:
    """The per-class offsets ``b`` that minimise the mean cross-entropy of ``logits + b`` on the
    labels ``y`` (the validation split's), with a small ridge that makes ``b`` unique:

        L(b) = (1/n) Σ_i [log Σ_k exp(z_ik + b_k) - z_{i,y_i} - b_{y_i}] + (ridge/2) ||b||².

    L is convex; its gradient is ``mean_i p_i - π + ridge b`` (``p_i`` the softmax of
    ``z_i + b``, ``π`` the classes' shares of ``y``), so at the minimum the quantized model's mean
    predicted probability of each class matches how often the class occurs, up to the ridge:
    quantization that shifts a class's logits (a collapsed row of weights) is undone where the
    shift is the same for every sample. Solved by Newton's method in float64 (Hessian
    ``mean_i (diag p_i - p_i p_iᵀ) + ridge I``) with a halving line search. A class absent
    from ``y`` keeps ``b_k = 0`` (its share of 0 would push it to -∞). Fitted on labels, and the
    repair then selects on the same split: its validation drop is optimistic, which is why the
    verdict judges on the test split.
    """
    z = logits.double().numpy()
    labels = y.numpy()
    n, k = z.shape
    share = np.bincount(labels, minlength=k) / n
    free = share > 0

    def loss(b: np.ndarray) -> float:
        shifted = z + b
        top = shifted.max(1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(shifted - top).sum(1))
        return float((lse - shifted[np.arange(n), labels]).mean() + ridge / 2 * b @ b)

    b = np.zeros(k)
    for _ in range(100):
        shifted = z + b
        p = np.exp(shifted - shifted.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = np.where(free, p.mean(0) - share + ridge * b, 0.0)
        if np.abs(grad).max() < 1e-12:
            break
        hess = np.diag(p.mean(0)) - p.T @ p / n + ridge * np.eye(k)
        step = np.zeros(k)
        step[free] = np.linalg.solve(hess[np.ix_(free, free)], -grad[free])
        t, now = 1.0, loss(b)
        while loss(b + t * step) > now and t > 1e-8:
            t /= 2
        b = b + t * step
    return b


def bias_correction(fp32: Tensor, quantized: Tensor) -> np.ndarray:
    """The last layer's bias correction: the mean difference of the fp32 and the quantized
    model's logits, ``b = (1/n) Σ_i (z_fp32,i - z_q,i)``, on the calibration samples (no labels);
    added to the quantized logits it removes their mean shift (NNCF's and Nagel et al.'s bias
    correction, here for the output layer alone)."""
    return (fp32.double() - quantized.double()).mean(0).numpy()


def _tier_variants(tier: str, base: DeployedPrecision, sets: list[str], bench: _Bench):
    """The (precision, calibration set) pairs of one of the first three tiers, cheapest first;
    the calibrators run on the best calibration set so far."""
    config = base.config
    if tier == "as given":
        return [(base, "random")]
    if tier == "calibration set":
        return [(base, s) for s in sets if s != "random"]
    calib = _best(bench.order, bench).calibration_set
    if isinstance(config, OrtStaticConfig):
        others = [c for c in ORT_CALIBRATIONS if c != config.calibration]
        return [(_variant(base, calibration=c), calib) for c in others]
    other = "mixed" if config.preset == "performance" else "performance"
    return [(_variant(base, preset=other), calib)]


def _divergence(logits: Tensor, ref: Tensor, g: Tensor, groups: list[int]) -> np.ndarray:
    """Each group's mean KL(p_fp32 || p_q) of the softmax of ``logits`` from ``ref``'s."""
    log_p, log_q = ref.double().log_softmax(1), logits.double().log_softmax(1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1)
    return np.array([float(kl[g == a].mean()) for a in groups])


def _rank_layers(
    start: Candidate, layers: list[str], bench: _Bench, kept: Callable[[tuple[str, ...]], Any]
) -> tuple[pd.DataFrame, int]:
    """Every layer scored by how much keeping it alone in float brings the groups over
    tolerance back to fp32, on training samples outside the validation split (no labels, no
    validation pass): for each such group ``a``, ``D_a`` the mean KL divergence of the
    candidate's softmax from fp32's on up to :data:`RANKING_SAMPLES` / (number of such groups) of
    its samples, and ``score = Σ_a excess_a (D_a(start) - D_a(layer)) / D_a(start)``, weighted by
    the group's excess over its tolerance on validation (every group alike when φ alone is over
    its limit; groups without training samples outside validation are left out). NNCF's ranker
    does the same with the normalized MSE of the outputs on the validation items they most
    change. As the file is to be small, layers that help are ordered by score per kilobyte the
    file grows by when they alone stay in float (``extra_bytes``, measured on the toolchain's
    file; at least 1 byte), the greedy order of a knapsack; those that do not help follow, by
    score. Returns the table, best first, and the number of samples it was measured on."""
    failing, excess = bench.over_tolerance(start)
    x, g = bench.ranking_set(failing)
    present = [i for i, a in enumerate(failing) if bool((g == a).any())]
    failing, excess = [failing[i] for i in present], excess[present]
    ref, _ = _logits(bench.fp32, x)
    before = _divergence(_logits(start.deployed.predict, x)[0], ref, g, failing)
    weight = excess / np.maximum(before, 1e-12)
    rows = []
    for layer in layers:
        began = time.perf_counter()
        built = kept((layer,))
        after = _divergence(_logits(built.predict, x)[0], ref, g, failing)
        score, extra = float(weight @ (before - after)), built.size_bytes - start.size_bytes
        rows.append(
            {
                "layer": layer,
                "score": score,
                "extra_bytes": extra,
                "score_per_kb": 1000 * score / max(extra, 1),
                **{f"kl[{bench.names[a]}]": float(d) for a, d in zip(failing, after, strict=True)},
                "seconds": round(time.perf_counter() - began, 3),
            }
        )
    table = pd.DataFrame(rows)
    helps = table.score > 0
    table = pd.concat(
        [
            table[helps].sort_values("score_per_kb", ascending=False, kind="stable"),
            table[~helps].sort_values("score", ascending=False, kind="stable"),
        ]
    )
    return table.reset_index(drop=True), len(x)


def _float_layers(start: Candidate, layers: list[str], bench: _Bench, notes: list[str]) -> None:
    """Rank the layers (:func:`_rank_layers`), then find the shortest prefix of the ranking that,
    kept in float, is within tolerance on validation: a galloping search over the prefix length
    (1, 2, 4, ... until one passes, then bisection between the last that failed and it), about
    2 log2(k) validation passes for a prefix of k layers instead of one per layer. The shortest
    passing prefix is the smallest file along the ranking when the drops do not grow as layers
    return to float, which the ranking assumes; at most all layers but one. Where no prefix
    passes (the drops did not fall along the ranking: near the tolerance one image either way
    decides), each layer kept in float alone is measured on the validation samples of the groups
    over tolerance (:func:`_screen`, a fraction of a pass each), and the shortest prefix of the
    order of those measurements is searched the same way."""
    tier, base, calib = TIERS[5], start.precision, start.calibration_set

    def variant(names: tuple[str, ...]) -> DeployedPrecision:
        return _with_floats(base, names)

    def build(names: tuple[str, ...]) -> Quantized:
        return bench.build(variant(names), calib)

    ranking, n_samples = _rank_layers(start, layers, bench, build)
    bench.ranking_table = ranking
    order = list(ranking.layer)
    notes.append(
        f"layers in float: {len(order)} layers ranked by how much keeping each alone in float "
        f"brings the groups over tolerance back to fp32 (KL divergence on {n_samples} training "
        "samples outside the validation split, no validation pass: ranking.csv)"
    )

    def kept(names: tuple[str, ...]) -> Candidate:
        return bench.evaluate(tier, variant(names), calib)

    if shortest_prefix(len(order) - 1, lambda n: kept(tuple(order[:n])).within) is not None:
        return
    excess, passes = _screen(start, layers, bench, build)
    ranking["val_excess"] = ranking.layer.map(excess)
    notes.append(
        "layers in float: no prefix of the ranking was within tolerance on validation (the drops "
        "did not fall along it), so each layer kept in float alone was measured on the validation "
        f"samples of the groups over tolerance ({passes:.2f} passes of the split in all; "
        "ranking.csv's val_excess), and the shortest prefix of that order searched again"
    )
    measured = sorted(layers, key=lambda layer: excess[layer])
    shortest_prefix(len(measured) - 1, lambda n: kept(tuple(measured[:n])).within)


def _screen(
    start: Candidate, layers: list[str], bench: _Bench, build: Callable[[tuple[str, ...]], Any]
) -> tuple[dict[str, float], float]:
    """Each layer kept in float alone, measured on the validation samples of the groups over
    tolerance in ``start`` (every group when φ alone is over): the sum of those groups' drops
    above their tolerance. A fraction of a pass each (those samples' share of the split), added
    to the bench's evaluations; returns the excess by layer and the passes it cost."""
    failing, _ = bench.over_tolerance(start)
    split = bench.validation
    mask = torch.isin(split.g, torch.tensor(failing))
    subset = Split(split.x[mask], split.y[mask], split.g[mask])
    limits = np.array([bench.tolerance.for_group(bench.names[a]) for a in failing])
    share = float(mask.float().mean())
    excess = {}
    for layer in layers:
        acc, _ = _group_stats(_logits(build((layer,)).predict, subset.x)[0], subset, bench.k)
        drop = bench.acc_ref[failing] - acc[failing]
        excess[layer] = float(np.clip(drop - limits, 0, None).sum())
        bench.evaluations += share
    return excess, share * len(layers)


def shortest_prefix(top: int, within: Callable[[int], bool]) -> int | None:
    """The smallest ``n`` in ``1..top`` with ``within(n)``, for ``within`` that stays true once
    true (else some ``n`` where it turns true), or ``None`` when ``within(top)`` is false.
    Galloping search: ``n = 1, 2, 4, ...`` until one passes, then bisection between the last that
    failed and it: at most ``2 ceil(log2 n*) + 1`` calls for the answer ``n*``, one when it is 1
    (Bentley & Yao, "An almost optimal algorithm for unbounded searching", 1976)."""
    failed, n = 0, 1
    while not within(n):
        failed = n
        if n >= top:
            return None
        n = min(2 * n, top)
    passed = n
    while passed - failed > 1:
        mid = (failed + passed) // 2
        if within(mid):
            passed = mid
        else:
            failed = mid
    return passed


def _float_field(config: OrtStaticConfig | OpenVinoConfig) -> str:
    """The config's field of the layers kept in float: ONNX Runtime's ``nodes_to_exclude``,
    NNCF's ``ignored_scope``."""
    return "nodes_to_exclude" if isinstance(config, OrtStaticConfig) else "ignored_scope"


def _floats(config: OrtStaticConfig | OpenVinoConfig) -> tuple[str, ...]:
    return tuple(getattr(config, _float_field(config)))


def _with_floats(precision: DeployedPrecision, names: tuple[str, ...]) -> DeployedPrecision:
    """``precision`` with the layers ``names`` (graph nodes) kept in float."""
    return _variant(precision, **{_float_field(precision.config): names})


def _smaller_file(chosen: Candidate, bench: _Bench, notes: list[str]) -> None:
    """Tier ``smaller file``: on a small model a layer's float weights can take fewer bytes
    than its int8 weights with their scales and quantize/dequantize nodes, so keeping it in float
    shrinks the file. One build tells: the chosen candidate with every layer but one in float.
    Only where that file is smaller than the chosen one, each other layer is built in float
    alone, and the chosen candidate with all those that shrink its file kept in float (where
    that would leave nothing quantized, all but one: the one whose file is then smallest, one
    build each) is measured on validation (one pass); the smallest file within tolerance is then
    chosen. A corrected candidate (logit offsets) is left as it is."""
    if chosen.correction:
        return
    base, calib = chosen.precision, chosen.calibration_set
    have = _floats(base.config)
    others = [layer for layer in _layer_names(bench, base) if layer not in have]
    if len(have) + len(others) < 2 or not others:
        return

    @functools.cache  # the probe is also one of the all-but-one sets
    def size(names: tuple[str, ...]) -> float:
        try:
            return bench.build(_with_floats(base, names), calib).size_bytes
        except ConfigError:  # the toolchain quantizes nothing then: no candidate
            return float("inf")

    if size(have + tuple(others[:-1])) >= chosen.size_bytes:
        return
    shrink = [layer for layer in others if size((*have, layer)) < chosen.size_bytes]
    if len(shrink) == len(others):  # one stays quantized: the one whose file is smallest
        shrink = min(
            ([other for other in shrink if other != kept] for kept in shrink),
            key=lambda rest: size((*have, *rest)),
        )
    if not shrink:
        return
    smaller = bench.evaluate(TIERS[6], _with_floats(base, have + tuple(shrink)), calib)
    notes.append(
        f"smaller file: keeping {len(shrink)} more layer(s) in float shrinks the file of "
        f"{chosen.label} from {chosen.size_bytes:,} to {smaller.size_bytes:,} bytes (their int8 "
        "weights with scales and quantize/dequantize nodes outweigh their float weights); "
        + ("within tolerance, so chosen" if smaller.within else "not within tolerance")
    )


def _layer_names(bench: _Bench, precision: DeployedPrecision) -> list[str]:
    if isinstance(precision.config, OrtStaticConfig):
        return weight_nodes(bench.source, bench.workdir)
    from fairquant._extras import require

    ov = require("openvino", what="openvino: precisions")
    return weight_layers(ov.Core().read_model(str(bench.source.path)))


def _search(bench: _Bench, base: DeployedPrecision, sets: list[str], notes: list[str]) -> None:
    """Run the tiers cheapest first; stop at the first tier with a candidate within
    tolerance."""
    for tier in TIERS[:3]:
        for precision, calib in _tier_variants(tier, base, sets, bench):
            if bench.evaluate(tier, precision, calib).within:
                return
    best = _best(bench.order, bench)
    if isinstance(base.config, OrtStaticConfig) and best.precision.config.per_channel:
        notes.append(f"per-channel: {base.name} quantizes weights per channel already")
    elif isinstance(base.config, OrtStaticConfig):
        pc = _variant(best.precision, per_channel=True)
        if bench.evaluate(TIERS[3], pc, best.calibration_set).within:
            return
    else:
        notes.append("per-channel: NNCF quantizes OpenVINO weights per channel already")
    best = _best(bench.order, bench)
    for correction in CORRECTIONS:
        if bench.correct(best, correction).within:
            return
    layers = _layer_names(bench, base)
    if len(layers) < 2:
        notes.append(f"layers in float: the model has {len(layers)} weight layer(s); skipped")
        return
    _float_layers(_best([c for c in bench.order if not c.correction], bench), layers, bench, notes)


def _unreachable(bench: _Bench) -> RepairUnreachable:
    """The error when no candidate is within tolerance: the group that none keeps within its
    tolerance (largest margin of its smallest drop), else the best candidate's worst group, else
    φ; with the table of every candidate."""
    error = _unreachable_limit(bench)
    table = candidates_table(bench.order, bench.names)
    return RepairUnreachable(
        str(error),
        group=error.group,
        limit=error.limit,
        reachable=error.reachable,
        candidates=table,
    )


def _unreachable_limit(bench: _Bench) -> ToleranceUnreachable:
    drops = pd.DataFrame([c.drop for c in bench.order])
    limits = pd.Series([bench.tolerance.for_group(a) for a in bench.names], index=bench.names)
    reached = drops.min()
    n = len(bench.order)
    if (reached > limits).any():
        group = str((reached - limits).idxmax())
        return ToleranceUnreachable(
            f"no repair keeps group {group!r} within its tolerance of {limits[group]:g} points on "
            f"the validation split: the smallest drop any of the {n} candidates reached is "
            f"{reached[group]:.2f} points",
            group=group,
            limit=float(limits[group]),
            reachable=float(reached[group]),
        )
    best = _best(bench.order, bench)
    margins = pd.Series(bench.margins(best), index=bench.names)
    if (margins > 0).any():
        group = str(margins.idxmax())
        return ToleranceUnreachable(
            f"no repair keeps every group within tolerance at once on the validation split: the "
            f"best of the {n} candidates ({best.label}) leaves group {group!r} at "
            f"{best.drop[group]:.2f} points, above its {limits[group]:g}",
            group=group,
            limit=float(limits[group]),
            reachable=float(best.drop[group]),
        )
    phi = min(c.phi for c in bench.order)
    return ToleranceUnreachable(
        f"no repair keeps φ(D) within max_phi {bench.tolerance.max_phi:g} on the validation "
        f"split: the smallest any of the {n} candidates reached is {phi:.3g}",
        group="phi",
        limit=float(bench.tolerance.max_phi or 0.0),
        reachable=phi,
    )


def _unwrap(model: Any, notes: list[str]) -> Any:
    """The checkpoint, module or ONNX model inside ``model`` (a :class:`LoadedModel`'s notes,
    e.g. how it is normalized, join ``notes``)."""
    from fairquant.models.load import LoadedModel
    from fairquant.train.checkpoint import Checkpoint

    if isinstance(model, LoadedModel):
        notes.extend(model.notes)
        model = model.model
    if not isinstance(model, Checkpoint | nn.Module | OnnxModel):
        raise ConfigError(
            "repair takes an nn.Module, a Checkpoint, an OnnxModel or a LoadedModel; got "
            f"{type(model).__name__}"
        )
    return model


def _validation(model, data: GroupedDataset, validation, val_size) -> tuple[Any, Split, Split, str]:
    """``(model, pool, validation, note)``: the split to select on and the training samples
    outside it, which calibration draws from (the whole training split where the user gives the
    validation split)."""
    from fairquant.train import Checkpoint, held_out_splits

    if validation is not None and val_size is not None:
        raise ConfigError(
            f"repair got validation= ({len(validation)} samples) and val_size={val_size!r}; "
            "give one: the split to select on, or the size of one to carve"
        )
    if isinstance(model, Checkpoint):
        if validation is not None:
            raise ConfigError(
                "repair of a Checkpoint rebuilds its own validation split (or carves one of "
                "val_size); validation= is for a model"
            )
        held = model.train_config is not None and model.train_config.val_size
        size = val_size if held or val_size is not None else REPAIR_VAL_SIZE
        pool, split, note = held_out_splits(model, data, size=size)
        return model.model, pool, split, note
    if validation is not None:
        given = f"the given validation split ({len(validation)} samples)"
        return model, data.train, validation, given
    size = REPAIR_VAL_SIZE if val_size is None else val_size
    pool, split = validation_split(data.train, size, seed=data.spec.seed)
    return (
        model,
        pool,
        split,
        (
            f"a validation split of {len(split)} samples carved from the training split (seed "
            f"{data.spec.seed}): the model may have been trained on them, so what is selected on "
            "them is judged optimistically"
        ),
    )


def _ready(split: Split, preprocess: Preprocess | None, data: GroupedDataset) -> Split:
    """``split`` with its inputs as the model takes them (``preprocess``, as the audit applies
    it), so the repaired artifact takes what the audited one takes."""
    if preprocess is None:
        return split
    return Split(preprocess.transform(data.mean, data.std)(split.x), split.y, split.g)


def _fp32(model: nn.Module | OnnxModel) -> Callable[[Tensor], Tensor]:
    return model.predict if isinstance(model, OnnxModel) else _torch_predict(model.eval())


def _judge(model, chosen: Candidate, test: Split, names, tolerance, n_bootstrap) -> Verdict:
    name = chosen.precision.name
    ref, _ = _logits(_fp32(model), test.x)
    got, _ = _logits(chosen.deployed.predict, test.x)
    samples = PerSample(
        y=test.y.numpy(),
        g=test.g.numpy(),
        predictions={"fp32": ref.argmax(1).numpy(), name: got.argmax(1).numpy()},
        losses={
            "fp32": per_sample_loss(ref, test.y).numpy(),
            name: per_sample_loss(got, test.y).numpy(),
        },
    )
    return verdict(samples, tolerance, group_names=names, n_bootstrap=n_bootstrap)


def repair(
    model: nn.Module | Any,
    data: GroupedDataset,
    precision: str | DeployedPrecision,
    *,
    tolerance: Tolerance | None = None,
    validation: Split | None = None,
    val_size: float | int | None = None,
    preprocess: Preprocess | None = None,
    calib_size: int = 256,
    random_state: int = 0,
    n_bootstrap: int = 1000,
    workdir: str | os.PathLike | None = None,
) -> RepairResult:
    """The cheapest repair of ``precision`` that keeps every group within ``tolerance`` on the
    validation split (module docstring), judged on ``data.test``.

    ``model``: an ``nn.Module``, an ONNX model (:class:`~fairquant.models.onnx.OnnxModel`), a
    :class:`~fairquant.models.load.LoadedModel` (what ``audit --model`` loads:
    :func:`fairquant._audit.load_target`) or a :class:`~fairquant.train.Checkpoint` (its
    validation split rebuilt exactly, :func:`~fairquant.train.held_out_validation`).
    ``validation`` is the split to select on, or ``val_size`` (fraction or count) carves one from
    ``data.train``. A model without a validation split (a module given none, a checkpoint trained
    without ``val_size``) has one carved from ``data.train``, ``val_size`` or else
    :data:`~fairquant.options.REPAIR_VAL_SIZE` of it, and the result's ``validation`` sentence
    (its first note) says so and that the model may have been trained on it. ``preprocess``: the
    input the model expects, applied to every split as the audit applies it (the artifact takes
    its output).
    Calibration samples (``calib_size``, seeded by ``random_state``) come from ``data.train``
    outside the validation split (all of it where ``validation`` is given).
    ``tolerance``: default 2 points for every group. Raises :class:`RepairUnreachable`
    naming the group and the smallest drop reached when no candidate is within tolerance.
    """
    start = time.perf_counter()
    base = _repairable(precision)
    if not isinstance(data, GroupedDataset):
        raise ConfigError(
            f"repair needs a GroupedDataset (train and test splits); got {type(data).__name__}"
        )
    tolerance = Tolerance() if tolerance is None else tolerance
    names = [str(a) for a in data.group_names]
    tolerance.check_groups(names)
    loaded: list[str] = []
    module, pool, split, note = _validation(_unwrap(model, loaded), data, validation, val_size)
    notes = [f"selected on {note}", *loaded]
    train, test, split = (_ready(s, preprocess, data) for s in (pool, data.test, split))
    sets = _calibration_sets(train, calib_size, notes)
    own = tempfile.TemporaryDirectory(prefix="fairquant-repair-") if workdir is None else None
    folder = Path(own.name if own is not None else workdir)
    source = (
        module
        if isinstance(module, OnnxModel)
        else export_onnx(module.eval(), train.x[:8], folder / "fp32.onnx")
    )
    options = {"workdir": folder, "calib_size": calib_size, "seed": random_state}
    bench = _Bench(module, source, train, split, names, tolerance, options)
    _search(bench, base, sets, notes)
    chosen = _best(bench.order, bench)
    if not chosen.within:
        raise _unreachable(bench)
    _smaller_file(chosen, bench, notes)
    chosen = _best(bench.order, bench)
    judged = _judge(module, chosen, test, names, tolerance, n_bootstrap)
    return RepairResult(
        precision=base.name,
        chosen=chosen,
        candidates=list(bench.order),
        tolerance=tolerance,
        verdict=judged,
        group_names=names,
        validation=note,
        evaluations=bench.evaluations,
        seconds=time.perf_counter() - start,
        notes=notes,
        ranking=bench.ranking_table,
        _workdir=own,
    )


def _calibration_sets(pool: Split, size: int, notes: list[str]) -> list[str]:
    if size < 1:
        raise ConfigError(f"calib_size {size!r}: expected at least 1 calibration sample")
    if size >= len(pool):
        notes.append(
            f"calibration: calib_size {size} >= the {len(pool)} training samples, so every "
            "calibration set is the whole training split; the calibration-set tier is skipped"
        )
        return ["random"]
    return list(CALIBRATION_SETS)
