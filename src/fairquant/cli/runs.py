"""`fairquant run`, `mitigate` and `report`: experiments and their run directories."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fairquant._io import locked_folder
from fairquant.cli._app import (
    DATA,
    Backend,
    BatchSize,
    Bootstrap,
    Epochs,
    LearningRate,
    Model,
    Quiet,
    Workers,
    app,
    config_of,
    console,
    data_options,
    parse_ints,
    print_line,
    refuse_given,
    user_errors,
)
from fairquant.errors import ConfigError
from fairquant.options import (
    BACKENDS,
    CALIB_SIZE,
    DEFAULT_MITIGATIONS,
    DEFAULT_QAT_CONFIG,
    MITIGATION_METHODS,
    MITIGATION_PRECISIONS,
    MITIGATION_SEEDS,
    N_BOOTSTRAP,
    PRESET_DATA,
    PRESET_PREFIX,
    PRESET_SCALE,
    DataOptions,
    TrainConfig,
)

if TYPE_CHECKING:
    from fairquant.experiments.mitigation import MitigationComparison

#: Where cells run unless --backend says otherwise: the runner's default.
BACKEND = BACKENDS[0]


@app.command()
def report(
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR", help="Run directory with results.csv (fairquant run/mitigate/audit)."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="The HTML file (default: RUN_DIR/report.html).", metavar="FILE"),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            "--format", help="Comma-separated: html, md (Markdown), tex (LaTeX).", metavar="LIST"
        ),
    ] = "html,md,tex",
) -> None:
    """Write one self-contained HTML report of a run directory, and its tables for papers."""
    from fairquant.report.html import parse_formats, write_report

    with user_errors():
        start = time.perf_counter()
        paths = write_report(run_dir, out=out, formats=parse_formats(format))
        console.print(
            f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.0f}s"
        )


@app.command()
def run(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Argument(
            metavar="CONFIG",
            help="Experiment YAML file, or preset:NAME (liu2025, bellam-kim, five-arch).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run directory (default: runs/<name>[-<scale>]).", metavar="DIR"),
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="A shipped preset, instead of CONFIG.", metavar="NAME")
    ] = None,
    scale: Annotated[
        str | None,
        typer.Option(
            help=f"tiny, cpu or gpu: the file's `scales` entry (presets: {PRESET_SCALE}).",
            metavar="NAME",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help=f"Folder the datasets' roots are relative to (presets: {PRESET_DATA}).",
            metavar="DIR",
        ),
    ] = None,
    backend: Backend = BACKEND,
    workers: Workers = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Join this Ray cluster (e.g. auto or ray://head:10001).", metavar="ADDRESS"
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Run an experiment grid resumably into a run directory (results.csv, config.yaml)."""
    from fairquant.experiments import run_experiment
    from fairquant.experiments.presets import default_run_dir, load_experiment

    with user_errors():
        refuse_workers(ctx, backend.value)
        if preset is not None and config is not None:
            raise ConfigError("give either CONFIG or --preset, not both")
        if preset is None and config is None:
            raise ConfigError("give an experiment file, preset:NAME or --preset NAME")
        source = config or f"{PRESET_PREFIX}{(preset or '').removeprefix(PRESET_PREFIX)}"
        experiment = load_experiment(source, scale=scale, data_root=data)
        run_dir = out or default_run_dir(source, experiment, scale)
        with locked_folder(run_dir):  # a second run into it is refused while this one runs
            summary = run_experiment(
                experiment,
                run_dir,
                backend=backend.value,
                workers=workers,
                address=address,
                show_progress=not quiet,
            )
        console.print(
            f"{summary.cells} cells: {summary.ran} run now ({summary.trained} trained), "
            f"{summary.skipped} already done; wrote {summary.results} in {summary.seconds:.0f}s"
        )


