"""Figures and the terminal table of an explanation (:mod:`fairquant._explain`).

Proportions of gradient norm, trace and group size (Liu et al., Fig. 2); logit variance and
true-class probability (DTDB) distributions by precision (Bellam & Kim, Figs. 3-4); gradient norm
vs ``λ_max`` vs accuracy (Bellam & Kim, Fig. 6); weight error and induced sparsity by precision
(Bellam & Kim, Fig. 2).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from rich.table import Table

from fairquant._explain import ExplainResult
from fairquant.report.figures import save_png
from fairquant.report.tables import terminal_table


def plot_factor_proportions(result: ExplainResult, path: str | Path) -> Path:
    """Per group, its share of the summed gradient norm, Hessian trace and group size at fp32."""
    return plot_factor_shares(result.factors, path, reference=result.precisions[0].name)


def plot_factor_shares(
    factors: pd.DataFrame, path: str | Path, *, reference: str = "fp32", dpi: int = 120
) -> Path:
    """:func:`plot_factor_proportions` from a factor table (e.g. read back from CSV)."""
    ref = factors[factors.precision == reference]
    size = "n_train" if "n_train" in ref else "n_test"
    shares = {
        "gradient norm ||g_a||": ref.grad_norm,
        "Hessian trace Tr(H_a)": ref.trace,
        f"group size ({size})": ref[size],
    }
    x = np.arange(len(ref))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(ref) + 3), 4), dpi=dpi)
    width = 0.8 / len(shares)
    for i, (label, values) in enumerate(shares.items()):
        v = values.to_numpy(dtype=float)
        ax.bar(x + (i - 1) * width, 100 * v / np.abs(v).sum(), width, label=label)
    ax.set_xticks(x, list(ref.group))
    ax.set_xlabel("group")
    ax.set_ylabel("share of the sum over groups (%)")
    ax.set_title(f"Curvature factors vs group size at {reference} (cf. Liu et al. Fig. 2)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path)


def plot_output_distributions(result: ExplainResult, path: str | Path) -> Path:
    """Box plots per group of logit variance and true-class probability, one colour a precision."""
    s = result.samples
    groups = [g for g in result.group_names if g in set(s.group)]
    names = [p.name for p in result.precisions]
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.9 * len(groups) + 3), 7), dpi=120)
    cmap = plt.get_cmap("viridis", max(len(names), 2))
    width = 0.8 / len(names)
    for ax, metric, label in (
        (axes[0], "logit_var", "logit variance (over classes)"),
        (axes[1], "true_prob", "softmax prob. of the true class (DTDB)"),
    ):
        for i, name in enumerate(names):
            data = [s[(s.precision == name) & (s.group == g)][metric].to_numpy() for g in groups]
            pos = np.arange(len(groups)) + (i - (len(names) - 1) / 2) * width
            bp = ax.boxplot(
                data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=False
            )
            for patch in bp["boxes"]:
                patch.set_facecolor(cmap(i))
                patch.set_alpha(0.8)
            ax.plot([], [], "s", color=cmap(i), label=name)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, title="precision", title_fontsize=8, loc="lower left")
    axes[0].set_yscale("log")
    axes[1].set_xlabel("group")
    axes[0].set_title("Logit variance and distance to the decision boundary (cf. Bellam & Kim)")
    return save_png(fig, path)


def plot_curvature_accuracy(result: ExplainResult, path: str | Path) -> Path:
    """Per precision, gradient norm vs ``λ_max`` per group, coloured by accuracy (Fig. 6)."""
    return plot_curvature_scatter(
        result.factors, path, precisions=[p.name for p in result.precisions]
    )


def plot_curvature_scatter(
    factors: pd.DataFrame, path: str | Path, *, precisions: list[str], dpi: int = 120
) -> Path:
    """:func:`plot_curvature_accuracy` from a factor table (e.g. read back from CSV)."""
    f = factors
    names = precisions
    fig, axes = plt.subplots(
        1,
        len(names),
        figsize=(4.2 * len(names) + 1, 4),
        dpi=dpi,
        squeeze=False,
        layout="constrained",
    )
    for ax, name in zip(axes[0], names, strict=True):
        here = f[f.precision == name]
        sc = ax.scatter(
            here.grad_norm, here.lambda_max, c=here.accuracy, cmap="RdYlGn", vmin=0, vmax=100, s=60
        )
        for _, row in here.iterrows():
            ax.annotate(
                str(row.group),
                (row.grad_norm, row.lambda_max),
                fontsize=8,
                xytext=(4, 3),
                textcoords="offset points",
            )
        ax.set_xlabel("gradient norm ||g_a||")
        ax.set_ylabel("largest Hessian eigenvalue")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.colorbar(sc, ax=axes[0].tolist(), label="test accuracy (%)")
    fig.suptitle("Gradient norm vs λ_max vs accuracy per group (cf. Bellam & Kim Fig. 6)")
    return save_png(fig, path)


def plot_weight_stats(result: ExplainResult, path: str | Path) -> Path:
    """Weight error ``Σ|w~ - w|``, induced sparsity and the weight histogram by precision."""
    w = result.weights[result.weights.layer == "all"].set_index("precision")
    names = [p.name for p in result.precisions]
    w = w.reindex(names)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=120)
    bars = axes[0].bar(names, w.abs_error_sum)
    axes[0].bar_label(bars, fmt="%.3g", fontsize=8)
    axes[0].set_ylabel("sum |w~ - w| over quantized weights")
    bars = axes[1].bar(names, 100 * w.induced_sparsity)
    axes[1].bar_label(bars, fmt="%.2f", fontsize=8)
    axes[1].set_ylabel("weights set to zero by quantization (%)")
    h = result.histograms
    for name in names:
        part = h[h.precision == name]
        centres = (part.left + part.right) / 2
        axes[2].plot(centres, part["count"].clip(lower=0.5), label=name, drawstyle="steps-mid")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("weight value")
    axes[2].set_ylabel("count")
    axes[2].legend(fontsize=8)
    for ax in axes[:2]:
        ax.set_xlabel("precision")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("What quantization does to the weights (cf. Bellam & Kim Fig. 2)")
    return save_png(fig, path)


def plot_explanation(result: ExplainResult, folder: str | Path) -> list[Path]:
    """All four figures into ``folder``."""
    folder = Path(folder)
    return [
        plot_factor_proportions(result, folder / "factor_proportions.png"),
        plot_output_distributions(result, folder / "output_distributions.png"),
        plot_curvature_accuracy(result, folder / "curvature_accuracy.png"),
        plot_weight_stats(result, folder / "weight_stats.png"),
    ]


def factor_table(result: ExplainResult, *, title: str | None = None) -> Table:
    """Per precision and group: size, accuracy, G(a), ||g_a||, Tr(H_a) ± se, λ_max, bound terms."""
    f = result.factors
    bound = "bound" in f
    table = terminal_table(
        title or "Curvature factors per group",
        caption="G(a): excess loss over fp32; bound: Liu et al. Thm 4.1 at fp32 curvature; "
        "taylor: g·δ + ½δᵀHδ at the actual δ",
    )
    cols = [
        "precision",
        "group",
        "n_train" if "n_train" in f else "n_test",
        "accuracy",
        "G(a)",
        "grad_norm",
        "trace",
        "trace_se",
        "lambda_max",
    ]
    if bound:
        cols += ["taylor", "bound"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("precision", "group") else "right")
    for _, row in f.iterrows():
        cells = []
        for c in cols:
            v = row.get("excess_loss" if c == "G(a)" else c)
            if isinstance(v, str):
                cells.append(v)
            elif v is None or (isinstance(v, float) and np.isnan(v)):
                cells.append("")
            elif c.startswith("n_"):
                cells.append(str(int(v)))
            else:
                cells.append(f"{v:.4g}")
        table.add_row(*cells)
    return table
