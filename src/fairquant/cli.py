"""The ``fairquant`` command: quickstart, train and audit."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fairquant.audit import AuditResult, audit_model
from fairquant.data import PAPER_RATIO, DataSpec, GroupedDataset, default_digits_spec, load_dataset
from fairquant.data.registry import SOURCES, get_source
from fairquant.errors import ConfigError, FairquantError
from fairquant.mitigate.allocate import (
    OBJECTIVES,
    SENSITIVITIES,
    allocate_precision,
    group_sensitivity,
    parse_budget,
)
from fairquant.models import ModelSpec
from fairquant.models.registry import sized_for
from fairquant.quant import DEFAULT_PRECISIONS, parse_precisions
from fairquant.quant.calibrate import calibration_indices
from fairquant.quant.methods import make_quantizer
from fairquant.quant.qat import DEFAULT_QAT_CONFIG
from fairquant.report import accuracy_table, plot_group_accuracy
from fairquant.train import TrainConfig, fit, load_checkpoint, save_checkpoint

app = typer.Typer(
    help="Audit who pays when a neural network is quantized: per-group accuracy, loss, "
    "excess loss G(a) and the disparity phi(D).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
if not console.is_terminal:  # logs and pipes: rich would wrap wide tables at 80 columns
    console.width = max(console.width, 160)
err_console = Console(stderr=True)

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.csv"
FIGURE = "group_accuracy.png"

# Options that several commands share, written once.
Dataset = Annotated[str, typer.Option(help="Registered dataset name.")]
Root = Annotated[str | None, typer.Option(help="Dataset root folder or file.")]
Target = Annotated[str | None, typer.Option(help="Attribute to predict.")]
Group = Annotated[str | None, typer.Option(help="Protected attribute (default: target).")]
ImageSize = Annotated[int | None, typer.Option(min=4)]
Imbalance = Annotated[
    str, typer.Option(help="'paper' (16:16:8:8:4:4:2:2:1:1), 'none' or ratios per class.")
]
Model = Annotated[str, typer.Option(help="Registered model name.")]
Grayscale = Annotated[
    bool | None, typer.Option("--grayscale/--no-grayscale", help="Convert images to gray.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Backend = Annotated[str, typer.Option(help="Where cells run: local, process or ray.")]
Workers = Annotated[
    int | None, typer.Option(min=1, help="Processes (process) or local Ray CPUs (ray).")
]
Bootstrap = Annotated[
    int,
    typer.Option(
        "--bootstrap",
        min=0,
        help="Group-stratified bootstrap replicates for 95% intervals in results.csv (0: none).",
    ),
]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Show fairquant's own errors as one clear line and exit with status 2, no traceback."""
    try:
        with warnings.catch_warnings():  # warnings too, one line each (e.g. skipped files)
            warnings.showwarning = _show_warning
            yield
    except FairquantError as e:
        # soft_wrap: one line per error, never broken inside a path (logs and grep see it whole)
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _parse_imbalance(text: str) -> tuple[float, ...] | None:
    if text == "none":
        return None
    if text == "paper":
        return PAPER_RATIO
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--imbalance {text!r}: expected 'paper', 'none' or comma-separated ratios "
            "like '16,16,8,8,4,4,2,2,1,1'"
        ) from None


DataOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="Dataset option KEY=VALUE, repeatable; VALUE is read as JSON when it parses "
        '(age_buckets=[18,40,60], limit=500, split="random"), else as text.',
    ),
]


def _parse_option(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value), the value parsed as a JSON literal (never evaluated)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--option {item!r}: expected KEY=VALUE, e.g. age_buckets=[18,40,60]")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return key.strip(), value


