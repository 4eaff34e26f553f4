"""``fairquant report``: one self-contained HTML file of a run directory, and its tables for papers.

The HTML embeds every figure as a base64 PNG ``data:`` URI and its CSS inline: it needs no
network, no other file and no JavaScript. Sections: what was found (plain words, with the test
behind each statement, :mod:`fairquant.report.summary`), the setup, per-group accuracy by
precision, the φ(D) table, the impact-flow and curvature factors (when ``explain/`` has factor
tables), the mitigation comparison with its Pareto figure (when there are several mitigations),
and how the numbers were computed. The same tables are written as Markdown and LaTeX beside it.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from fairquant._io import atomic_write
from fairquant.errors import ConfigError
from fairquant.experiments.findings import SEED_TESTED, findings, metric_words
from fairquant.metrics.frame import ALL
from fairquant.metrics.policy import ALPHA, CONFIDENCE
from fairquant.metrics.uncertainty import across_seeds
from fairquant.report.explain import plot_curvature_scatter, plot_factor_shares
from fairquant.report.export import to_latex, to_markdown
from fairquant.report.figures import plot_accuracy_lines
from fairquant.report.pareto import plot_pareto
from fairquant.report.rundir import RunDir, load_run
from fairquant.report.summary import CELL, describe_tests, headlines
from fairquant.report.verdict import VERDICT_JSON, read_verdict_json

FORMATS = ("html", "md", "tex")
#: Digits shown per metric (accuracy-type numbers are in %).
DIGITS = {"phi": 3, "accuracy": 1, "worst_group_accuracy": 1, "accuracy_gap": 1}
_DPI = 100
#: A deployed precision's rows of its accuracy table: the share of test samples (%) whose
#: predicted class equals fp32's, and its simulated twin's where the twin was audited too.
AGREEMENT = {"agreement_fp32": "agrees with fp32", "agreement_twin": "agrees with twin"}
_INTERVAL_WORDS = {
    "seeds": f"mean over seeds, {CONFIDENCE:.0%} Student-t interval across seeds",
    "bootstrap": (
        f"one seed, {CONFIDENCE:.0%} group-stratified bootstrap interval over test samples"
    ),
    "none": "one seed, no interval (audited without bootstrap)",
}
#: A deployed precision's name: ``toolchain:spec`` (:mod:`fairquant.quant.deployed`).
_DEPLOYED = r"^([a-z][a-z0-9_]*):"


@dataclass
class Table:
    """A table for the template, the Markdown and the LaTeX: text cells, an optional interval
    per cell (shown smaller in HTML, in brackets elsewhere)."""

    title: str
    columns: list[str]
    rows: list[list[tuple[str, str]]]
    caption: str = ""
    label: str = ""
    emphasise: list[bool] = field(default_factory=list)
    #: Leading columns (after the first) of text, aligned left.
    text_columns: int = 1

    def frame(self) -> pd.DataFrame:
        text = [[f"{v} {ci}".strip() for v, ci in row] for row in self.rows]
        return pd.DataFrame(text, columns=self.columns)


@dataclass
class Figure:
    title: str
    uri: str
    alt: str


def _fmt(value: float, digits: int) -> str:
    return "—" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _cell(row: pd.Series | None, digits: int) -> tuple[str, str]:
    """``(value, "[low, high]")`` of a summary row; ``("—", "")`` when there is none."""
    if row is None:
        return "—", ""
    ci = ""
    if not np.isnan(row.ci_low):
        ci = f"[{_fmt(row.ci_low, digits)}, {_fmt(row.ci_high, digits)}]"
    return _fmt(row.value, digits), ci


def _png(plot: Callable[[Path], Path], workdir: Path) -> str:
    """Draw with ``plot(path)`` into ``workdir`` and return the PNG as a ``data:`` URI."""
    path = plot(workdir / f"figure{len(list(workdir.iterdir()))}.png")
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _order(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _intervals(summary: pd.DataFrame, seeded: bool = True) -> str:
    kinds = _order(summary.interval)
    words = "; ".join(_INTERVAL_WORDS[k] for k in kinds)
    return words if seeded else words.replace("one seed", "one audited model")


def _deployed_methods(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with each deployed precision's method its toolchain: files written before
    audits did so hold ``ptq`` there (a deployed precision is the toolchain's artifact, not
    fairquant's post-training quantization)."""
    toolchain = results.precision.str.extract(_DEPLOYED, expand=False)
    old = toolchain.notna() & (results.method == "ptq")
    if not old.any():
        return results
    return results.assign(method=results.method.where(~old, toolchain))


