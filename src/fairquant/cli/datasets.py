"""`fairquant datasets`: the registered datasets and their groups."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from fairquant.cli._app import (
    DataOptions,
    DataSeed,
    Group,
    Root,
    Target,
    app,
    console,
    data_spec,
    refuse_given,
    user_errors,
)
from fairquant.options import DATA_SEED


@app.command()
def datasets(
    ctx: typer.Context,
    dataset: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="Count this dataset's samples and show its coding (needs --root)."
        ),
    ] = None,
    root: Root = None,
    target: Target = None,
    group: Group = None,
    imbalance: Annotated[
        str,
        typer.Option(
            metavar="RATIOS", help="'paper', 'none' or ratios per class (training split)."
        ),
    ] = "none",
    data_seed: DataSeed = DATA_SEED,
    option: DataOptions = None,
) -> None:
    """List the datasets fairquant reads or, with --dataset and --root, count their samples."""
    from fairquant.data.registry import catalogue, describe

    with user_errors():
        if dataset is None:
            refuse_given(
                ctx,
                ("root", "target", "group", "imbalance", "data_seed", "option"),
                "without --dataset: they describe the dataset whose samples to count",
            )
            table = Table(title="Datasets (fairquant datasets --dataset NAME --root PATH)")
            for column in ("name", "reads", "attributes", "default target"):
                table.add_column(column)
            for row in catalogue():
                table.add_row(*row)
            console.print(table)
            return
        spec = data_spec(
            dataset,
            root=root,
            target=target,
            group=group,
            imbalance=imbalance,
            seed=data_seed,
            option=option,
        )
        counts, coding = describe(spec)
        table = Table(
            title=f"{dataset}{f' at {root}' if root else ''}: samples per split x target x group",
            title_justify="left",
        )
        table.add_column("target")
        table.add_column("group")
        for column in counts.columns:
            table.add_column(column, justify="right")
        for (t, g), row in counts.iterrows():
            table.add_row(str(t), str(g), *map(str, row))
        table.add_row("all", "all", *map(str, counts.sum()), style="bold")
        console.print(table)
        for what, attribute in (("classes", "target"), ("groups", "group")):
            codes = ", ".join(f"{code}={name}" for code, name in coding[what].items())
            console.print(f"{what} ({coding[attribute]}): {codes}", markup=False, highlight=False)
