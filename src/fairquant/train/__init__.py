"""Training: the seeded loop and checkpoints that rebuild model and data."""

from fairquant.train.checkpoint import (
    Checkpoint,
    held_out_splits,
    held_out_validation,
    load_checkpoint,
    load_with_data,
    save_checkpoint,
)
from fairquant.train.fit import fit, fit_checkpoint
from fairquant.train.loop import TrainConfig, TrainHistory, train_model

__all__ = [
    "Checkpoint",
    "TrainConfig",
    "TrainHistory",
    "fit",
    "fit_checkpoint",
    "held_out_splits",
    "held_out_validation",
    "load_checkpoint",
    "load_with_data",
    "save_checkpoint",
    "train_model",
]