def _method_precisions(cell: pd.DataFrame, method: str) -> list[str]:
    """fp32, then ``method``'s precisions in the order results.csv lists them."""
    reference = _order(cell[cell.method == "none"].precision)
    return reference + [
        p for p in _order(cell[cell.method == method].precision) if p not in reference
    ]


def _lookup(summary: pd.DataFrame) -> dict[tuple, pd.Series]:
    keys = ["dataset", "model", "mitigation", "method", "precision", "group", "metric"]
    return {tuple(r[k] for k in keys): r for _, r in summary.iterrows()}


def _accuracy_blocks(
    summary: pd.DataFrame, groups: dict[str, list[str]], workdir: Path, seeded: bool = True
) -> list[tuple[Table, Figure]]:
    """Per dataset, model, mitigation and method: groups x precisions of accuracy."""
    index = _lookup(summary)
    blocks = []
    for cell_key, cell in summary.groupby(CELL, sort=False):
        for method in [m for m in _order(cell.method) if m != "none"] or ["none"]:
            blocks.append(
                _accuracy_block(index, cell, cell_key, method, groups[cell_key[0]], workdir, seeded)
            )
    return blocks


def _accuracy_block(
    index: dict[tuple, pd.Series],
    cell: pd.DataFrame,
    cell_key: tuple[str, str, str],
    method: str,
    groups: list[str],
    workdir: Path,
    seeded: bool = True,
) -> tuple[Table, Figure]:
    dataset, model, mitigation = cell_key
    names = _method_precisions(cell, method)

    def key(precision: str, group: str, metric: str) -> pd.Series | None:
        m = "none" if precision == "fp32" else method
        return index.get((*cell_key, m, precision, group, metric))

    present = [g for g in groups if any(key(p, g, "accuracy") is not None for p in names)]
    rows, flags = [], []
    for g in [*present, ALL]:
        rows.append([(g, ""), *(_cell(key(p, g, "accuracy"), 1) for p in names)])
        flags.append(g == ALL)
    for metric, words in (
        ("worst_group_accuracy", "worst group"),
        ("accuracy_gap", "accuracy gap"),
        ("phi", "φ(D)"),
    ):
        rows.append([(words, ""), *(_cell(key(p, ALL, metric), DIGITS[metric]) for p in names)])
        flags.append(True)
    for metric, words in AGREEMENT.items():  # a deployed precision's: fp32 has none
        if any(key(p, ALL, metric) is not None for p in names):
            rows.append([(words, ""), *(_cell(key(p, ALL, metric), 1) for p in names)])
            flags.append(True)
    title = f"{dataset} · {model} · mitigation {mitigation} · {method}"
    table = Table(
        title=title,
        columns=["group", *names],
        rows=rows,
        caption=f"Test accuracy (%) per group; "
        f"{_intervals(cell[cell.method.isin([method, 'none'])], seeded)}.",
        label=f"tab:acc-{dataset}-{model}-{mitigation}-{method}",
        emphasise=flags,
    )

    def grid(column: str) -> pd.DataFrame:
        values = [
            [
                np.nan if key(p, g, "accuracy") is None else key(p, g, "accuracy")[column]
                for p in names
            ]
            for g in present
        ]
        return pd.DataFrame(values, index=present, columns=names, dtype=float)

    overall = pd.Series([key(p, ALL, "accuracy").value for p in names], index=names)
    uri = _png(
        lambda path: plot_accuracy_lines(
            grid("value"),
            overall,
            path,
            low=grid("ci_low"),
            high=grid("ci_high"),
            title=f"Per-group accuracy: {title}",
            dpi=_DPI,
        ),
        workdir,
    )
    return table, Figure(title, uri, f"per-group accuracy by precision, {title}")


def _phi_table(summary: pd.DataFrame, seeded: bool = True) -> Table:
    """φ(D) per dataset, model, mitigation and method (rows) and precision (columns); the
    number of training seeds too when the run has seeds."""
    phi = summary[(summary.metric == "phi") & (summary.group == ALL) & (summary.method != "none")]
    names = _order(phi.precision)
    rows = []
    for (dataset, model, mitigation, method), part in phi.groupby([*CELL, "method"], sort=False):
        by = {r.precision: r for _, r in part.iterrows()}
        seeds = "/".join(str(n) for n in _order(part.n_seeds.astype(str)))
        rows.append(
            [
                (dataset, ""),
                (model, ""),
                (mitigation, ""),
                (method, ""),
                *([(seeds, "")] if seeded else []),
                *(_cell(by.get(p), 3) for p in names),
            ]
        )
    return Table(
        title="φ(D) by precision",
        columns=[
            "dataset",
            "model",
            "mitigation",
            "method",
            *(["seeds"] if seeded else []),
            *names,
        ],
        text_columns=4,
        rows=rows,
        caption=(
            "φ(D) = max_a G(a) − min_a G(a), G(a) the excess loss of group a over fp32 (0 at fp32 "
            f"by definition, so not shown); {_intervals(phi, seeded)}."
        ),
        label="tab:phi",
    )


