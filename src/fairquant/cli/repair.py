"""`fairquant repair`: the cheapest repair of a deployed precision that keeps every group within
tolerance on the validation split, judged on the test split, written in the toolchain's format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fairquant.cli._app import app, console, fraction_or_count, user_errors
from fairquant.metrics.policy import N_BOOTSTRAP
from fairquant.metrics.verdict import DEFAULT_MAX_DROP, Tolerance
from fairquant.mitigate.repair import REPAIRABLE, RepairResult, repair
from fairquant.report.repair import check_folder, write_repair
from fairquant.report.verdict import exit_code, summary_lines
from fairquant.train import load_with_data


@app.command("repair")
def repair_command(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint written by `fairquant train`.")],
    precision: Annotated[str, typer.Option(help=f"The deployed precision: {REPAIRABLE}.")],
    out: Annotated[
        Path,
        typer.Option(
            help="New folder: the repaired model (model.onnx, or model.xml + model.bin), "
            "verdict.json, verdict.junit.xml and candidates.csv."
        ),
    ],
    max_drop: Annotated[
        list[str] | None,
        typer.Option(
            help="Accuracy points no group may lose against fp32 on the validation split "
            f"(default {DEFAULT_MAX_DROP:g}); repeatable GROUP=POINTS overrides."
        ),
    ] = None,
    max_phi: Annotated[
        float | None, typer.Option(min=0, help="Also keep phi(D) within this.")
    ] = None,
    val_size: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="For a checkpoint trained without --val-size: the validation split to carve "
            "from its training split (a fraction or a count; it says the model saw it).",
        ),
    ] = None,
    calib_size: Annotated[int, typer.Option(help="Calibration samples per candidate.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the calibration samples.")] = 0,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap replicates of the test verdict's intervals.")
    ] = N_BOOTSTRAP,
    gate: Annotated[
        bool, typer.Option(help="Exit 0 if the test verdict passes, 3 if it fails, 4 if not sure.")
    ] = False,
) -> None:
    """Repair a deployed precision (calibration set, calibrator, per-channel, layers kept in
    float), cheapest first, until every group is within tolerance on the validation split."""
    with user_errors():
        check_folder(out)
        ckpt, dataset = load_with_data(checkpoint)
        tolerance = Tolerance.parse(max_drop or [str(DEFAULT_MAX_DROP)], max_phi)
        result = repair(
            ckpt,
            dataset,
            precision,
            tolerance=tolerance,
            val_size=None if val_size is None else fraction_or_count(val_size),
            calib_size=calib_size,
            random_state=seed,
            n_bootstrap=bootstrap,
        )
        write_repair(result, out)
    _render(result, out)
    if gate:
        raise typer.Exit(exit_code(result.verdict))


def _render(result: RepairResult, out: Path) -> None:
    for note in result.notes:
        console.print(note, highlight=False)
    table = Table(title="candidates: validation drop (points) per group")
    for column in ("tier", "precision", "calibration", "float", "KiB", "ms", *result.group_names):
        table.add_column(column, justify="left" if column in ("tier", "precision") else "right")
    table.add_column("within")
    for row in result.table().to_dict("records"):
        table.add_row(
            row["tier"],
            row["precision"],
            row["calibration_set"],
            str(row["n_float_layers"]),
            f"{row['size_bytes'] / 1024:.1f}",
            f"{row['latency_ms']:.3f}",
            *(f"{row[f'drop[{a}]']:+.2f}" for a in result.group_names),
            ("[bold]chosen[/]" if row["chosen"] else "yes") if row["within"] else "no",
        )
    console.print(table)
    console.print(
        f"chosen: {result.chosen.label} ({result.chosen.tier}), after {result.evaluations} "
        f"evaluations of the validation split in {result.seconds:.1f} s",
        highlight=False,
    )
    console.print("[bold]test split verdict[/]")
    for line in summary_lines(result.verdict):
        console.print(line, highlight=False)
    console.print(f"wrote {out}", highlight=False)
