"""Build a model for a dataset from its spec, seeded, and train it: the one training entry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from fairquant.data.base import GroupedDataset, Split
from fairquant.data.split import validation_split
from fairquant.errors import ConfigError
from fairquant.models.registry import ModelSpec, build_model, sized_for
from fairquant.train.checkpoint import save_checkpoint
from fairquant.train.loop import TrainConfig, TrainHistory, train_model


def fit(
    dataset: GroupedDataset,
    model_spec: ModelSpec,
    config: TrainConfig,
    *,
    prepare: Callable[[Split], Split] | None = None,
    class_weights: Tensor | None = None,
    focal_gamma: float = 0.0,
    show_progress: bool = True,
) -> tuple[nn.Module, TrainHistory]:
    """A freshly initialised (seeded by ``config.seed``) model trained on ``dataset.train``,
    mirrored at random in augmentation only where ``dataset.flip_ok``.

    With ``config.val_size`` a validation split (:func:`~fairquant.data.validation_split`, seeded
    by ``config.seed``) is held out of ``dataset.train`` first; ``prepare`` then maps the rest to
    the data trained on (e.g. a mitigation's resampling or balancing augmentation:
    :func:`~fairquant.mitigate.pipeline.train_mitigated`), so no copy of a validation image is
    trained on. The model is sized for ``dataset``'s channels and classes. ``class_weights`` and
    ``focal_gamma`` go to :func:`~fairquant.train.loop.train_model`.
    """
    if dataset.train.x.ndim != 4:  # a table's (N, F) feature rows: the zoo holds image models
        raise ConfigError(
            f"dataset {dataset.spec.name!r} holds feature rows {tuple(dataset.train.x.shape[1:])}, "
            "not images: fairquant trains image models only; train a tabular model with your own "
            "script and audit it with `fairquant audit --model package.module:function`"
        )
    torch.manual_seed(config.seed)
    model = build_model(
        model_spec, in_channels=dataset.in_channels, num_classes=dataset.num_classes
    )
    train, validation = dataset.train, None
    if config.val_size:
        train, validation = validation_split(train, config.val_size, seed=config.seed)
    if prepare is not None:
        train = prepare(train)
    history = train_model(
        model,
        train,
        config,
        validation=validation,
        flip_ok=dataset.flip_ok,
        class_weights=class_weights,
        focal_gamma=focal_gamma,
        show_progress=show_progress,
    )
    return model, history


def fit_checkpoint(
    path: str | Path,
    dataset: GroupedDataset,
    model_spec: ModelSpec,
    config: TrainConfig,
    *,
    show_progress: bool = True,
) -> tuple[Path, TrainHistory]:
    """:func:`fit` a model of ``model_spec`` sized for ``dataset`` (:func:`sized_for`: a ViT's
    image side) and write its checkpoint atomically to ``path``: the path and the history."""
    spec = sized_for(model_spec, dataset.image_size[0])
    model, history = fit(dataset, spec, config, show_progress=show_progress)
    written = save_checkpoint(
        path,
        model=model,
        model_spec=spec,
        dataset=dataset,
        train_config=config,
        history=history,
    )
    return written, history
