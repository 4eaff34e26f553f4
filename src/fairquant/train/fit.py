"""Build a model for a dataset from its spec, seeded, and train it: the one training entry."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fairquant.data.base import GroupedDataset, Split
from fairquant.errors import ConfigError
from fairquant.models.registry import ModelSpec, build_model
from fairquant.train.loop import TrainConfig, TrainHistory, train_model


def fit(
    dataset: GroupedDataset,
    model_spec: ModelSpec,
    config: TrainConfig,
    *,
    train: Split | None = None,
    class_weights: Tensor | None = None,
    focal_gamma: float = 0.0,
    show_progress: bool = True,
) -> tuple[nn.Module, TrainHistory]:
    """A freshly initialised (seeded by ``config.seed``) model trained on ``dataset.train``,
    mirrored at random in augmentation only where ``dataset.flip_ok``.

    ``train`` replaces the training split (e.g. a resampled or augmented one: a mitigation's,
    :func:`~fairquant.mitigate.pipeline.train_mitigated`); the model is still sized for
    ``dataset``'s channels and classes. ``class_weights`` and ``focal_gamma`` go to
    :func:`~fairquant.train.loop.train_model`.
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
    history = train_model(
        model,
        dataset.train if train is None else train,
        config,
        flip_ok=dataset.flip_ok,
        class_weights=class_weights,
        focal_gamma=focal_gamma,
        show_progress=show_progress,
    )
    return model, history
