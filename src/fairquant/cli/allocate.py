"""`fairquant allocate`: per-layer bits within a size budget, or the smallest per-layer bits that
keep every group within a tolerance (selected on the validation split, judged on the test split)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fairquant._io import checked_file
from fairquant.cli._app import (
    app,
    choice,
    console,
    fraction_or_count,
    keyword_default,
    parse_ints,
    refuse_given,
    user_errors,
)
from fairquant.errors import ConfigError
from fairquant.options import (
    N_BOOTSTRAP,
    SEARCH_CRITERION,
    SEARCH_ROUNDS,
    AllocationObjective,
    Criterion,
    SensitivitySource,
)

ObjectiveChoice = choice("ObjectiveChoice", AllocationObjective)
SensitivityChoice = choice("SensitivityChoice", SensitivitySource)
CriterionChoice = choice("CriterionChoice", Criterion)


@app.command("allocate")
def allocate_command(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path, typer.Option(metavar="FILE", help="Checkpoint written by `fairquant train`.")
    ],
    out: Annotated[
        Path,
        typer.Option(metavar="FILE", help="JSON spec to write; audit it as --precisions @FILE."),
    ],
    budget: Annotated[
        str | None,
        typer.Option(
            help="Size budget: average weight bits (4bits, 4.5bits) or packed size (120000B, "
            "120KB, 1.5MB, 100KiB). Default 4bits when no --max-drop is given.",
            metavar="SIZE",
        ),
    ] = None,
    budget_bytes: Annotated[
        int | None,
        typer.Option(
            min=1, help="Packed size budget in bytes (replaces --budget).", metavar="BYTES"
        ),
    ] = None,
    objective: Annotated[
        ObjectiveChoice,
        typer.Option(
            help="worst-group (minimise the largest predicted G(a)), phi (max - min of G(a)) or "
            "loss (population-weighted mean: the loss-only, HAWQ-style baseline)."
        ),
    ] = "worst-group",
    sensitivity: Annotated[
        SensitivityChoice | None,
        typer.Option(
            help="measured (quantize one layer at a time), predicted (gradient and Hessian-vector "
            "products: g.delta + 1/2 delta'H delta per group) or diagonal (gradient and exact GGN "
            "diagonal from one pass: g.delta + 1/2 sum D delta^2). Default: measured for a "
            "budget, diagonal for --max-drop (the predictor of the search)."
        ),
    ] = None,
    bits: Annotated[
        str | None,
        typer.Option(
            help="Bit widths a layer may take (default 2,3,4,8; 2,3,4,8,16 for --max-drop).",
            metavar="LIST",
        ),
    ] = None,
    samples: Annotated[
        int,
        typer.Option(
            min=1,
            help="Images per group the sensitivities are taken on (training images for a budget, "
            "validation images for --max-drop).",
            metavar="N",
        ),
    ] = 128,
    per_channel: Annotated[bool, typer.Option(help="Per-channel weight scales.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the sampled images.", metavar="N")] = 0,
    max_drop: Annotated[
        list[str] | None,
        typer.Option(
            metavar="POINTS|GROUP=POINTS",
            help="Search mode: the smallest model in which no group loses more than POINTS "
            "accuracy points against fp32 on the validation split; repeatable GROUP=POINTS "
            "overrides (--max-drop Others=0.5). The result is then judged on the test split.",
        ),
    ] = None,
    max_phi: Annotated[
        float | None,
        typer.Option(min=0, help="Search mode: also keep phi(D) within this.", metavar="X"),
    ] = None,
    val_size: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Search mode, for a checkpoint trained without --val-size: the validation split "
            "to carve from its training split (a fraction or a count; it says the model saw it).",
            metavar="SIZE",
        ),
    ] = None,
    criterion: Annotated[
        CriterionChoice,
        typer.Option(
            help="Search mode: a group is within its tolerance on the validation split when its "
            "drop is (estimate), or when the upper end of its paired 95% interval is "
            "(upper-bound: guards against picking candidates the validation noise flattered)."
        ),
    ] = SEARCH_CRITERION,
    rounds: Annotated[
        int, typer.Option(min=0, help="Search mode: measured proposals at most.", metavar="N")
    ] = SEARCH_ROUNDS,
    baselines: Annotated[
        bool,
        typer.Option(
            help="Search mode: also run the baselines at the same tolerance (AIMET-style "
            "measured table, smallest uniform width, loss-only, HAWQ order), side by side."
        ),
    ] = False,
    bootstrap: Annotated[
        int,
        typer.Option(
            min=0, help="Bootstrap replicates of the test verdict's intervals.", metavar="N"
        ),
    ] = N_BOOTSTRAP,
    gate: Annotated[
        bool,
        typer.Option(
            help="Search mode: exit 0 if the test verdict passes, 3 if it fails, 4 if inconclusive."
        ),
    ] = False,
    precision: Annotated[
        str | None,
        typer.Option(
            metavar="PRECISION",
            help="Search mode on a deployed precision's own kernels (ort:int8, openvino:int8, "
            "torch:int8, torchao:int8dq, ...): each layer is quantized at it or kept in float, "
            "every candidate built by the toolchain, its size the bytes of its file; --out gets "
            "that file (model.onnx for ort:). Default: fairquant's simulated widths (--bits).",
        ),
    ] = None,
) -> None:
    """Choose per-layer bits that protect the worst-off group (or the loss) within a size budget,
    or (--max-drop) the smallest ones that keep every group within a tolerance."""
    from fairquant.metrics.verdict import Tolerance
    from fairquant.train import load_with_data

    with user_errors():
        checked_file(out)  # before any compute
        tolerance = Tolerance.parse(max_drop, max_phi)
        _refuse_other_mode(ctx, tolerance)
        ckpt, dataset = load_with_data(checkpoint)
        options = {"samples_per_group": samples, "per_channel": per_channel}
        if tolerance is None:
            given = _budget_given(budget, budget_bytes, bits, sensitivity)
            _budget_mode(ckpt, dataset, out, objective.value, given, **options, seed=seed)
            return
        config = _search_config(
            ctx,
            budget if budget is not None else budget_bytes,
            precision,
            bits,
            sensitivity,
            **options,
            max_rounds=rounds,
            random_state=seed,
            criterion=criterion.value,
        )
        code = _search_mode(ckpt, dataset, out, tolerance, config, val_size, baselines, bootstrap)
    if gate:
        raise typer.Exit(code)


def _refuse_other_mode(ctx: typer.Context, tolerance) -> None:
    """The options of the mode not asked for (a size budget, or the search within a tolerance)."""
    if tolerance is None:
        refuse_given(
            ctx,
            ("val_size", "criterion", "rounds", "baselines", "bootstrap", "gate", "precision"),
            "without --max-drop: they belong to the search for the smallest model within a "
            "tolerance, not to a size budget",
        )
    else:
        refuse_given(
            ctx,
            ("objective",),
            "with --max-drop: the search keeps every group within the tolerance; "
            "--objective chooses what a size budget (--budget) minimises",
        )


def _search_config(ctx: typer.Context, budget, precision, bits, sensitivity, **options):
    """The search's :class:`~fairquant.mitigate.search.SearchConfig` from its options."""
    from fairquant.mitigate.search import SearchConfig

    if budget is not None:
        raise ConfigError(
            "give a size budget (--budget) or a tolerance (--max-drop), not both: the search "
            "finds the smallest size within the tolerance"
        )
    if precision is not None:
        options["base"] = _deployed_base(ctx, precision, sensitivity)
    return SearchConfig(
        **({"bits": tuple(parse_ints(bits, "--bits"))} if bits else {}),
        **({"sensitivity": sensitivity.value} if sensitivity else {}),
        **options,
    )


