"""Figures a person reads: per-group accuracy by precision (Bellam & Kim, Fig. 1)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fairquant._audit import AuditResult
from fairquant._io import atomic_write


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` as PNG, atomically (laid out tightly unless it has a layout
    engine of its own), and close it."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def plot_group_accuracy(
    result: AuditResult,
    path: str | Path,
    *,
    train_counts: list[int] | None = None,
    title: str | None = None,
) -> Path:
    """One line per group, accuracy against precision, overall accuracy dashed; saved as PNG."""
    acc = result.by_group("accuracy")
    labels = None
    if train_counts is not None:
        labels = [
            f"{g} (n_train={train_counts[result.group_names.index(str(g))]})" for g in acc.index
        ]
    return plot_accuracy_lines(acc, result.overall()["accuracy"], path, labels=labels, title=title)


def plot_accuracy_lines(
    accuracy: pd.DataFrame,
    overall: pd.Series,
    path: str | Path,
    *,
    low: pd.DataFrame | None = None,
    high: pd.DataFrame | None = None,
    labels: list[str] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Groups x precisions of accuracy (%) as one line a group, ``overall`` dashed; with
    ``low``/``high`` (same shape) each point gets its interval as an error bar, the groups
    side by side around each precision and the bars cut at 0 and 100 %."""
    x = list(range(len(accuracy.columns)))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=dpi)
    cmap = plt.get_cmap("viridis", max(len(accuracy), 2))
    shift = 0.25 / max(len(accuracy), 1)
    for i, (group, values) in enumerate(accuracy.iterrows()):
        label = labels[i] if labels is not None else str(group)
        ax.plot(x, values.to_numpy(), marker="o", color=cmap(i), label=label, linewidth=1.4)
        if low is not None and high is not None:
            v = values.to_numpy(float)
            lo = np.clip(low.loc[group].to_numpy(float), 0, 100)
            hi = np.clip(high.loc[group].to_numpy(float), 0, 100)
            xs = np.asarray(x, dtype=float) + (i - (len(accuracy) - 1) / 2) * shift
            ax.errorbar(
                xs,
                v,
                yerr=[np.maximum(v - lo, 0), np.maximum(hi - v, 0)],
                fmt="none",
                ecolor=cmap(i),
                alpha=0.6,
                elinewidth=1,
                capsize=2,
            )
    ax.plot(x, overall.to_numpy(), "k--", linewidth=2.2, label="all")
    ax.set_xticks(x, list(accuracy.columns))
    ax.set_xlabel("precision")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Per-group accuracy by precision")
    ax.legend(
        fontsize=7, title="group", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1)
    )
    return save_png(fig, path)
