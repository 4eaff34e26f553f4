"""`fairquant datasets`: the registered datasets and their groups."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from fairquant.cli._app import (
    DATA_OPTIONS,
    app,
    console,
    data_options,
    refuse_given,
    user_errors,
)
from fairquant.options import DataOptions

if TYPE_CHECKING:
    import pandas as pd

DatasetToCount = Annotated[
    str | None,
    typer.Option(
        metavar="NAME", help="Count this dataset's samples and show its coding (needs --root)."
    ),
]
TrainingImbalance = Annotated[
    str,
    typer.Option(metavar="RATIOS", help="'paper', 'none' or ratios per class (training split)."),
]

#: The data options but --dataset: they describe the dataset whose samples to count.
DATA_NAMES = {name for field, (name, _) in DATA_OPTIONS.items() if field != "dataset"}


@app.command()
@data_options(
    leave_out=("image_size", "grayscale"),
    dataset=(DatasetToCount, None),
    imbalance=(TrainingImbalance, "none"),
)
def datasets(ctx: typer.Context, data: DataOptions | None = None) -> None:
    """List the datasets fairquant reads or, with --dataset and --root, count their samples."""
    from fairquant.data import DataSpec
    from fairquant.data.registry import catalogue, describe

    with user_errors():
        if data is None:
            refuse_given(
                ctx,
                [p.name for p in ctx.command.params if p.name in DATA_NAMES],
                "without --dataset: they describe the dataset whose samples to count",
            )
            show_catalogue(catalogue())
            return
        counts, coding = describe(DataSpec.from_options(data))
        show_counts(data, counts, coding)


def show_catalogue(rows: list[tuple[str, ...]]) -> None:
    table = Table(title="Datasets (fairquant datasets --dataset NAME --root PATH)")
    for column in ("name", "reads", "attributes", "default target"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def show_counts(data: DataOptions, counts: pd.DataFrame, coding: dict[str, Any]) -> None:
    """The samples per split x target x group, then the coding of classes and groups."""
    table = Table(
        title=f"{data.dataset}{f' at {data.root}' if data.root else ''}: samples per split x "
        "target x group",
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
