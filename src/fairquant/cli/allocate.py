"""`fairquant allocate`: per-layer bits within a size budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fairquant.cli._app import app, choice, console, parse_ints, user_errors
from fairquant.metrics.sensitivity import SensitivitySource
from fairquant.mitigate.allocate import AllocationObjective, allocate
from fairquant.train import load_with_data

ObjectiveChoice = choice("ObjectiveChoice", AllocationObjective)
SensitivityChoice = choice("SensitivityChoice", SensitivitySource)


@app.command("allocate")
def allocate_command(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint written by `fairquant train`.")],
    out: Annotated[Path, typer.Option(help="JSON spec to write; audit it as --precisions @FILE.")],
    budget: Annotated[
        str,
        typer.Option(
            help="Size budget: average weight bits (4bits, 4.5bits) or packed size (120000B, "
            "120KB, 1.5MB, 100KiB)."
        ),
    ] = "4bits",
    budget_bytes: Annotated[
        int | None, typer.Option(min=1, help="Packed size budget in bytes (replaces --budget).")
    ] = None,
    objective: Annotated[
        ObjectiveChoice,
        typer.Option(
            help="worst-group (minimise the largest predicted G(a)), phi (max - min of G(a)) or "
            "loss (population-weighted mean: the loss-only, HAWQ-style baseline)."
        ),
    ] = "worst-group",
    sensitivity: Annotated[
        SensitivityChoice,
        typer.Option(
            help="measured (quantize one layer at a time) or predicted (gradient and "
            "Hessian-vector products: g.delta + 1/2 delta'H delta per group)."
        ),
    ] = "measured",
    bits: Annotated[str, typer.Option(help="Bit widths a layer may take.")] = "2,3,4,8",
    samples: Annotated[
        int,
        typer.Option(min=1, help="Training images per group the sensitivities are taken on."),
    ] = 128,
    per_channel: Annotated[bool, typer.Option(help="Per-channel weight scales.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the sampled training images.")] = 0,
) -> None:
    """Choose per-layer bits that protect the worst-off group (or the loss) within a size budget."""
    with user_errors():
        ckpt, dataset = load_with_data(checkpoint)
        result = allocate(
            ckpt.model,
            dataset,
            budget=f"{budget_bytes}B" if budget_bytes else budget,
            bits=parse_ints(bits, "--bits"),
            objective=objective.value,
            sensitivity=sensitivity.value,
            samples_per_group=samples,
            per_channel=per_channel,
            seed=seed,
            name=out.stem,
        )
        path = result.precision.save(out)
        layers = Table(title=f"bits per layer ({objective}, {sensitivity} sensitivity)")
        for column in ("layer", "weights", "bits"):
            layers.add_column(column, justify="left" if column == "layer" else "right")
        for row in result.layers.itertuples():
            layers.add_row(row.layer, str(row.numel), str(row.bits))
        console.print(layers)
        predicted = ", ".join(f"{g} {v:+.4f}" for g, v in result.predicted.items())
        spread = result.predicted.max() - result.predicted.min()
        console.print(f"predicted G(a) (sum over layers): {predicted}; phi {spread:.4f}")
        console.print(
            f"average {result.average_bits:.3f} weight bits, {result.size_bytes} bytes packed "
            f"(budget {budget_bytes if budget_bytes else budget})"
        )
        console.print(f"wrote {path}; audit it with --precisions @{path}")