def _data_spec(
    dataset: str,
    *,
    root: str | None,
    target: str | None,
    group: str | None,
    imbalance: str,
    seed: int,
    option: list[str] | None,
    grayscale: bool | None = None,
    image_size: int | None = None,
) -> DataSpec:
    """The dataset spec of the shared data options (``train``, ``datasets``, ``mitigate``)."""
    options = dict(_parse_option(item) for item in option or [])
    if grayscale is not None:
        options["grayscale"] = grayscale
    return DataSpec(
        name=dataset,
        root=root,
        target=target,
        group=group,
        image_size=image_size,
        imbalance=_parse_imbalance(imbalance),
        seed=seed,
        options=options,
    )


def _audit_and_report(
    model,
    dataset: GroupedDataset,
    precisions: str,
    out: Path,
    *,
    quiet: bool,
    title: str,
    method: str = "ptq",
    qat_config: TrainConfig = DEFAULT_QAT_CONFIG,
    lsq: bool = False,
    calibration: str = "minmax",
    calib_size: int = 256,
    calib_balanced: bool = False,
    n_bootstrap: int = 1000,
) -> AuditResult:
    parsed = parse_precisions(precisions)
    quantize = make_quantizer(
        method,
        parsed,
        dataset.train,
        qat_config=qat_config,
        lsq=lsq,
        calibration=calibration,
        calib_size=calib_size,
        calib_balanced=calib_balanced,
        seed=dataset.spec.seed,
        show_progress=not quiet,
    )
    result = audit_model(
        model,
        dataset.test,
        dataset.group_names,
        parsed,
        method=method,
        quantize=quantize,
        show_progress=not quiet,
        n_bootstrap=n_bootstrap,
    )
    train_counts = dataset.counts()["train"]
    csv = result.to_csv(out / RESULTS)
    png = plot_group_accuracy(result, out / FIGURE, train_counts=train_counts, title=title)
    console.print(accuracy_table(result, train_counts=train_counts, title=title))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {csv} and {png}")
    return result


@app.command()
def quickstart(
    out: Annotated[
        Path, typer.Option(help="Folder for the checkpoint, results.csv and figure.")
    ] = Path("fairquant-quickstart"),
    model: Model = "resnet18",
    width: Annotated[int, typer.Option(help="Model width (channels of the first stage).")] = 8,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    seed: Annotated[int, typer.Option()] = 0,
    precisions: Annotated[str, typer.Option(help="Comma-separated precisions.")] = ",".join(
        DEFAULT_PRECISIONS
    ),
    quiet: Quiet = False,
    bootstrap: Bootstrap = 1000,
) -> None:
    """Train on the embedded imbalanced digits, quantize to every precision and audit the groups."""
    with _user_errors():
        start = time.perf_counter()
        dataset = load_dataset(default_digits_spec(seed=seed))
        counts = dataset.counts()
        console.print(
            f"[bold]digits[/] (scikit-learn, 8x8 upsampled to {dataset.image_size[0]}x"
            f"{dataset.image_size[1]}), training split imbalanced 16:16:8:8:4:4:2:2:1:1 - "
            f"train {sum(counts['train'])} images {counts['train']}, test {sum(counts['test'])}"
        )
        model_spec = ModelSpec(model, width)
        config = TrainConfig(epochs=epochs, seed=seed)
        net, history = fit(dataset, model_spec, config, show_progress=not quiet)
        console.print(
            f"trained {model} (width {width}) for {epochs} epochs in {history.seconds:.1f}s "
            f"({history.images_per_second:.0f} img/s), final loss {history.epoch_loss[-1]:.3f}"
        )
        ckpt = save_checkpoint(
            out / CHECKPOINT,
            model=net,
            model_spec=model_spec,
            dataset=dataset,
            train_config=config,
            history=history,
        )
        console.print(f"wrote {ckpt}")
        _audit_and_report(
            net,
            dataset,
            precisions,
            out,
            quiet=quiet,
            title=f"digits (imbalanced), {model} w{width}: test accuracy (%) per class",
            n_bootstrap=bootstrap,
        )
        console.print(f"done in {time.perf_counter() - start:.0f}s")


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Checkpoint file to write.")],
    dataset: Dataset = "digits",
    root: Root = None,
    target: Target = None,
    group: Group = None,
    image_size: ImageSize = None,
    imbalance: Imbalance = "none",
    model: Model = "resnet18",
    width: Annotated[
        int | None, typer.Option(help="Model width: channels of the first stage (ViT: hidden).")
    ] = None,
    depth: Annotated[int | None, typer.Option(help="Transformer blocks (vit_small).")] = None,
    patch_size: Annotated[int | None, typer.Option(help="Patch side (vit_small).")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    optimizer: Annotated[str, typer.Option(help="sgd or adamw.")] = "sgd",
    lr: Annotated[float, typer.Option()] = 0.05,
    weight_decay: Annotated[float, typer.Option()] = 5e-4,
    schedule: Annotated[str, typer.Option(help="cosine, step or constant.")] = "cosine",
    seed: Annotated[int, typer.Option()] = 0,
    quiet: Quiet = False,
    grayscale: Grayscale = None,
    option: DataOptions = None,
) -> None:
    """Train a full-precision model; its checkpoint holds all `audit` needs to rebuild it."""
    with _user_errors():
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,  # type: ignore[arg-type]  (validated by TrainConfig)
            lr=lr,
            weight_decay=weight_decay,
            schedule=schedule,  # type: ignore[arg-type]
            seed=seed,
        )
        spec = _data_spec(
            dataset,
            root=root,
            target=target,
            group=group,
            imbalance=imbalance,
            seed=seed,
            option=option,
            grayscale=grayscale,
            image_size=image_size,
        )
        data = load_dataset(spec)
        model_spec = sized_for(ModelSpec(model, width, depth, patch_size), data.image_size[0])
        counts = data.counts()
        console.print(
            f"[bold]{dataset}[/]: target {data.target!r} ({data.num_classes} classes), group "
            f"{data.group!r}; train {counts['train']}, test {counts['test']}"
        )
        net, history = fit(data, model_spec, config, show_progress=not quiet)
        path = save_checkpoint(
            out,
            model=net,
            model_spec=model_spec,
            dataset=data,
            train_config=config,
            history=history,
        )
        console.print(
            f"trained in {history.seconds:.1f}s ({history.images_per_second:.0f} img/s), final "
            f"loss {history.epoch_loss[-1]:.3f}; wrote {path}"
        )


