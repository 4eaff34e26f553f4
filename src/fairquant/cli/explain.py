"""`fairquant explain`: the impact flow and curvature factors per group."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fairquant._io import locked_folder
from fairquant.cli._app import Quiet, app, choice, console, print_line, user_errors
from fairquant.options import Curvature

if TYPE_CHECKING:
    from fairquant._explain import ExplainResult

CurvatureChoice = choice("CurvatureChoice", Curvature)


@app.command()
def explain(
    checkpoint: Annotated[
        Path, typer.Option(help="Checkpoint written by `fairquant train`.", metavar="FILE")
    ],
    precisions: Annotated[
        str,
        typer.Option(
            metavar="LIST",
            help="Comma-separated precisions (the spellings: fairquant audit --help).",
        ),
    ] = "fp32,int4",
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the tables and figures (default: beside it).", metavar="DIR"),
    ] = None,
    probes: Annotated[
        int,
        typer.Option(
            min=10, help="Most Hutchinson probes per group (after Hutch++'s sketch).", metavar="N"
        ),
    ] = 100,
    rtol: Annotated[
        float,
        typer.Option(min=0.0, help="Stop the trace at this relative standard error.", metavar="X"),
    ] = 0.05,
    curvature: Annotated[CurvatureChoice, typer.Option(help="The curvature matrix.")] = "hessian",
    piecewise_linear: Annotated[
        bool,
        typer.Option(
            help="The model is piecewise linear (ReLU/BatchNorm): trace exact, no probes."
        ),
    ] = False,
    samples_per_group: Annotated[
        int | None,
        typer.Option(
            min=1, help="Curvature on at most this many test samples a group.", metavar="N"
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Seed of the probes and of the sampled images.")
    ] = 0,
    quiet: Quiet = False,
) -> None:
    """Explain the disparity: impact flow and curvature factors per group and precision."""
    from fairquant._explain import explain_model
    from fairquant.quant import parse_precisions
    from fairquant.train import load_with_data

    folder = out or checkpoint.parent
    with user_errors(), locked_folder(folder):  # checked before any compute
        ckpt, dataset = load_with_data(checkpoint)
        start = time.perf_counter()
        result = explain_model(
            ckpt.model,
            dataset.test,
            dataset.group_names,
            parse_precisions(precisions),
            train_counts=dataset.counts()["train"],
            curvature=curvature.value,
            piecewise_linear=piecewise_linear or None,
            rtol=rtol,
            max_probes=probes,
            samples_per_group=samples_per_group,
            seed=seed,
            show_progress=not quiet,
        )
        show_explanation(result, folder, f"{ckpt.data_spec.name}: factors by {ckpt.group}", start)


def show_explanation(result: ExplainResult, folder: Path, title: str, start: float) -> None:
    """The factors and their correlations, the tables and figures written to ``folder``."""
    from fairquant.report.explain import factor_table, plot_explanation

    paths = [*result.to_csv(folder), *plot_explanation(result, folder)]
    console.print(factor_table(result, title=title))
    for _, row in result.correlations.iterrows():
        console.print(
            f"spearman {row.factor}@{row.precision} vs {row.against}: rho={row.rho:+.2f} "
            f"(p={row.p_value:.2g}, {row.groups} groups)"
        )
    for note in result.notes:
        print_line(console, "note", "yellow", note)
    console.print(
        f"wrote {', '.join(p.name for p in paths)} to {folder} in "
        f"{time.perf_counter() - start:.0f}s"
    )