def _mitigation_tables(summary: pd.DataFrame, workdir: Path) -> list[tuple[Table, Figure]]:
    """Per dataset and model: mitigation x method x precision of accuracy, φ(D), worst group."""
    blocks = []
    metrics = ("accuracy", "phi", "worst_group_accuracy")
    overall = summary[(summary.group == ALL) & summary.metric.isin(metrics)]
    for (dataset, model), part in overall.groupby(["dataset", "model"], sort=False):
        if part.mitigation.nunique() < 2:
            continue
        rows, points = [], []
        for (mitigation, method, precision), here in part.groupby(
            ["mitigation", "method", "precision"], sort=False
        ):
            by = {r.metric: r for _, r in here.iterrows()}
            rows.append(
                [
                    (mitigation, ""),
                    (method, ""),
                    (precision, ""),
                    (str(int(here.n_seeds.max())), ""),
                    *(_cell(by.get(m), DIGITS[m]) for m in metrics),
                ]
            )
            if method != "none" and "phi" in by and "accuracy" in by:
                acc, phi = by["accuracy"], by["phi"]
                points.append(
                    {
                        "mitigation": mitigation,
                        "method": method,
                        "precision": precision,
                        "accuracy": acc.value,
                        "accuracy_low": acc.ci_low,
                        "accuracy_high": acc.ci_high,
                        "phi": phi.value,
                        "phi_low": phi.ci_low,
                        "phi_high": phi.ci_high,
                    }
                )
        title = f"{dataset} · {model}"
        table = Table(
            title=f"Mitigations: {title}",
            columns=[
                "mitigation",
                "method",
                "precision",
                "seeds",
                "accuracy (%)",
                "φ(D)",
                "worst group (%)",
            ],
            rows=rows,
            caption=f"Overall accuracy, φ(D) and worst-group accuracy; {_intervals(part)}.",
            label=f"tab:mitigation-{dataset}-{model}",
            text_columns=3,
        )
        frame = pd.DataFrame(points)
        uri = _png(
            lambda path, frame=frame, title=title: plot_pareto(
                frame, path, title=f"Accuracy vs φ(D) by mitigation: {title}"
            ),
            workdir,
        )
        blocks.append((table, Figure(title, uri, f"Pareto figure of accuracy vs phi, {title}")))
    return blocks


def _factor_blocks(run: RunDir, workdir: Path) -> list[tuple[Table, list[Figure]]]:
    """Per factor table of ``explain/``: the factor shares, the curvature scatter, the table."""
    blocks = []
    for (dataset, model, mitigation, seed), factors in run.factors.items():
        names = _order(factors.precision)
        title = f"{dataset} · {model} · mitigation {mitigation} · seed {seed}"
        figures = [
            Figure(
                f"Factor shares at {names[0]}",
                _png(
                    lambda p, f=factors, r=names[0]: plot_factor_shares(
                        f, p, reference=r, dpi=_DPI
                    ),
                    workdir,
                ),
                f"curvature factor shares vs group size, {title}",
            ),
            Figure(
                "Gradient norm vs λ_max vs accuracy",
                _png(
                    lambda p, f=factors, n=names: plot_curvature_scatter(
                        f, p, precisions=n, dpi=_DPI
                    ),
                    workdir,
                ),
                f"gradient norm vs largest eigenvalue per group, {title}",
            ),
        ]
        columns = {
            "precision": "precision",
            "group": "group",
            "n_train": "n train",
            "n_test": "n test",
            "accuracy": "accuracy (%)",
            "excess_loss": "G(a)",
            "grad_norm": "‖g_a‖",
            "trace": "Tr(H_a)",
            "trace_se": "± se",
            "lambda_max": "λ_max",
            "taylor": "Taylor",
            "bound": "bound",
        }
        shown = [c for c in columns if c in factors.columns]
        rows = []
        for _, r in factors.iterrows():
            cells = []
            for c in shown:
                v = r[c]
                if isinstance(v, str):
                    cells.append((v, ""))
                elif c.startswith("n_"):
                    cells.append((str(int(v)), ""))
                else:
                    cells.append(("—" if pd.isna(v) else f"{v:.4g}", ""))
            rows.append(cells)
        table = Table(
            title=f"Curvature factors: {title}",
            columns=[columns[c] for c in shown],
            rows=rows,
            caption="G(a): excess loss over fp32; ‖g_a‖, Tr(H_a) ± its standard error and λ_max "
            "of the loss of group a over the quantized weights; Taylor: g·δ + ½δᵀHδ at the "
            "actual error δ; bound: Liu et al. Thm 4.1 (integer precisions only).",
            label=f"tab:factors-{dataset}-{model}-{mitigation}-{seed}",
            text_columns=2,
        )
        blocks.append((table, figures))
    return blocks