@app.command()
def audit(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint written by `fairquant train`.")],
    precisions: Annotated[str, typer.Option(help="Comma-separated precisions.")] = ",".join(
        DEFAULT_PRECISIONS
    ),
    out: Annotated[
        Path | None, typer.Option(help="Folder for results (default: beside the checkpoint).")
    ] = None,
    method: Annotated[
        str, typer.Option(help="ptq (post-training) or qat (fine-tune through fake quantization).")
    ] = "ptq",
    qat_epochs: Annotated[int, typer.Option(min=1, help="QAT fine-tuning epochs.")] = (
        DEFAULT_QAT_CONFIG.epochs
    ),
    qat_lr: Annotated[float, typer.Option(help="QAT learning rate.")] = DEFAULT_QAT_CONFIG.lr,
    qat_lsq: Annotated[bool, typer.Option(help="QAT learns step sizes (LSQ).")] = False,
    calibration: Annotated[
        str,
        typer.Option(help="Activation range rule for -a<k> precisions: minmax, percentile, mse."),
    ] = "minmax",
    calib_size: Annotated[
        int, typer.Option(min=1, help="Calibration images (training split).")
    ] = 256,
    calib_balanced: Annotated[
        bool, typer.Option(help="Draw calibration images equally from every group.")
    ] = False,
    quiet: Quiet = False,
    bootstrap: Bootstrap = 1000,
) -> None:
    """Quantize a trained model to each precision and compare its groups on the test split."""
    with _user_errors():
        ckpt = load_checkpoint(checkpoint)
        dataset = load_dataset(ckpt.data_spec)
        if dataset.classes != ckpt.classes or dataset.group_names != ckpt.group_names:
            raise ConfigError(
                f"the data rebuilt for {checkpoint} no longer matches it: classes "
                f"{dataset.classes} vs {ckpt.classes}, groups {dataset.group_names} vs "
                f"{ckpt.group_names}"
            )
        _audit_and_report(
            ckpt.model,
            dataset,
            precisions,
            out or checkpoint.parent,
            quiet=quiet,
            method=method,
            qat_config=replace(DEFAULT_QAT_CONFIG, epochs=qat_epochs, lr=qat_lr),
            lsq=qat_lsq,
            calibration=calibration,
            calib_size=calib_size,
            calib_balanced=calib_balanced,
            title=f"{ckpt.data_spec.name}, {ckpt.model_spec.name}: test accuracy (%) by "
            f"{ckpt.group}",
            n_bootstrap=bootstrap,
        )


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
    with _user_errors():
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


