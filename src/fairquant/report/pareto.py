"""The accuracy-fairness trade-off of mitigations: overall accuracy against φ(D)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fairquant.errors import ConfigError
from fairquant.metrics.functional import pareto_front
from fairquant.report.figures import save_png

_MARKERS = "osD^vP*X"


def plot_pareto(summary: pd.DataFrame, path: str | Path, *, title: str | None = None) -> Path:
    """Overall accuracy (x) against φ(D) (y), one colour a mitigation, one marker a method.

    ``summary`` has one row per point with columns ``mitigation``, ``method``, ``precision``,
    ``accuracy`` and ``phi``, and optionally the interval bounds ``accuracy_low``,
    ``accuracy_high``, ``phi_low``, ``phi_high`` (drawn as error bars). Points on the Pareto
    front (higher accuracy and lower φ(D) are better) are joined by a grey step line; each point
    is labelled with its precision.
    """
    needed = {"mitigation", "method", "precision", "accuracy", "phi"}
    if needed - set(summary.columns):
        raise ConfigError(
            f"plot_pareto needs the columns {sorted(needed)}; missing "
            f"{sorted(needed - set(summary.columns))}"
        )
    if summary.empty:
        raise ConfigError("plot_pareto got no points")
    mitigations = list(dict.fromkeys(summary.mitigation))
    methods = list(dict.fromkeys(summary.method))
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for _, row in summary.iterrows():
        colour = colours(mitigations.index(row.mitigation) % 10)
        marker = _MARKERS[methods.index(row.method) % len(_MARKERS)]
        xerr = yerr = None
        # bars are cut to what the quantity can be (accuracy in [0, 100], φ(D) >= 0): few-seed
        # Student-t intervals run past both and would otherwise set the axes
        if {"accuracy_low", "accuracy_high"} <= set(row.index) and not np.isnan(row.accuracy_low):
            low, high = max(row.accuracy_low, 0.0), min(row.accuracy_high, 100.0)
            xerr = [[row.accuracy - low], [high - row.accuracy]]
        if {"phi_low", "phi_high"} <= set(row.index) and not np.isnan(row.phi_low):
            yerr = [[row.phi - max(row.phi_low, 0.0)], [row.phi_high - row.phi]]
        ax.errorbar(
            row.accuracy,
            row.phi,
            xerr=xerr,
            yerr=yerr,
            fmt=marker,
            color=colour,
            ecolor=colour,
            elinewidth=0.8,
            alpha=0.85,
            markersize=7,
            capsize=2,
        )
        ax.annotate(
            str(row.precision),
            (row.accuracy, row.phi),
            fontsize=7,
            xytext=(5, 4),
            textcoords="offset points",
        )
    front = summary[pareto_front(summary.accuracy.to_numpy(), summary.phi.to_numpy())]
    front = front.sort_values("accuracy")
    ax.step(
        front.accuracy,
        front.phi,
        where="post",
        color="grey",
        linewidth=1,
        alpha=0.7,
        zorder=0,
        label="Pareto front",
    )
    for i, m in enumerate(mitigations):
        ax.plot([], [], "s", color=colours(i % 10), label=f"mitigation: {m}")
    for i, m in enumerate(methods):
        ax.plot([], [], _MARKERS[i % len(_MARKERS)], color="black", label=f"method: {m}")
    ax.set_xlabel("overall test accuracy (%)  →  better   (interval bars cut to possible values)")
    ax.set_ylabel("φ(D) = max G(a) − min G(a)  (lower is fairer)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(title or "Accuracy vs φ(D) by mitigation")
    return save_png(fig, path)
