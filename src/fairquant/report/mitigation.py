"""Reports of a mitigation comparison: the papers' Tables 2/3/5 in form, the paired tests against
``none``, and a Pareto figure of overall accuracy against φ(D)."""

from __future__ import annotations

import math
from pathlib import Path

from rich import box
from rich.table import Table

from fairquant.experiments.mitigation import (
    MitigationComparison,
    comparison_table,
    pareto_points,
)
from fairquant.report import pareto


def _cell(mean: float, low: float, high: float, *, digits: int = 1) -> str:
    """``mean ±half-width`` of a symmetric (Student-t) interval, or the mean alone."""
    if math.isnan(mean):
        return "-"
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}±{(high - low) / 2:.{digits}f}"


def mitigation_tables(comparison: MitigationComparison) -> list[Table]:
    """One table per method and requested precision: rows mitigations; columns per-group
    accuracy (%), overall accuracy (%), φ(D) and worst-group accuracy (%), each the mean across
    seeds with its 95% Student-t interval."""
    n_seeds = len(set(comparison.results.seed))
    tables = []
    for method, precision in comparison.requested():
        wide = comparison_table(comparison, method, precision.name)
        if wide.empty:
            continue
        table = Table(
            title=f"{method.upper() if method != 'none' else 'full precision'} {precision.name}: "
            f"mean ± 95% interval across {n_seeds} seed(s)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        table.add_column("mitigation", style="bold", no_wrap=True)
        table.add_column("ran as", no_wrap=True)
        quantities = [*comparison.group_names, "overall", "phi", "worst_group_accuracy"]
        headers = {"overall": "all", "phi": "φ(D)", "worst_group_accuracy": "worst group"}
        for q in quantities:
            table.add_column(headers.get(q, q), justify="right", overflow="fold")
        for name, row in wide.iterrows():
            cells = [str(name), str(row[("precision", "")])]
            for q in quantities:
                mean, low, high = (float(row[(q, s)]) for s in ("mean", "ci_low", "ci_high"))
                cells.append(_cell(mean, low, high, digits=3 if q == "phi" else 1))
            table.add_row(*cells, style="bold" if name == "none" else "")
        tables.append(table)
    return tables


def paired_tests_table(comparison: MitigationComparison) -> Table | None:
    """The paired sign-flip tests across seeds of each mitigation against ``none``."""
    tests = comparison.tests
    if tests.empty:
        return None
    table = Table(
        title="Paired tests across seeds, mitigation minus none (φ(D): lower? accuracy: "
        "different? worst group: higher?)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption=f"p: exact sign-flip permutation p-value over seeds (smallest possible with "
        f"{int(tests.n_seeds.max())} seeds: {tests.min_p_value.min():.3f}); d: Cohen's d_z",
        caption_justify="left",
    )
    for column in ("mitigation", "method", "precision", "metric", "difference", "p", "d"):
        table.add_column(column, justify="left" if column == "mitigation" else "right")
    for r in tests.itertuples():
        p_style = "bold green" if r.p_value <= 0.05 else ""
        table.add_row(
            r.mitigation,
            r.method,
            r.precision,
            r.metric,
            _cell(r.difference, r.ci_low, r.ci_high, digits=3),
            f"[{p_style}]{r.p_value:.3f}[/]" if p_style else f"{r.p_value:.3f}",
            f"{r.effect_size:.2f}",
        )
    return table


def plot_pareto(comparison: MitigationComparison, path: str | Path) -> Path:
    """Overall accuracy against φ(D), one point per mitigation x method x precision, with
    intervals across seeds as error bars (:func:`fairquant.report.pareto.plot_pareto`). fp32
    points sit at φ(D) = 0 by definition."""
    n_seeds = len(set(comparison.results.seed))
    return pareto.plot_pareto(
        pareto_points(comparison),
        path,
        title=f"{comparison.config.datasets[0].key}, {comparison.config.models[0].key}: "
        f"accuracy vs φ(D), "
        f"mean and 95% interval over {n_seeds} seed(s)",
    )