@app.command()
@data_options()
def mitigate(
    ctx: typer.Context,
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Run directory (reruns skip finished cells).")
    ],
    mitigations: Annotated[
        str,
        typer.Option(
            help="Comma-separated mitigations: none, gt, re, re-fixed:N, over, under, weighted"
            "[:inverse-frequency|:effective-number|:w1,w2,...], focal[:G], balanced-calib, "
            "fairqat, or several joined with '+'.",
            metavar="LIST",
        ),
    ] = ",".join(DEFAULT_MITIGATIONS),
    data: DataOptions = DATA,
    model: Model = "resnet18",
    width: Annotated[int | None, typer.Option(help="Model width.", metavar="N")] = None,
    epochs: Epochs = TrainConfig.epochs,
    batch_size: BatchSize = TrainConfig.batch_size,
    lr: LearningRate = TrainConfig.lr,
    seeds: Annotated[
        str, typer.Option(help="Comma-separated training seeds.", metavar="LIST")
    ] = ",".join(map(str, MITIGATION_SEEDS)),
    precisions: Annotated[
        str, typer.Option(help="Comma-separated weight precisions (PTQ and QAT).", metavar="LIST")
    ] = ",".join(MITIGATION_PRECISIONS),
    act_precisions: Annotated[
        str | None,
        typer.Option(
            help="Activation-quantized precisions audited with PTQ only (default int8-a8,int4-a8 "
            "when a mitigation calibrates balanced, else none; '' for none).",
            metavar="LIST",
        ),
    ] = None,
    methods: Annotated[
        str, typer.Option(help="Comma-separated: ptq, qat.", metavar="LIST")
    ] = ",".join(MITIGATION_METHODS),
    qat_epochs: Annotated[int, typer.Option(min=1, help="QAT fine-tuning epochs.", metavar="N")] = (
        DEFAULT_QAT_CONFIG.epochs
    ),
    qat_lr: Annotated[
        float, typer.Option(help="QAT learning rate.", metavar="X")
    ] = DEFAULT_QAT_CONFIG.lr,
    calib_size: Annotated[
        int, typer.Option(min=1, help="Calibration images for -a<k> precisions.", metavar="N")
    ] = CALIB_SIZE,
    bootstrap: Bootstrap = N_BOOTSTRAP,
    report_only: Annotated[
        bool,
        typer.Option(
            help="Only summarise and print what --out holds (e.g. a run still going or stopped)."
        ),
    ] = False,
    backend: Backend = BACKEND,
    workers: Workers = None,
    quiet: Quiet = False,
) -> None:
    """Compare mitigations on the same data and seeds, quantized with PTQ and QAT: per-group,
    overall and worst-group accuracy and phi(D) with intervals across seeds, paired tests against
    `none`, and a Pareto figure of accuracy against phi(D)."""
    from fairquant.data import DataSpec
    from fairquant.experiments.mitigation import compare_mitigations, summarize
    from fairquant.models import ModelSpec

    with user_errors(), ExitStack() as stack:
        refuse_unused(ctx, report_only=report_only, backend=backend.value)
        start = time.perf_counter()
        if report_only:
            result = summarize(out)
        else:  # refused options first: nothing is created for a refused command
            stack.enter_context(locked_folder(out))
            result = compare_mitigations(
                DataSpec.from_options(data),
                ModelSpec(model, width),
                config_of(TrainConfig, ctx),
                out,
                mitigations=mitigations,
                precisions=precisions,
                act_precisions=act_precisions,
                methods=methods,
                seeds=parse_ints(seeds, "--seeds"),
                qat=replace(DEFAULT_QAT_CONFIG, epochs=qat_epochs, lr=qat_lr),
                calib_size=calib_size,
                n_bootstrap=bootstrap,
                backend=backend.value,
                workers=workers,
                show_progress=not quiet,
            )
        show_comparison(result, out, start)


def refuse_unused(ctx: typer.Context, *, report_only: bool, backend: str) -> None:
    """Every option but --out and --quiet with --report-only, and --workers with the local
    backend, are errors."""
    if report_only:
        keep = {"out", "report_only", "quiet"}
        refuse_given(
            ctx,
            [p.name for p in ctx.command.params if p.name not in keep],
            "with --report-only: it only summarises what --out holds, as that run was set up",
        )
    else:
        refuse_workers(ctx, backend)


def refuse_workers(ctx: typer.Context, backend: str) -> None:
    """--workers with the local backend is an error."""
    if backend == "local":
        refuse_given(ctx, ("workers",), "with --backend local: it runs one cell after another")


def show_comparison(result: MitigationComparison, out: Path, start: float) -> None:
    """The comparison's tables, tests and notes, its Pareto figure written to ``out``."""
    from fairquant.report.mitigation import mitigation_tables, paired_tests_table, plot_pareto

    if result.run is not None:
        run = result.run
        console.print(
            f"{run.cells} cells: {run.ran} run now ({run.trained} trained), {run.skipped} "
            "already done"
        )
    for table in mitigation_tables(result):
        console.print(table)
    tests = paired_tests_table(result)
    if tests is not None:
        console.print(tests)
    for note in result.notes:
        print_line(console, "note", "yellow", note)
    png = plot_pareto(result, out / "pareto.png")
    console.print(
        f"wrote results.csv, summary.csv, tests.csv, config.yaml and {png.name} to {out} in "
        f"{time.perf_counter() - start:.0f}s"
    )
