"""Reports of a mitigation comparison: the papers' Tables 2/3/5 in form, the paired tests against
``none``, and a Pareto figure of overall accuracy against φ(D)."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from fairquant.experiments.findings import SEED_TESTED
from fairquant.experiments.mitigation import (
    MitigationComparison,
    comparison_table,
    pareto_points,
)
from fairquant.metrics.policy import CONFIDENCE, CORRECTION
from fairquant.report import pareto
from fairquant.report.tables import terminal_table


def _cell(value: float, low: float, high: float, *, digits: int = 1) -> str:
    """``value ±half-width`` of a symmetric (Student-t) interval, ``value [low, high]`` of
    another (one seed's bootstrap interval), or the value alone."""
    if math.isnan(value):
        return "-"
    if math.isnan(low):
        return f"{value:.{digits}f}"
    if math.isclose(value - low, high - value, rel_tol=1e-6, abs_tol=1e-12):
        return f"{value:.{digits}f}±{(high - low) / 2:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def mitigation_tables(comparison: MitigationComparison) -> list[Table]:
    """One table per method and requested precision: rows mitigations; columns per-group
    accuracy (%), overall accuracy (%), φ(D) and worst-group accuracy (%), each the mean across
    seeds with its Student-t interval (one seed: its bootstrap interval, if audited with one)."""
    n_seeds = len(set(comparison.results.seed))
    tables = []
    for method, precision in comparison.requested():
        wide = comparison_table(comparison, method, precision.name)
        if wide.empty:
            continue
        table = terminal_table(
            f"{method.upper() if method != 'none' else 'full precision'} {precision.name}: "
            f"{_title(n_seeds)}"
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
                value, low, high = (float(row[(q, s)]) for s in ("value", "ci_low", "ci_high"))
                cells.append(_cell(value, low, high, digits=3 if q == "phi" else 1))
            table.add_row(*cells, style="bold" if name == "none" else "")
        tables.append(table)
    return tables


def paired_tests_table(comparison: MitigationComparison) -> Table | None:
    """Each mitigation against ``none`` in the run directory's comparisons (``tests.csv``, the
    same as ``fairquant report``'s): the paired t-test across seeds, Holm-adjusted over every
    tested comparison of the run directory. ``None`` when nothing was tested (one seed)."""
    tests = comparison.tests
    if tests.empty:
        return None
    tested = tests[tests.test == SEED_TESTED]
    family = len(tested)
    rows = tested[tested.comparison == tested.mitigation + " vs none"]
    if rows.empty:
        return None
    table = terminal_table(
        "Paired tests across seeds, mitigation minus none (two-sided)",
        caption=f"difference: mean ± {CONFIDENCE:.0%} Student-t interval across seeds; p: paired "
        f"t-test across {int(rows.n_seeds.max())} seeds (the sign-flip p where every seed gave "
        f"the same difference); p {CORRECTION}: adjusted over the "
        f"{family} tested comparisons in tests.csv; sign-flip: exact sign-flip p (floor "
        f"2^(1-n)); d: Cohen's d_z. Bold: significant ({CORRECTION} p < α).",
    )
    columns = ("mitigation", "method", "precision", "metric", "difference", "p", f"p {CORRECTION}")
    for column in (*columns, "sign-flip", "d"):
        table.add_column(column, justify="left" if column == "mitigation" else "right")
    for r in rows.itertuples():
        p_holm = f"{r.p_holm:.3g}"
        table.add_row(
            r.mitigation,
            r.method,
            r.precision,
            r.metric,
            _cell(r.difference, r.ci_low, r.ci_high, digits=3),
            f"{r.p_value:.3g}",
            f"[bold green]{p_holm}[/]" if r.significant else p_holm,
            f"{r.p_sign_flip:.3g}",
            f"{r.effect_size:.2f}",
        )
    return table


def _title(n_seeds: int) -> str:
    if n_seeds > 1:
        return f"mean ± {CONFIDENCE:.0%} interval across {n_seeds} seed(s)"
    return f"one seed (with {CONFIDENCE:.0%} bootstrap interval over test samples, if audited so)"


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
        f"mean and {CONFIDENCE:.0%} interval over {n_seeds} seed(s)",
    )
