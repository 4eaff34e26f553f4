"""`fairquant datasets`: the registered datasets and their groups."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from fairquant.cli._app import (
    DataOptions,
    Group,
    Root,
    Target,
    app,
    console,
    data_spec,
    user_errors,
)
from fairquant.data.registry import SOURCES, get_source


@app.command()
def datasets(
    dataset: Annotated[
        str | None, typer.Option(help="Count this dataset's samples (needs --root).")
    ] = None,
    root: Root = None,
    target: Target = None,
    group: Group = None,
    imbalance: Annotated[
        str, typer.Option(help="'paper', 'none' or ratios per class (training split).")
    ] = "none",
    seed: Annotated[int, typer.Option()] = 0,
    option: DataOptions = None,
) -> None:
    """List the datasets fairquant reads or, with --dataset and --root, count their samples."""
    with user_errors():
        if dataset is None:
            table = Table(title="Datasets (fairquant datasets --dataset NAME --root PATH)")
            for column in ("name", "reads", "attributes", "default target"):
                table.add_column(column)
            table.add_row("digits", "scikit-learn's bundled 8x8 digits (no root)", "digit", "digit")
            for source in SOURCES.values():
                table.add_row(
                    source.name, source.description, source.attribute_help, source.default_target
                )
            console.print(table)
            return
        source = get_source(dataset)
        spec = data_spec(
            dataset,
            root=root,
            target=target,
            group=group,
            imbalance=imbalance,
            seed=seed,
            option=option,
        )
        counts = source.counts(spec)
        wide = counts.pivot_table(
            index=["target", "group"], columns="split", values="n", fill_value=0, sort=False
        )
        splits = [s for s in ("train", "test") if s in wide.columns]
        table = Table(
            title=f"{dataset} at {root}: samples per split x target x group",
            title_justify="left",
        )
        table.add_column("target")
        table.add_column("group")
        for column in (*splits, "total"):
            table.add_column(column, justify="right")
        for (t, g), row in wide.iterrows():
            values = [int(row[s]) for s in splits]
            table.add_row(str(t), str(g), *map(str, values), str(sum(values)))
        totals = [int(wide[s].sum()) for s in splits]
        table.add_row("all", "all", *map(str, totals), str(sum(totals)), style="bold")
        console.print(table)