def _deployed_base(ctx: typer.Context, text: str, sensitivity):
    """``--precision``: a deployed precision, and the options it leaves no room for."""
    from fairquant.quant.configs import FORMS, DeployedPrecision
    from fairquant.quant.precision import parse_precision

    refuse_given(
        ctx,
        ("bits", "per_channel"),
        f"with --precision {text}: it fixes each layer's choice (quantized at it, or kept in "
        "float) and its scales (per channel: spell it, e.g. ort:int8-pc)",
    )
    refuse_given(
        ctx, ("baselines",), f"with --precision {text}: they compare fairquant's simulated widths"
    )
    if sensitivity is not None and sensitivity.value == "measured":
        raise ConfigError(
            f"--sensitivity measured does not apply with --precision {text}: its table simulates "
            "fairquant's widths; use diagonal or predicted"
        )
    try:
        base = parse_precision(text)
    except ConfigError as e:
        raise ConfigError(f"--precision: {e}") from None
    if not isinstance(base, DeployedPrecision):
        raise ConfigError(
            f"--precision {text!r}: expected a deployed precision ({', '.join(FORMS)}); "
            "fairquant's simulated widths are searched with --bits"
        )
    return base


def _budget_given(budget, budget_bytes, bits, sensitivity) -> dict:
    """Only what was given: the rest takes allocate()'s defaults."""
    given = {
        "budget": f"{budget_bytes}B" if budget_bytes else budget,
        "bits": parse_ints(bits, "--bits") if bits else None,
        "sensitivity": sensitivity.value if sensitivity else None,
    }
    return {k: v for k, v in given.items() if v is not None}


