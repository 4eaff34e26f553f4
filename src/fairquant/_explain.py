"""Explain a disparity: the impact flow and the curvature factors per group and precision.

Every link of Bellam & Kim's chain (weights -> logits -> softmax -> loss and accuracy ->
gradient norm and largest Hessian eigenvalue) and the terms of Liu et al.'s bound (ICML 2025,
Theorem 4.1), per group and precision, with the rank correlation of each factor with group size
and with the accuracy drop.

**The bound, as read here.** With ``θ`` the full-precision weights of the quantized (Conv/Linear)
layers, ``δ = θ~ - θ`` the quantization error, ``g_a`` and ``H_a`` the gradient and Hessian of the
group's mean loss at ``θ``, a second-order Taylor expansion gives
``G(a) = g_aᵀδ + ½ δᵀH_aδ + O(||δ||³)``. Round-to-nearest bounds every ``|δ_i|`` by half its
layer's step, so ``||δ|| <= ½ √n s_max`` (``n``: number of quantized weights, ``s_max``: the largest
step over layers); Cauchy-Schwarz bounds the first term by ``½ √n s_max ||g_a||`` and, for a
positive semi-definite ``H_a``, ``δᵀH_aδ <= λ_max ||δ||² <= Tr(H_a) ||δ||²`` bounds the second by
``⅛ n s_max² Tr(H_a)``. ``factors`` reports both bound terms (``bound_grad``, ``bound_trace``), the
Taylor terms at the actual ``δ`` (``taylor_grad = g_aᵀδ``, ``taylor_hess = ½ δᵀH_aδ``) and the
measured ``G(a)`` (``excess_loss``) side by side. The bound needs a PSD Hessian; a trained
network's is not exactly PSD, which is one reason the bound can fail where ``Tr(H_a) < 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import torch
from torch import nn

from fairquant._io import atomic_write
from fairquant._progress import progress_bar
from fairquant.data.base import Split
from fairquant.errors import ConfigError
from fairquant.metrics.curvature import (
    Curvature,
    GroupCurvature,
    ProbeBudget,
    SampleCurvature,
    check_deterministic,
    curvature_table,
    group_traces,
    is_piecewise_linear,
)
from fairquant.metrics.diagnostics import flow_metrics, samples_frame
from fairquant.metrics.functional import group_counts
from fairquant.metrics.uncertainty import spearman_test
from fairquant.models.predict import predict_logits
from fairquant.quant.build import quantize
from fairquant.quant.precision import Precision, parse_precision
from fairquant.quant.stats import weight_delta, weight_histograms, weight_stats

#: The curvature factors whose rank correlations are reported.
FACTORS = ("grad_norm", "trace", "lambda_max")
#: Impact-flow metrics in :attr:`ExplainResult.flow`.
FLOW_METRICS = (
    "cosine_distance",
    "zero_logits",
    "logit_var",
    "softmax_var",
    "true_prob",
    "max_prob",
    "loss",
    "accuracy",
)


@dataclass
class ExplainResult:
    """The impact flow and curvature factors of a model at several precisions.

    ``factors``: one row per (precision, group): sizes, accuracy, drop, loss, ``excess_loss``
    (G(a)), ``grad_norm``, ``trace`` ± ``trace_se``, ``lambda_max`` and, for quantized precisions,
    the bound terms (module docstring). ``flow``: long (precision, group, metric, value) of
    :data:`FLOW_METRICS`. ``samples``: per-sample metrics behind the distributions. ``weights`` and
    ``histograms``: weight statistics per layer. ``correlations``: Spearman's rho of each factor
    with group size and accuracy drop, with its two-sided p-value (exact under 10 groups:
    :func:`~fairquant.metrics.uncertainty.spearman_test`).
    """

    factors: pd.DataFrame
    flow: pd.DataFrame
    samples: pd.DataFrame
    weights: pd.DataFrame
    histograms: pd.DataFrame
    correlations: pd.DataFrame
    precisions: list[Precision]
    group_names: list[str]
    notes: list[str] = field(default_factory=list)

    def to_csv(self, folder: str | Path) -> list[Path]:
        """Write ``factors.csv``, ``flow.csv``, ``weights.csv`` and ``correlations.csv``."""
        folder = Path(folder)
        return [
            atomic_write(folder / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
            for name, table in (
                ("factors", self.factors),
                ("flow", self.flow),
                ("weights", self.weights),
                ("correlations", self.correlations),
            )
        ]


def _curvature_subset(test: Split, k: int, cap: int | None, seed: int) -> Split:
    if cap is None:
        return test
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for a in range(k):
        idx = torch.nonzero(test.g == a).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:cap]])
    return test.subset(torch.cat(keep).sort().values)


def explain_model(
    model: nn.Module,
    test: Split,
    group_names: list[str],
    precisions: list[Precision],
    *,
    train_counts: list[int] | None = None,
    curvature: Curvature = "hessian",
    trace_method: Literal["split", "hutchpp"] = "split",
    piecewise_linear: bool | None = None,
    rtol: float = 0.05,
    max_probes: int = 100,
    sketch: int = 10,
    eig_rtol: float = 1e-2,
    eig_max_iter: int = 30,
    samples_per_group: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    show_progress: bool = True,
) -> ExplainResult:
    """Impact flow and curvature per group of ``model`` at fp32 and each of ``precisions``.

    Curvature: the trace by ``trace_method`` — ``"split"`` (default, fast): the exact per-group
    GGN trace plus a Hutchinson estimate of the residual ``H - G`` with probes shared by all
    groups (:func:`~fairquant.metrics.curvature.group_traces`; ``piecewise_linear=True`` takes the
    residual's trace as 0, exact for ReLU/BatchNorm networks; ``None``, the default, decides by
    :func:`~fairquant.metrics.curvature.is_piecewise_linear`: true for the registered models), or
    ``"hutchpp"`` per group — each to ``rtol`` relative standard error with at most
    ``max_probes`` probes; Lanczos ``λ_max`` to a residual of ``eig_rtol * λ`` or ``eig_max_iter``
    matvecs) is taken over the quantized layers' weights of each
    precision's model in float32 (fp16/bf16 copies are cast back to float32), on at most
    ``samples_per_group`` test samples per group (all by default); everything else uses the
    whole test split.
    """
    k = len(group_names)
    counts = group_counts(test.g, k)
    if train_counts is not None and len(train_counts) != k:
        raise ConfigError(f"train_counts has {len(train_counts)} entries for {k} groups")
    reference = parse_precision("fp32")
    order = [reference, *(p for p in precisions if p != reference)]
    notes = [
        f"group {group_names[a]!r} has no test samples: left out" for a in range(k) if not counts[a]
    ]
    check_deterministic(model, test.x[: min(len(test), 8)])
    sub = _curvature_subset(test, k, samples_per_group, seed)
    if samples_per_group is not None:
        notes.append(
            f"curvature on at most {samples_per_group} test samples per group "
            f"({len(sub)} of {len(test)})"
        )
    ref_logits = predict_logits(model, test.x, batch_size=batch_size)
    flow_rows, samples, factor_frames = [], [], []
    ref_op: GroupCurvature | None = None
    ref = ref_table = None
    with progress_bar("explain", len(order), enabled=show_progress) as advance:
        for p in order:
            advance(0, status=p.name)
            qmodel = quantize(model, p).module
            logits = predict_logits(qmodel, test.x, batch_size=batch_size)
            flow = flow_metrics(logits, ref_logits, test.y, test.g, k)
            flow["accuracy"] = 100.0 * flow.pop("correct")
            for a in range(k):
                if not counts[a]:
                    continue
                zero = int(flow["zero_logits"][a])
                if zero:
                    notes.append(
                        f"{p.name}: {zero} of {int(counts[a])} samples of group "
                        f"{group_names[a]!r} have all-zero logits (cosine distance undefined; "
                        "left out of its mean)"
                    )
                for metric in FLOW_METRICS:
                    value = float(flow[metric][a])
                    if not math.isnan(value):
                        flow_rows.append((p.name, p.bits, group_names[a], metric, value))
            samples.append(samples_frame(p.name, logits, test.y, test.g, group_names))
            op = GroupCurvature(qmodel.float(), sub.x, sub.y, sub.g, k, curvature=curvature)
            traces = None
            if trace_method == "split":
                traces = group_traces(
                    SampleCurvature(qmodel.float(), sub.x, sub.y, sub.g, k),
                    curvature=curvature,
                    budget=ProbeBudget(rtol=rtol, max_probes=max_probes, block=5),
                    piecewise_linear=(
                        is_piecewise_linear(qmodel)
                        if piecewise_linear is None
                        else piecewise_linear
                    ),
                    generator=torch.Generator().manual_seed(seed),
                )
            elif trace_method != "hutchpp":
                raise ConfigError(
                    f"trace_method must be 'split' or 'hutchpp'; got {trace_method!r}"
                )
            table = curvature_table(
                op,
                group_names,
                traces=traces,
                rtol=rtol,
                max_probes=max_probes,
                sketch=sketch,
                eig_rtol=eig_rtol,
                eig_max_iter=eig_max_iter,
                seed=seed,
            )
            table.index = [group_names.index(gname) for gname in table.group]
            if ref_op is None:
                ref_op, ref, ref_table = op, flow, table
            table.insert(0, "precision", p.name)
            idx = [group_names.index(gname) for gname in table.group]
            table = table.rename(columns={"n": "n_curvature", "loss": "loss_curvature"})
            table.insert(2, "n_test", [int(counts[a]) for a in idx])
            if train_counts is not None:
                table.insert(2, "n_train", [train_counts[a] for a in idx])
            table["accuracy"] = [float(flow["accuracy"][a]) for a in idx]
            table["accuracy_drop"] = [float(ref["accuracy"][a] - flow["accuracy"][a]) for a in idx]
            table["loss"] = [float(flow["loss"][a]) for a in idx]
            table["excess_loss"] = [float(flow["loss"][a] - ref["loss"][a]) for a in idx]
            if p.kind == "int":
                bound = _bound_terms(model, p, ref_op, ref_table, idx)
                table = pd.concat([table.reset_index(drop=True), bound], axis=1)
            factor_frames.append(table.reset_index(drop=True))
            advance(1)
    factors = pd.concat(factor_frames, ignore_index=True)
    flow_table = pd.DataFrame(flow_rows, columns=["precision", "bits", "group", "metric", "value"])
    correlations = _correlations(factors, order, notes)
    return ExplainResult(
        factors=factors,
        flow=flow_table,
        samples=pd.concat(samples, ignore_index=True),
        weights=weight_stats(model, order),
        histograms=weight_histograms(model, order),
        correlations=correlations,
        precisions=order,
        group_names=list(group_names),
        notes=notes,
    )


def _bound_terms(
    model: nn.Module, p: Precision, ref_op: GroupCurvature, ref: pd.DataFrame, idx: list[int]
) -> pd.DataFrame:
    """Theorem 4.1 terms from the fp32 curvature (``ref_op``, ``ref`` with a ``trace`` per group
    index) for the groups in ``idx`` (module docstring)."""
    total = weight_stats(model, [p]).set_index("layer").loc["all"]
    n, s_max = int(total.n), float(total.step)
    delta = weight_delta(model, p)
    rows = []
    for a in idx:
        g = ref_op.grads[a].double()
        bound_grad = 0.5 * math.sqrt(n) * s_max * g.norm().item()
        bound_trace = n * s_max**2 * float(ref.loc[a, "trace"]) / 8
        taylor_grad = torch.dot(g, delta.double()).item()
        taylor_hess = 0.5 * ref_op.quadratic_form(a, delta)
        rows.append(
            {
                "n_quantized": n,
                "s_max": s_max,
                "delta_norm": delta.norm().item(),
                "bound_grad": bound_grad,
                "bound_trace": bound_trace,
                "bound": bound_grad + bound_trace,
                "taylor_grad": taylor_grad,
                "taylor_hess": taylor_hess,
                "taylor": taylor_grad + taylor_hess,
            }
        )
    return pd.DataFrame(rows)


def _correlations(factors: pd.DataFrame, order: list[Precision], notes: list[str]) -> pd.DataFrame:
    """Spearman's rho of each factor with group size and with the accuracy drop, and its
    two-sided p-value (:func:`~fairquant.metrics.uncertainty.spearman_test`: exact permutation
    under 10 groups). Descriptive: nothing here is called significant, so no correction."""
    rows = []
    ref = factors[factors.precision == order[0].name].set_index("group")
    size = "n_train" if "n_train" in factors else "n_test"
    for p in order:
        here = factors[factors.precision == p.name].set_index("group")
        targets = {size: ref[size]}
        for q in order[1:] if p.is_reference else [p]:
            drop = factors[factors.precision == q.name].set_index("group")["accuracy_drop"]
            targets[f"accuracy_drop@{q.name}"] = drop
        for factor in FACTORS:
            for against, values in targets.items():
                x, y = here[factor], values.reindex(here.index)
                known = x.notna() & y.notna()
                x, y = x[known], y[known]
                if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
                    notes.append(
                        f"no rank correlation of {factor}@{p.name} with {against}: "
                        "fewer than 3 groups or a constant column"
                    )
                    continue
                rho, pval = spearman_test(x.to_numpy(), y.to_numpy())
                rows.append((p.name, factor, against, float(rho), float(pval), len(x)))
    return pd.DataFrame(
        rows, columns=["precision", "factor", "against", "rho", "p_value", "groups"]
    )


#: The public entry point, ``fairquant.explain``.
explain = explain_model
