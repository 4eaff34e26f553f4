"""`fairquant train`: train a full-precision model and write its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fairquant._io import checked_file
from fairquant.cli._app import (
    DATA,
    BatchSize,
    Epochs,
    LearningRate,
    Model,
    Quiet,
    app,
    choice,
    config_of,
    console,
    data_options,
    fraction_or_count,
    refuse_given,
    user_errors,
)
from fairquant.options import (
    DataOptions,
    Optimizer,
    Schedule,
    Select,
    SelectMetric,
    TrainConfig,
)

if TYPE_CHECKING:
    from fairquant.data import GroupedDataset
    from fairquant.train import TrainHistory

OptimizerChoice = choice("OptimizerChoice", Optimizer)
ScheduleChoice = choice("ScheduleChoice", Schedule)
SelectChoice = choice("SelectChoice", Select)
SelectMetricChoice = choice("SelectMetricChoice", SelectMetric)


@app.command()
@data_options(seed="seed")
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(metavar="FILE", help="Checkpoint file to write.")],
    data: DataOptions = DATA,
    model: Model = "resnet18",
    width: Annotated[
        int | None,
        typer.Option(help="Model width: channels of the first stage (ViT: hidden).", metavar="N"),
    ] = None,
    depth: Annotated[
        int | None, typer.Option(help="Transformer blocks (vit_small).", metavar="N")
    ] = None,
    patch_size: Annotated[
        int | None, typer.Option(help="Patch side (vit_small).", metavar="N")
    ] = None,
    epochs: Epochs = TrainConfig.epochs,
    batch_size: BatchSize = TrainConfig.batch_size,
    optimizer: Annotated[
        OptimizerChoice, typer.Option(help="SGD with momentum, or AdamW.")
    ] = TrainConfig.optimizer,
    lr: LearningRate = TrainConfig.lr,
    weight_decay: Annotated[
        float, typer.Option(metavar="X", help="Weight decay.")
    ] = TrainConfig.weight_decay,
    schedule: Annotated[
        ScheduleChoice, typer.Option(help="Learning-rate schedule over the epochs.")
    ] = TrainConfig.schedule,
    seed: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Seed of training (initialisation, batch order, augmentation) and of the "
            "dataset's train/test split.",
        ),
    ] = TrainConfig.seed,
    augment: Annotated[
        bool,
        typer.Option(
            help="Random crops after reflect padding, and left-right flips where the data allows "
            "them (not digits), seeded by --seed."
        ),
    ] = TrainConfig.augment,
    crop_padding: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Padding of the random crop in pixels (default: side / 8).",
            metavar="PIXELS",
        ),
    ] = TrainConfig.crop_padding,
    flip: Annotated[
        bool, typer.Option(help="Left-right flips in the augmentation (where the data allows).")
    ] = TrainConfig.flip,
    val_size: Annotated[
        float,
        typer.Option(
            min=0,
            help="Validation split held out of training (stratified by target x group, seeded "
            "by --seed): a fraction in (0, 1) or a count; 0 trains on all of it.",
            metavar="SIZE",
        ),
    ] = TrainConfig.val_size,
    select: Annotated[
        SelectChoice,
        typer.Option(help="Keep the last epoch, or the best on the validation split."),
    ] = TrainConfig.select,
    select_metric: Annotated[
        SelectMetricChoice, typer.Option(help="What --select best and --patience watch.")
    ] = TrainConfig.select_metric,
    patience: Annotated[
        int | None,
        typer.Option(
            min=1, help="Stop after this many epochs without a validation improvement.", metavar="N"
        ),
    ] = TrainConfig.patience,
    quiet: Quiet = False,
) -> None:
    """Train a full-precision model; its checkpoint holds all `audit` needs to rebuild it."""
    from fairquant.data import DataSpec, load_dataset
    from fairquant.models import ModelSpec
    from fairquant.train import fit_checkpoint

    with user_errors():
        checked_file(out)  # before any compute
        refuse_unused(ctx, augment=augment, select=select.value, patience=patience)
        config = config_of(TrainConfig, ctx, val_size=fraction_or_count(val_size))
        dataset = load_dataset(DataSpec.from_options(data))
        show_data(dataset)
        path, history = fit_checkpoint(
            out,
            dataset,
            ModelSpec(model, width, depth, patch_size),
            config,
            show_progress=not quiet,
        )
        show_history(history, path)


def refuse_unused(ctx: typer.Context, *, augment: bool, select: str, patience: int | None) -> None:
    """The augmentation's options without augmentation, and the metric watched on the validation
    split where nothing watches it, are errors."""
    if not augment:
        refuse_given(
            ctx, ("crop_padding", "flip"), "with --no-augment: they shape the augmentation"
        )
    if select == "last" and patience is None:
        refuse_given(
            ctx,
            ("select_metric",),
            "without --select best or --patience: it is what they watch on the validation split",
        )


def show_data(data: GroupedDataset) -> None:
    counts = data.counts()
    console.print(
        f"[bold]{data.spec.name}[/]: target {data.target!r} ({data.num_classes} classes), group "
        f"{data.group!r}; train {counts['train']}, test {counts['test']}"
    )


def show_history(history: TrainHistory, path: Path) -> None:
    if history.val_accuracy:
        best = history.selected_epoch - 1
        console.print(
            f"validation: epoch {history.selected_epoch} kept, accuracy "
            f"{history.val_accuracy[best]:.1f}%, worst group "
            f"{history.val_worst_group_accuracy[best]:.1f}%"
        )
    console.print(
        f"trained in {history.seconds:.1f}s ({history.images_per_second:.0f} img/s), final "
        f"loss {history.epoch_loss[-1]:.3f}; wrote {path}"
    )