def _budget_mode(ckpt, dataset, out, objective: str, given: dict, **options) -> None:
    from fairquant.mitigate.allocate import allocate

    result = allocate(ckpt.model, dataset, objective=objective, name=out.stem, **given, **options)
    budget = given.get("budget", keyword_default(allocate, "budget"))
    sensitivity = given.get("sensitivity", keyword_default(allocate, "sensitivity"))
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
        f"(budget {budget})"
    )
    console.print(f"wrote {path}; audit it with --precisions @{path}")


def _search_mode(ckpt, dataset, out, tolerance, config, val_size, baselines, bootstrap) -> int:
    from fairquant.mitigate.search import smallest_within
    from fairquant.report.verdict import exit_code, summary_lines

    found = smallest_within(
        ckpt,
        dataset,
        tolerance,
        out,
        config=config,
        val_size=None if val_size is None else fraction_or_count(val_size),
        baselines=baselines,
        n_bootstrap=bootstrap,
    )
    chosen = found.chosen
    console.print(f"selecting on {found.validation_note}")
    console.print(_rounds_table(chosen, dataset.group_names))
    console.print(_methods_table(found.table, tolerance))
    console.print(_wrote(found.path, chosen, config.base))
    console.print(
        f"{chosen.method}: {chosen.size_bytes / 1024:.1f} KiB, {chosen.average_bits:.2f} average "
        f"weight bits, after {chosen.evaluations} evaluations of the validation split in "
        f"{chosen.seconds:.1f} s{_proven(chosen, config.base)}"
    )
    console.print("[bold]test split verdict of the searched model[/]")
    for line in summary_lines(found.verdict):
        console.print(line, highlight=False)
    for m, status in found.others.items():
        console.print(f"{m}: {status.upper()} on the test split", highlight=False)
    return exit_code(found.verdict)


def _rounds_table(chosen, names: list[str]) -> Table:
    rounds = Table(title=f"search rounds ({chosen.method}): validation drop (points) per group")
    for column in ("round", "KiB", "avg bits", "within", *names):
        rounds.add_column(column, justify="right")
    for r in chosen.rounds.to_dict("records"):
        rounds.add_row(
            str(r["round"]),
            f"{r['size_bytes'] / 1024:.1f}",
            f"{r['average_bits']:.2f}",
            "yes" if r["feasible"] else "no",
            *(f"{r[f'drop[{a}]']:+.2f}" for a in names),
        )
    return rounds


def _methods_table(table, tolerance) -> Table:
    side = Table(title=f"at max drop {tolerance.max_drop:g} on the validation split")
    columns = ("method", "KiB", "avg bits", "every group within", "worst group", "drop")
    for column in (*columns, "evaluations", "seconds"):
        side.add_column(column, justify="left" if column in ("method", "worst group") else "right")
    for row in table.itertuples(index=False):
        side.add_row(
            row.method,
            f"{row.size_bytes / 1024:.1f}",
            f"{row.average_bits:.2f}",
            "yes" if row.feasible else "no",
            str(row.worst_group),
            f"{row.worst_drop:+.2f}",
            str(row.evaluations),
            f"{row.seconds:.1f}",
        )
    return side


def _wrote(path: Path, chosen, base) -> str:
    if base is None:
        return f"wrote {path}; audit it with --precisions @{path}"
    floats = chosen.layers[chosen.layers.bits > base.bits].layer.tolist()
    kept = ", ".join(floats) if floats else "none"
    return (
        f"wrote {path}: {base.name}, {len(floats)} of {len(chosen.layers)} weight layers kept in "
        f"float ({kept}); its toolchain runs it without fairquant"
    )


def _proven(chosen, base) -> str:
    if not chosen.proven:
        return ""
    if base is None:
        return " (proven smallest if drops never grow with more bits)"
    return " (proven smallest in per-layer bytes if drops never grow with more layers in float)"
