"""Build a model for a dataset from its spec, seeded, and train it."""

from __future__ import annotations

import torch
from torch import nn

from fairquant.data.base import GroupedDataset
from fairquant.models.registry import ModelSpec, build_model
from fairquant.train.loop import TrainConfig, TrainHistory, train_model


def fit(
    dataset: GroupedDataset,
    model_spec: ModelSpec,
    config: TrainConfig,
    *,
    show_progress: bool = True,
) -> tuple[nn.Module, TrainHistory]:
    """A freshly initialised (seeded by ``config.seed``) model trained on ``dataset.train``,
    mirrored at random in augmentation only where ``dataset.flip_ok``."""
    torch.manual_seed(config.seed)
    model = build_model(
        model_spec, in_channels=dataset.in_channels, num_classes=dataset.num_classes
    )
    history = train_model(
        model, dataset.train, config, flip_ok=dataset.flip_ok, show_progress=show_progress
    )
    return model, history
