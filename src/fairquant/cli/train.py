"""`fairquant train`: train a full-precision model and write its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fairquant.cli._app import (
    DataOptions,
    Dataset,
    Grayscale,
    Group,
    ImageSize,
    Imbalance,
    Model,
    Quiet,
    Root,
    Target,
    app,
    choice,
    console,
    data_spec,
    user_errors,
)
from fairquant.data import load_dataset
from fairquant.models import ModelSpec
from fairquant.models.registry import sized_for
from fairquant.train import TrainConfig, fit, save_checkpoint
from fairquant.train.loop import Optimizer, Schedule

OptimizerChoice = choice("OptimizerChoice", Optimizer)
ScheduleChoice = choice("ScheduleChoice", Schedule)


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
    epochs: Annotated[int, typer.Option(min=1)] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(min=2)] = TrainConfig.batch_size,
    optimizer: OptimizerChoice = TrainConfig.optimizer,
    lr: Annotated[float, typer.Option()] = TrainConfig.lr,
    weight_decay: Annotated[float, typer.Option()] = TrainConfig.weight_decay,
    schedule: ScheduleChoice = TrainConfig.schedule,
    seed: Annotated[int, typer.Option()] = TrainConfig.seed,
    quiet: Quiet = False,
    grayscale: Grayscale = None,
    option: DataOptions = None,
) -> None:
    """Train a full-precision model; its checkpoint holds all `audit` needs to rebuild it."""
    with user_errors():
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer.value,
            lr=lr,
            weight_decay=weight_decay,
            schedule=schedule.value,
            seed=seed,
        )
        spec = data_spec(
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