@app.command()
def datasets(
    dataset: Annotated[
        str | None, typer.Option(help="Count this dataset's samples (needs --root).")
    ] = None,
    root: Root = None,
    target: Target = None,
    group: Group = None,
    imbalance: Annotated[
        str, typer.Option(help="'paper', 'none' or ratios per class (training split).")
    ] = "none",
    seed: Annotated[int, typer.Option()] = 0,
    option: DataOptions = None,
) -> None:
    """List the datasets fairquant reads or, with --dataset and --root, count their samples."""
    with _user_errors():
        if dataset is None:
            table = Table(title="Datasets (fairquant datasets --dataset NAME --root PATH)")
            for column in ("name", "reads", "attributes", "default target"):
                table.add_column(column)
            table.add_row("digits", "scikit-learn's bundled 8x8 digits (no root)", "digit", "digit")
            for source in SOURCES.values():
                table.add_row(
                    source.name, source.description, source.attribute_help, source.default_target
                )
            console.print(table)
            return
        source = get_source(dataset)
        spec = _data_spec(
            dataset,
            root=root,
            target=target,
            group=group,
            imbalance=imbalance,
            seed=seed,
            option=option,
        )
        counts = source.counts(spec)
        wide = counts.pivot_table(
            index=["target", "group"], columns="split", values="n", fill_value=0, sort=False
        )
        splits = [s for s in ("train", "test") if s in wide.columns]
        table = Table(
            title=f"{dataset} at {root}: samples per split x target x group",
            title_justify="left",
        )
        table.add_column("target")
        table.add_column("group")
        for column in (*splits, "total"):
            table.add_column(column, justify="right")
        for (t, g), row in wide.iterrows():
            values = [int(row[s]) for s in splits]
            table.add_row(str(t), str(g), *map(str, values), str(sum(values)))
        totals = [int(wide[s].sum()) for s in splits]
        table.add_row("all", "all", *map(str, totals), str(sum(totals)), style="bold")
        console.print(table)


