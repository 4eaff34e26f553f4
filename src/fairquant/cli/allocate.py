"""`fairquant allocate`: per-layer bits within a size budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fairquant.cli._app import (
    app,
    console,
    user_errors,
)
from fairquant.data import load_dataset
from fairquant.errors import ConfigError
from fairquant.metrics.sensitivity import SENSITIVITIES, group_sensitivity
from fairquant.mitigate.allocate import OBJECTIVES, allocate_precision, parse_budget
from fairquant.quant.calibrate import calibration_indices
from fairquant.train import load_checkpoint


@app.command()
def allocate(
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
        str,
        typer.Option(
            help="worst-group (minimise the largest predicted G(a)), phi (max - min of G(a)) or "
            "loss (population-weighted mean: the loss-only, HAWQ-style baseline)."
        ),
    ] = "worst-group",
    sensitivity: Annotated[
        str,
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
        try:
            options = sorted({int(b) for b in bits.split(",")})
        except ValueError:
            raise ConfigError(f"--bits {bits!r}: expected comma-separated integers") from None
        kind, amount = ("bytes", float(budget_bytes)) if budget_bytes else parse_budget(budget)
        if objective not in OBJECTIVES or sensitivity not in SENSITIVITIES:
            raise ConfigError(
                f"--objective must be one of {list(OBJECTIVES)} and --sensitivity one of "
                f"{list(SENSITIVITIES)}; got {objective!r}, {sensitivity!r}"
            )
        ckpt = load_checkpoint(checkpoint)
        dataset = load_dataset(ckpt.data_spec)
        names = dataset.group_names
        size = samples * len(names)
        index = calibration_indices(dataset.train, size, balanced=True, seed=seed)
        table = group_sensitivity(
            ckpt.model,
            dataset.train.subset(index),
            names,
            options,
            sensitivity=sensitivity,  # type: ignore[arg-type]
            per_channel=per_channel,
        )
        counts = dataset.train.g.bincount(minlength=len(names)).double()
        result = allocate_precision(
            ckpt.model,
            table,
            objective=objective,  # type: ignore[arg-type]
            budget_bits=amount if kind == "bits" else None,
            budget_bytes=int(amount) if kind == "bytes" else None,
            weights=dict(zip(names, (counts / counts.sum()).tolist(), strict=True)),
            per_channel=per_channel,
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