def _other_tables(run: RunDir) -> tuple[list[Table], list[str]]:
    """The further CSV tables of ``explain/``, and a note for each that only stacks the factor
    tables already shown (it has the cell keys, e.g. ``curvature.csv``)."""
    tables, notes = [], []
    for name, frame in run.tables.items():
        if {"dataset", "model", "mitigation", "seed"} <= set(frame.columns):
            notes.append(
                f"explain/{name}.csv holds the {len(frame):,} rows of the factor tables above "
                "with their cell keys; not repeated here."
            )
            continue
        rows = [
            [(f"{v:.4g}" if isinstance(v, float) else str(v), "") for v in row]
            for row in frame.itertuples(index=False)
        ]
        tables.append(Table(f"explain/{name}.csv", [str(c) for c in frame.columns], rows))
    return tables, notes


def _setup(run: RunDir) -> list[tuple[str, str]]:
    """What results.csv holds, in words."""
    r = run.results
    seeded = _seeded(run)

    def listed(column: str) -> str:
        return ", ".join(map(str, _order(r[column])))

    facts = [
        ("datasets", listed("dataset")),
        ("models", listed("model")),
        ("mitigations", listed("mitigation")),
        (
            ("seeds", f"{r.seed.nunique()} ({listed('seed')})")
            if seeded
            else ("training", "none in this run: one model, audited as given")
        ),
    ]
    for method in _order(r.method):
        facts.append((f"precisions ({method})", ", ".join(_order(r[r.method == method].precision))))
    for dataset, part in r.groupby("dataset", sort=False):
        groups = _order(part[part.group != ALL].group)
        n = part[(part.metric == "n") & (part.precision == "fp32") & (part.group != ALL)]
        sizes = n.drop_duplicates("group").set_index("group").value
        text = ", ".join(f"{g} ({int(sizes[g])})" if g in sizes.index else g for g in groups)
        facts.append((f"groups of {dataset} (test samples)", text))
    facts.append(("rows of results.csv", f"{len(r):,}"))
    for key, value in run.defaults.items():
        if key != "seed":  # no seed column: no training seeds, said above
            facts.append((f"{key} (not in results.csv)", f"taken as {value!r} throughout"))
    return facts


def _seeded(run: RunDir) -> bool:
    """Whether the run has training seeds: results.csv has a ``seed`` column (an audit's has
    none: it audits one model as given)."""
    return "seed" not in run.defaults


def _extremes(summary: pd.DataFrame, dataset: str, model: str) -> list[str]:
    """The largest φ(D) and the lowest worst-group accuracy of a dataset and model, in words."""
    here = summary[(summary.dataset == dataset) & (summary.model == model) & (summary.group == ALL)]
    several = here.mitigation.nunique() > 1
    lines = []
    for metric, pick, words in (
        ("phi", "idxmax", "Largest φ(D)"),
        ("worst_group_accuracy", "idxmin", "Lowest worst-group accuracy"),
    ):
        rows = here[here.metric == metric]
        if rows.empty:
            continue
        r = rows.loc[getattr(rows.value, pick)()]
        where = r.precision if r.method == "none" else f"{r.method} {r.precision}"
        if several:
            where += f", mitigation {r.mitigation}"
        interval = "" if np.isnan(r.ci_low) else f" [{r.ci_low:.3g}, {r.ci_high:.3g}]"
        lines.append(f"{words}: {r.value:.3g}{interval} at {where}.")
    return lines


