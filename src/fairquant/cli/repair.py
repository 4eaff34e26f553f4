"""`fairquant repair`: the cheapest repair of a deployed precision that keeps every group within
tolerance on the validation split, judged on the test split, written in the toolchain's format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fairquant.cli._app import (
    app,
    console,
    fraction_or_count,
    print_line,
    user_errors,
)
from fairquant.cli.audit import (
    load_from_options,
    model_options,
    refuse_model_options,
)
from fairquant.errors import ConfigError
from fairquant.options import (
    CALIB_SIZE,
    DEFAULT_MAX_DROP,
    N_BOOTSTRAP,
    REPAIR_VAL_SIZE,
    REPAIRABLE,
)


@app.command("repair")
@model_options
def repair_command(
    ctx: typer.Context,
    precision: Annotated[
        str, typer.Option(metavar="NAME", help=f"The deployed precision: {REPAIRABLE}.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            metavar="DIR",
            help="New folder: the repaired model (model.onnx, or model.xml + model.bin), "
            "verdict.json, verdict.junit.xml and candidates.csv (candidates.csv alone when no "
            "candidate is within tolerance).",
        ),
    ],
    source: dict[str, Any] | None = None,
    max_drop: Annotated[
        list[str] | None,
        typer.Option(
            metavar="POINTS|GROUP=POINTS",
            help="Accuracy points no group may lose against fp32 on the validation split "
            f"(default {DEFAULT_MAX_DROP:g}); repeatable GROUP=POINTS overrides.",
        ),
    ] = None,
    max_phi: Annotated[
        float | None, typer.Option(min=0, metavar="X", help="Also keep phi(D) within this.")
    ] = None,
    val_size: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="FRACTION|N",
            help="For a model without a validation split (a --model, a checkpoint trained "
            "without --val-size): the validation split to carve from the training split (a "
            f"fraction or a count; default {REPAIR_VAL_SIZE:g}; it says the model may have "
            "seen it).",
        ),
    ] = None,
    calib_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Calibration samples per candidate.")
    ] = CALIB_SIZE,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the calibration samples.")] = 0,
    bootstrap: Annotated[
        int,
        typer.Option(
            min=0, metavar="N", help="Bootstrap replicates of the test verdict's intervals."
        ),
    ] = N_BOOTSTRAP,
    gate: Annotated[
        bool, typer.Option(help="Exit 0 if the test verdict passes, 3 if it fails, 4 if not sure.")
    ] = False,
) -> None:
    """Repair a deployed precision (calibration set, calibrator, per-channel, logit offsets,
    layers kept in float), cheapest first, until every group is within tolerance on the
    validation split.

    The model is a checkpoint of `fairquant train` or one trained elsewhere (--model, with the
    data options of `fairquant audit`)."""
    from fairquant.metrics.verdict import Tolerance
    from fairquant.mitigate.repair import RepairUnreachable, repair
    from fairquant.report.repair import check_folder, write_candidates, write_repair
    from fairquant.report.verdict import exit_code

    with user_errors():
        check_folder(out)
        what, data, preprocess = _load(ctx)
        tolerance = Tolerance.parse(max_drop or [str(DEFAULT_MAX_DROP)], max_phi)
        size = None if val_size is None else fraction_or_count(val_size)
        try:
            result = repair(
                what,
                data,
                precision,
                tolerance=tolerance,
                val_size=size,
                preprocess=preprocess,
                calib_size=calib_size,
                random_state=seed,
                n_bootstrap=bootstrap,
            )
        except RepairUnreachable as e:  # the table shows how close each candidate came
            path = write_candidates(e, out)
            raise ConfigError(f"{e}; every candidate tried is in {path}") from None
        write_repair(result, out)
    _render(result, out)
    if gate:
        raise typer.Exit(exit_code(result.verdict))


def _load(ctx: typer.Context) -> tuple[Any, Any, Any]:
    """The checkpoint itself (its validation split is rebuilt from it), or the model from
    elsewhere as ``audit`` loads it, with its data and input preprocessing."""
    checkpoint = ctx.params["checkpoint"]
    if checkpoint is None:
        target_ = load_from_options(ctx)
        return target_.model, target_.data, target_.preprocess
    from fairquant.train import load_with_data

    refuse_model_options(ctx)
    ckpt, data = load_with_data(checkpoint)
    return ckpt, data, None


#: The candidates table's columns on the terminal: header, and the cell of a row of
#: :meth:`RepairResult.table` (the groups' drops follow the first five).
_COLUMNS = (
    ("tier", lambda r: r["tier"]),
    ("precision", lambda r: r["precision"]),
    ("calibration", lambda r: r["calibration_set"]),
    ("float", lambda r: str(r["n_float_layers"])),
    ("correction", lambda r: r["correction"] or "-"),
)
_AFTER = (
    ("KiB", lambda r: f"{r['size_bytes'] / 1024:.1f}"),
    ("ms", lambda r: f"{r['latency_ms']:.3f}"),
    ("evals", lambda r: str(r["evaluations_total"])),
    ("within", lambda r: ("[bold]chosen[/]" if r["chosen"] else "yes") if r["within"] else "no"),
)


def _render(result, out: Path) -> None:
    """The notes, every candidate's validation drops, the choice and the test verdict."""
    from fairquant.report.verdict import summary_lines

    for note in result.notes:
        print_line(console, "note", "yellow", note)
    groups = tuple((a, lambda r, a=a: f"{r[f'drop[{a}]']:+.2f}") for a in result.group_names)
    columns = (*_COLUMNS, *groups, *_AFTER)
    table = Table(title="candidates: validation drop (points) per group")
    for header, _ in columns:
        table.add_column(header, justify="left" if header in ("tier", "precision") else "right")
    for row in result.table().to_dict("records"):
        table.add_row(*(cell(row) for _, cell in columns))
    console.print(table)
    console.print(
        f"chosen: {result.chosen.label} ({result.chosen.tier}), after {result.evaluations:g} "
        f"evaluations of the validation split in {result.seconds:.1f} s",
        markup=False,
        highlight=False,
    )
    console.print("[bold]test split verdict[/]")
    for line in summary_lines(result.verdict):
        console.print(line, markup=False, highlight=False)
    console.print(f"wrote {out}", markup=False, highlight=False)
