"""`fairquant allocate`: per-layer bits within a size budget, or the smallest per-layer bits that
keep every group within a tolerance (selected on the validation split, judged on the test split)."""

from __future__ import annotations

import warnings
from dataclasses import replace
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
) -> None:
    """Choose per-layer bits that protect the worst-off group (or the loss) within a size budget,
    or (--max-drop) the smallest ones that keep every group within a tolerance."""
    from fairquant.metrics.verdict import Tolerance
    from fairquant.mitigate.search import SearchConfig
    from fairquant.train import load_with_data

    with user_errors():
        checked_file(out)  # before any compute
        tolerance = Tolerance.parse(max_drop, max_phi)
        if tolerance is None:
            refuse_given(
                ctx,
                ("val_size", "criterion", "rounds", "baselines", "bootstrap", "gate"),
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
        ckpt, dataset = load_with_data(checkpoint)
        if tolerance is None:
            # only what was given: the rest takes allocate()'s defaults
            given = {
                "budget": f"{budget_bytes}B" if budget_bytes else budget,
                "bits": parse_ints(bits, "--bits") if bits else None,
                "sensitivity": sensitivity.value if sensitivity else None,
            }
            _budget_mode(
                ckpt,
                dataset,
                out,
                objective.value,
                {k: v for k, v in given.items() if v is not None},
                samples_per_group=samples,
                per_channel=per_channel,
                seed=seed,
            )
            return
        if budget is not None or budget_bytes is not None:
            raise ConfigError(
                "give a size budget (--budget) or a tolerance (--max-drop), not both: the search "
                "finds the smallest size within the tolerance"
            )
        config = SearchConfig(
            **({"bits": tuple(parse_ints(bits, "--bits"))} if bits else {}),
            **({"sensitivity": sensitivity.value} if sensitivity else {}),
            samples_per_group=samples,
            max_rounds=rounds,
            per_channel=per_channel,
            random_state=seed,
            criterion=criterion.value,
        )
        code = _search_mode(ckpt, dataset, out, tolerance, config, val_size, baselines, bootstrap)
    if gate:
        raise typer.Exit(code)


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
    from fairquant._audit import audit as run_audit
    from fairquant.metrics.verdict import verdict as judge
    from fairquant.mitigate.search import METHODS, compare_searches
    from fairquant.report.verdict import exit_code, summary_lines
    from fairquant.train import held_out_validation

    size = None if val_size is None else fraction_or_count(val_size)
    validation, note = held_out_validation(ckpt, dataset, size=size)
    console.print(f"selecting on {note}")
    names = dataset.group_names
    methods = METHODS if baselines else ("fairquant",)
    if config.sensitivity == "measured":  # "fairquant" then is the measured search itself
        methods = tuple(m for m in methods if m != "measured")
    results, table = compare_searches(
        ckpt.model, validation, names, tolerance, config=config, methods=methods
    )
    chosen = results["fairquant"]  # the search with config's predictor
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
    console.print(rounds)
    side = Table(title=f"at max drop {tolerance.max_drop:g} on the validation split")
    for column in (
        "method",
        "KiB",
        "avg bits",
        "every group within",
        "worst group",
        "drop",
        "evaluations",
        "seconds",
    ):
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
    console.print(side)
    path = replace(chosen.precision, name=out.stem).save(out)
    console.print(f"wrote {path}; audit it with --precisions @{path}")
    proven = " (proven smallest if drops never grow with more bits)" if chosen.proven else ""
    console.print(
        f"{chosen.method}: {chosen.size_bytes / 1024:.1f} KiB, {chosen.average_bits:.2f} average "
        f"weight bits, after {chosen.evaluations} evaluations of the validation split in "
        f"{chosen.seconds:.1f} s{proven}"
    )
    specs = [replace(r.precision, name=m) for m, r in results.items()]
    with warnings.catch_warnings():  # the audit's notes on CEV/SDE: not what this command judges
        warnings.simplefilter("ignore")
        audited = run_audit(ckpt.model, dataset, precisions=specs, n_bootstrap=0)
    verdict = judge(audited, tolerance, precisions=["fairquant"], n_bootstrap=bootstrap)
    console.print("[bold]test split verdict of the searched model[/]")
    for line in summary_lines(verdict):
        console.print(line, highlight=False)
    for m in results:
        if m != "fairquant":
            other = judge(audited, tolerance, precisions=[m], n_bootstrap=0)
            console.print(f"{m}: {other.status[m].upper()} on the test split", highlight=False)
    return exit_code(verdict)