def _findings(results: pd.DataFrame, summary: pd.DataFrame, seeded: bool = True) -> list[dict]:
    """Per dataset and model: a headline, plain-word lines, the significant statements and the
    table of every comparison."""
    table = findings(results)
    family = int((table.test == SEED_TESTED).sum())
    out = []
    for (dataset, model), part in table.groupby(["dataset", "model"], sort=False):
        headline, caption = describe_tests(part, family, seeded=seeded)
        rows = []
        for _, r in part.iterrows():
            ci = "" if np.isnan(r.ci_low) else f"[{r.ci_low:+.3g}, {r.ci_high:+.3g}]"
            rows.append(
                [
                    (r.comparison, ""),
                    (r.mitigation, ""),
                    (metric_words(r.metric), ""),
                    (f"{r.candidate} vs {r.baseline}", ""),
                    (r.verdict, ""),
                    (f"{r.difference:+.3g}", ci),
                    (
                        ("—", "")
                        if np.isnan(r.p_value)
                        else (f"{r.p_holm:.3g}", f"unadjusted {r.p_value:.3g}")
                    ),
                    (f"{r.mean_candidate:.3g} vs {r.mean_baseline:.3g}", ""),
                ]
            )
        out.append(
            {
                "title": f"{dataset} · {model}",
                "headline": headline,
                "lines": _extremes(summary, dataset, model) + headlines(part, seeded=seeded),
                "significant": list(part[part.significant].text),
                "table": Table(
                    title=f"Every comparison: {dataset} · {model}",
                    columns=[
                        "comparison",
                        "mitigation",
                        "metric",
                        "candidate vs baseline",
                        "verdict",
                        "difference",
                        "p (Holm)",
                        "means",
                    ],
                    text_columns=5,
                    rows=rows,
                    caption=caption,
                    emphasise=list(part.significant),
                ),
            }
        )
    return out


def _markdown(tables: list[Table], title: str) -> str:
    parts = [f"# {title}", ""]
    for t in tables:
        parts += [f"## {t.title}", "", to_markdown(t.frame()), ""]
        if t.caption:
            parts += [t.caption, ""]
    return "\n".join(parts)


def _latex(tables: list[Table], title: str) -> str:
    parts = [f"% {title}: tables written by `fairquant report`; needs \\usepackage{{booktabs}}"]
    for t in tables:
        parts.append(to_latex(t.frame(), caption=f"{t.title}. {t.caption}", label=t.label))
    return "\n".join(parts)


def parse_formats(text: str) -> list[str]:
    """``"html,md"`` -> ``["html", "md"]``, refusing unknown formats.

    >>> parse_formats("html, tex")
    ['html', 'tex']
    """
    formats = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"--format {text!r}: expected a comma-separated subset of {FORMATS}")
    return formats


def write_report(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
) -> list[Path]:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``), and its
    tables as ``.md`` and ``.tex`` beside it (same stem), for each of ``formats``."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"formats {list(formats)}: expected a non-empty subset of {FORMATS}")
    run = load_run(run_dir)
    run = replace(run, results=_deployed_methods(run.results))
    seeded = _seeded(run)
    out = Path(out) if out is not None else run.path / "report.html"
    if out.suffix != ".html":
        raise ConfigError(f"--out {out}: expected a file name ending in .html")
    summary = across_seeds(run.results)
    groups = {
        d: _order(part[part.group != ALL].group)
        for d, part in run.results.groupby("dataset", sort=False)
    }
    title = f"fairquant report: {run.path.resolve().name}"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        accuracy = _accuracy_blocks(summary, groups, workdir, seeded)
        phi = _phi_table(summary, seeded)
        mitigation = _mitigation_tables(summary, workdir)
        factors = _factor_blocks(run, workdir)
    tables = [phi, *(t for t, _ in mitigation), *(t for t, _ in accuracy), *(t for t, _ in factors)]
    other_tables, explain_notes = _other_tables(run)
    written = []
    if "html" in formats:
        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        template = env.from_string(
            files("fairquant.report").joinpath("templates/report.html.j2").read_text("utf-8")
        )
        html = template.render(
            title=title,
            run_dir=str(run.path.resolve()),
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            findings=_findings(run.results, summary, seeded),
            seeded=seeded,
            verdict=(
                read_verdict_json(run.path / VERDICT_JSON)
                if (run.path / VERDICT_JSON).is_file()
                else None
            ),
            setup=_setup(run),
            setup_files=run.setup,
            run_notes=run.notes,
            accuracy=accuracy,
            phi=phi,
            mitigation=mitigation,
            factors=factors,
            other_tables=other_tables,
            explain_notes=explain_notes,
            companions=[out.with_suffix(f".{f}").name for f in formats if f != "html"],
            alpha=ALPHA,
        )
        written.append(atomic_write(out, lambda tmp: tmp.write_text(html, encoding="utf-8")))
    if "md" in formats:
        text = _markdown(tables, title)
        written.append(
            atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(text, "utf-8"))
        )
    if "tex" in formats:
        text = _latex(tables, title)
        written.append(
            atomic_write(out.with_suffix(".tex"), lambda tmp: tmp.write_text(text, "utf-8"))
        )
    return written
