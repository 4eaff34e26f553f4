"""Rich tables for the terminal: per-group accuracy by precision, with φ(D)."""

from __future__ import annotations

from rich import box
from rich.table import Table

from fairquant._audit import AuditResult


def terminal_table(title: str, *, caption: str | None = None) -> Table:
    """A rich table as fairquant prints them: title and caption on the left, a rule under the
    header, no padding at the edges."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption=caption,
        caption_justify="left",
    )


def _drop_style(drop: float) -> str:
    if drop >= 10:
        return "bold red"
    if drop >= 3:
        return "yellow"
    return ""


def accuracy_table(
    result: AuditResult, *, train_counts: list[int] | None = None, title: str | None = None
) -> Table:
    """Groups x precisions of test accuracy (%), drops vs fp32 coloured; overall and φ(D) below."""
    acc = result.by_group("accuracy")
    drop = result.by_group("accuracy_drop")
    n_test = result.by_group("n")
    overall = result.overall()
    table = terminal_table(
        title or "Per-group test accuracy (%) by precision",
        caption="train/test: samples per group; red: >=10 points below fp32, yellow: >=3; "
        "95% CI: group-stratified bootstrap over test samples",
    )
    table.add_column("group", style="bold", no_wrap=True, min_width=6)
    if train_counts is not None:
        table.add_column("train", justify="right", no_wrap=True, min_width=5)
    table.add_column("test", justify="right", no_wrap=True, min_width=4)
    for name in acc.columns:  # intervals fold onto a second line when the terminal is narrow
        table.add_column(name, justify="right", overflow="fold", min_width=5)
    for group in result.group_names:
        cells = [group]
        if train_counts is not None:
            cells.append(str(train_counts[result.group_names.index(group)]))
        if group not in acc.index:
            cells.append("0")
            cells += ["no samples"] * len(acc.columns)
            table.add_row(*cells, style="dim")
            continue
        cells.append(str(int(n_test.loc[group].iloc[0])))
        for name in acc.columns:
            d = drop.loc[group, name]
            style = _drop_style(d)
            text = f"{acc.loc[group, name]:.1f}"
            cells.append(f"[{style}]{text}[/]" if style else text)
        table.add_row(*cells)
    pad = [""] * (2 if train_counts is not None else 1)
    table.add_section()
    table.add_row("all", *pad, *(f"{v:.1f}" for v in overall["accuracy"]), style="bold")
    table.add_row("phi(D)", *pad, *(f"{v:.3f}" for v in overall["phi"]), style="bold magenta")
    _add_interval_rows(result, table, pad)
    sizes = overall.reindex(columns=["size_bytes"])["size_bytes"]  # none: an ONNX model
    if "artifact_bytes" in overall:  # a deployed precision: the size of its artifact on disk
        sizes = sizes.fillna(overall["artifact_bytes"])
    table.add_row("size KiB", *pad, *(f"{v / 1024:.1f}" for v in sizes))
    return table


def _add_interval_rows(result: AuditResult, table: Table, pad: list[str]) -> None:
    """Below φ(D): its bootstrap interval, then the accuracy gap and worst group with theirs."""
    rows = result.table[result.table.group == "all"].set_index(["metric", "precision"])
    names = [p.name for p in result.precisions]
    if rows.ci_low.isna().all():
        return

    def cells(metric: str, digits: int) -> list[str]:
        low, high = rows.loc[metric, "ci_low"], rows.loc[metric, "ci_high"]
        return [f"{low[n]:.{digits}f}–{high[n]:.{digits}f}" for n in names]

    table.add_row("  95% CI", *pad, *cells("phi", 2), style="magenta")
    table.add_row(
        "acc. gap", *pad, *(f"{rows.loc[('accuracy_gap', n), 'value']:.1f}" for n in names)
    )
    table.add_row("  95% CI", *pad, *cells("accuracy_gap", 0), style="dim")
    table.add_row(
        "worst group",
        *pad,
        *(f"{rows.loc[('worst_group_accuracy', n), 'value']:.1f}" for n in names),
    )
    table.add_row("  95% CI", *pad, *cells("worst_group_accuracy", 0), style="dim")