@app.command()
def explain(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint written by `fairquant train`.")],
    precisions: Annotated[str, typer.Option(help="Comma-separated precisions.")] = "fp32,int4",
    out: Annotated[
        Path | None, typer.Option(help="Folder for the tables and figures (default: beside it).")
    ] = None,
    probes: Annotated[
        int, typer.Option(min=10, help="Most Hutchinson probes per group (after Hutch++'s sketch).")
    ] = 100,
    rtol: Annotated[
        float, typer.Option(min=0.0, help="Stop the trace at this relative standard error.")
    ] = 0.05,
    curvature: Annotated[str, typer.Option(help="hessian or ggn.")] = "hessian",
    piecewise_linear: Annotated[
        bool,
        typer.Option(
            help="The model is piecewise linear (ReLU/BatchNorm): trace exact, no probes."
        ),
    ] = False,
    samples_per_group: Annotated[
        int | None, typer.Option(min=1, help="Curvature on at most this many test samples a group.")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    quiet: Quiet = False,
) -> None:
    """Explain the disparity: impact flow and curvature factors per group and precision."""
    from fairquant.explain import explain_model
    from fairquant.report.explain import factor_table, plot_explanation

    with _user_errors():
        ckpt = load_checkpoint(checkpoint)
        dataset = load_dataset(ckpt.data_spec)
        if dataset.group_names != ckpt.group_names:
            raise ConfigError(
                f"the data rebuilt for {checkpoint} no longer matches it: groups "
                f"{dataset.group_names} vs {ckpt.group_names}"
            )
        if curvature not in ("hessian", "ggn"):
            raise ConfigError(f"--curvature {curvature!r}: expected 'hessian' or 'ggn'")
        start = time.perf_counter()
        result = explain_model(
            ckpt.model,
            dataset.test,
            dataset.group_names,
            parse_precisions(precisions),
            train_counts=dataset.counts()["train"],
            curvature=curvature,  # type: ignore[arg-type]
            piecewise_linear=piecewise_linear or None,
            rtol=rtol,
            max_probes=probes,
            samples_per_group=samples_per_group,
            seed=seed,
            show_progress=not quiet,
        )
        folder = out or checkpoint.parent
        paths = [*result.to_csv(folder), *plot_explanation(result, folder)]
        console.print(factor_table(result, title=f"{ckpt.data_spec.name}: factors by {ckpt.group}"))
        rho = result.correlations
        for _, row in rho.iterrows():
            console.print(
                f"spearman {row.factor}@{row.precision} vs {row.against}: rho={row.rho:+.2f} "
                f"(p={row.p_value:.2g}, {row.groups} groups)"
            )
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}")
        console.print(
            f"wrote {', '.join(p.name for p in paths)} to {folder} in "
            f"{time.perf_counter() - start:.0f}s"
        )


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory with results.csv (fairquant run/mitigate/audit).")
    ],
    out: Annotated[
        Path | None, typer.Option(help="The HTML file (default: RUN_DIR/report.html).")
    ] = None,
    format: Annotated[
        str, typer.Option("--format", help="Comma-separated: html, md (Markdown), tex (LaTeX).")
    ] = "html,md,tex",
) -> None:
    """Write one self-contained HTML report of a run directory, and its tables for papers."""
    from fairquant.report.html import parse_formats, write_report

    with _user_errors():
        start = time.perf_counter()
        paths = write_report(run_dir, out=out, formats=parse_formats(format))
        console.print(
            f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.0f}s"
        )


