"""Figures a person reads: per-group accuracy by precision (Bellam & Kim, Fig. 1)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, works without a display
import matplotlib.pyplot as plt

from fairquant._io import atomic_write
from fairquant.audit import AuditResult


def plot_group_accuracy(
    result: AuditResult,
    path: str | Path,
    *,
    train_counts: list[int] | None = None,
    title: str | None = None,
) -> Path:
    """One line per group, accuracy against precision, overall accuracy dashed; saved as PNG."""
    acc = result.by_group("accuracy")
    overall = result.overall()["accuracy"]
    x = list(range(len(acc.columns)))
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    cmap = plt.get_cmap("viridis", max(len(acc), 2))
    for i, (group, values) in enumerate(acc.iterrows()):
        label = str(group)
        if train_counts is not None:
            label += f" (n_train={train_counts[result.group_names.index(str(group))]})"
        ax.plot(x, values.to_numpy(), marker="o", color=cmap(i), label=label, linewidth=1.4)
    ax.plot(x, overall.to_numpy(), "k--", linewidth=2.2, label="all")
    ax.set_xticks(x, list(acc.columns))
    ax.set_xlabel("precision")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Per-group accuracy by precision")
    ax.legend(
        fontsize=7, title="group", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1)
    )
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
