"""`fairquant quickstart` and `fairquant audit`: quantize a model and compare its groups."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from fairquant._audit import AuditResult, audit_model
from fairquant.cli._app import (
    CHECKPOINT,
    FIGURE,
    RESULTS,
    Bootstrap,
    Model,
    Quiet,
    app,
    console,
    user_errors,
)
from fairquant.data import GroupedDataset, default_digits_spec, load_dataset
from fairquant.errors import ConfigError
from fairquant.models import ModelSpec
from fairquant.quant import DEFAULT_PRECISIONS, parse_precisions
from fairquant.quant.methods import make_quantizer
from fairquant.quant.qat import DEFAULT_QAT_CONFIG
from fairquant.report import accuracy_table, plot_group_accuracy
from fairquant.train import TrainConfig, fit, load_checkpoint, save_checkpoint


def audit_and_report(
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
    with user_errors():
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
        audit_and_report(
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
    with user_errors():
        ckpt = load_checkpoint(checkpoint)
        dataset = load_dataset(ckpt.data_spec)
        if dataset.classes != ckpt.classes or dataset.group_names != ckpt.group_names:
            raise ConfigError(
                f"the data rebuilt for {checkpoint} no longer matches it: classes "
                f"{dataset.classes} vs {ckpt.classes}, groups {dataset.group_names} vs "
                f"{ckpt.group_names}"
            )
        audit_and_report(
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