@app.command()
def run(
    config: Annotated[
        str | None,
        typer.Argument(
            help="Experiment YAML file, or preset:NAME (liu2025, bellam-kim, five-arch)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/<name>[-<scale>]).")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="A shipped preset, instead of CONFIG.")] = None,
    scale: Annotated[
        str | None, typer.Option(help="tiny, cpu or gpu: the file's `scales` entry (presets: cpu).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Folder the datasets' roots are relative to (presets: ../shared/data)."),
    ] = None,
    backend: Backend = "local",
    workers: Workers = None,
    address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster (e.g. auto or ray://head:10001).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Run an experiment grid resumably into a run directory (results.csv, config.yaml)."""
    from fairquant.experiments import load_config, run_experiment
    from fairquant.experiments.presets import PREFIX, load_preset

    with _user_errors():
        if preset is not None and config is not None:
            raise ConfigError("give either CONFIG or --preset, not both")
        if preset is None and config is None:
            raise ConfigError("give an experiment file, preset:NAME or --preset NAME")
        name = preset or config or ""
        if preset is not None or name.startswith(PREFIX):
            scale = scale or "cpu"
            experiment = load_preset(name, scale=scale, data_root=data or Path("../shared/data"))
        else:
            experiment = load_config(Path(name), scale=scale, data_root=data)
        run_dir = out or Path("runs") / (experiment.name + (f"-{scale}" if scale else ""))
        summary = run_experiment(
            experiment,
            run_dir,
            backend=backend,
            workers=workers,
            address=address,
            show_progress=not quiet,
        )
        console.print(
            f"{summary.cells} cells: {summary.ran} run now ({summary.trained} trained), "
            f"{summary.skipped} already done; wrote {summary.results} in {summary.seconds:.0f}s"
        )


@app.command()
def mitigate(
    out: Annotated[Path, typer.Option(help="Run directory (reruns skip finished cells).")],
    mitigations: Annotated[
        str,
        typer.Option(
            help="Comma-separated mitigations: none, gt, re, re-fixed:N, over, under, weighted"
            "[:inverse-frequency|:effective-number|:w1,w2,...], focal[:G], balanced-calib, "
            "fairqat, or several joined with '+'."
        ),
    ] = "none,gt,re,over,weighted,fairqat,balanced-calib",
    dataset: Dataset = "digits",
    root: Root = None,
    target: Target = None,
    group: Group = None,
    image_size: ImageSize = None,
    imbalance: Imbalance = "none",
    model: Model = "resnet18",
    width: Annotated[int | None, typer.Option(help="Model width.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    lr: Annotated[float, typer.Option()] = 0.05,
    seeds: Annotated[str, typer.Option(help="Comma-separated training seeds.")] = "0,1,2",
    data_seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 0,
    precisions: Annotated[
        str, typer.Option(help="Comma-separated weight precisions (PTQ and QAT).")
    ] = "fp32,int8,int4",
    act_precisions: Annotated[
        str | None,
        typer.Option(
            help="Activation-quantized precisions audited with PTQ only (default int8-a8,int4-a8 "
            "when a mitigation calibrates balanced, else none; '' for none)."
        ),
    ] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated: ptq, qat.")] = "ptq,qat",
    qat_epochs: Annotated[int, typer.Option(min=1, help="QAT fine-tuning epochs.")] = (
        DEFAULT_QAT_CONFIG.epochs
    ),
    qat_lr: Annotated[float, typer.Option(help="QAT learning rate.")] = DEFAULT_QAT_CONFIG.lr,
    calib_size: Annotated[
        int, typer.Option(min=1, help="Calibration images for -a<k> precisions.")
    ] = 256,
    n_bootstrap: Bootstrap = 0,
    report_only: Annotated[
        bool,
        typer.Option(
            help="Only summarise and print what --out holds (e.g. a run still going or stopped)."
        ),
    ] = False,
    backend: Backend = "local",
    workers: Workers = None,
    quiet: Quiet = False,
    grayscale: Grayscale = None,
    option: DataOptions = None,
) -> None:
    """Compare mitigations on the same data and seeds, quantized with PTQ and QAT: per-group,
    overall and worst-group accuracy and phi(D) with intervals across seeds, paired tests against
    `none`, and a Pareto figure of accuracy against phi(D)."""
    # imported here, not at the top, so this command's additions stay in one place of the file
    from fairquant.experiments.mitigation import compare_mitigations, summarize
    from fairquant.report.mitigation import mitigation_tables, paired_tests_table, plot_pareto

    with _user_errors():
        start = time.perf_counter()
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r}: expected comma-separated integers") from None
        spec = _data_spec(
            dataset,
            root=root,
            target=target,
            group=group,
            imbalance=imbalance,
            seed=data_seed,
            option=option,
            grayscale=grayscale,
            image_size=image_size,
        )
        result = (
            summarize(out)
            if report_only
            else compare_mitigations(
                spec,
                ModelSpec(model, width),
                TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr),
                out,
                mitigations=mitigations,
                precisions=precisions,
                act_precisions=act_precisions,
                methods=[m.strip() for m in methods.split(",") if m.strip()],
                seeds=seed_list,
                qat=replace(DEFAULT_QAT_CONFIG, epochs=qat_epochs, lr=qat_lr),
                calib_size=calib_size,
                n_bootstrap=n_bootstrap,
                backend=backend,
                workers=workers,
                show_progress=not quiet,
            )
        )
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
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        png = plot_pareto(result, out / "pareto.png")
        console.print(
            f"wrote results.csv, summary.csv, tests.csv, config.yaml and {png.name} to {out} in "
            f"{time.perf_counter() - start:.0f}s"
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
