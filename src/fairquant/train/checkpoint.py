"""Checkpoints that carry everything needed to rebuild the model and its data.

A checkpoint is a plain dict of tensors and primitive values, so it loads with
``torch.load(..., weights_only=True)``: nothing in the file is ever executed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairquant import __version__
from fairquant._io import atomic_write
from fairquant.data.base import DataSpec, GroupedDataset, Split
from fairquant.data.registry import load_dataset
from fairquant.data.split import validation_split
from fairquant.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FairquantError,
    torch_load_error,
)
from fairquant.models.registry import ModelSpec, build_model
from fairquant.train.loop import TrainConfig, TrainHistory

FORMAT = "fairquant-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A trained model with the specs of its architecture, data and training."""

    model: nn.Module
    model_spec: ModelSpec
    data_spec: DataSpec
    train_config: TrainConfig | None
    classes: list[str]
    group_names: list[str]
    target: str
    group: str
    history: dict[str, Any]


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    model_spec: ModelSpec,
    dataset: GroupedDataset,
    train_config: TrainConfig | None = None,
    history: TrainHistory | None = None,
) -> Path:
    """Write the model's weights and its specs atomically to ``path``."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "fairquant_version": __version__,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model": model_spec.to_dict(),
        "data": dataset.spec.to_dict(),
        "dataset": {
            "classes": list(dataset.classes),
            "group_names": list(dataset.group_names),
            "target": dataset.target,
            "group": dataset.group,
            "in_channels": dataset.in_channels,
        },
        "train": train_config.to_dict() if train_config is not None else None,
        "history": history.to_dict() if history is not None else {},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` and rebuild its model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types (UnpicklingError, KeyError, zip errors)
        raise torch_load_error(
            "--checkpoint",
            path,
            e,
            "expected a checkpoint written by `fairquant train`; a model trained elsewhere is "
            "audited with --model and --weights, a state_dict saved with "
            "torch.save(model.state_dict(), FILE) or a .safetensors file",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a fairquant checkpoint (no format={FORMAT!r} "
            "entry); expected a file written by `fairquant train`"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')!r}; this fairquant reads "
            f"version {VERSION}"
        )
    try:
        model_spec = ModelSpec.from_dict(payload["model"])
        data_spec = DataSpec.from_dict(payload["data"])
        info = payload["dataset"]
        model = build_model(
            model_spec, in_channels=info["in_channels"], num_classes=len(info["classes"])
        )
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError, FairquantError) as e:
        raise CheckpointError(f"{path} is a damaged fairquant checkpoint: {e}") from None
    model.eval()
    train = payload.get("train")
    return Checkpoint(
        model=model,
        model_spec=model_spec,
        data_spec=data_spec,
        train_config=TrainConfig.from_dict(train) if train else None,
        classes=list(info["classes"]),
        group_names=list(info["group_names"]),
        target=info["target"],
        group=info["group"],
        history=dict(payload.get("history") or {}),
    )


def load_with_data(path: str | Path) -> tuple[Checkpoint, GroupedDataset]:
    """The checkpoint at ``path`` and the dataset it was trained on, rebuilt from its spec.

    The rebuilt data must have the classes and groups the checkpoint recorded, in the same order
    (a model's outputs and a table's group rows are read by position): a dataset file changed
    since training is refused with a :class:`~fairquant.errors.DataError` naming both.
    """
    checkpoint = load_checkpoint(path)
    dataset = load_dataset(checkpoint.data_spec)
    if dataset.classes != checkpoint.classes or dataset.group_names != checkpoint.group_names:
        raise DataError(
            f"the data rebuilt for {path} no longer matches it: classes {dataset.classes} vs "
            f"{checkpoint.classes}, groups {dataset.group_names} vs {checkpoint.group_names}"
        )
    return checkpoint, dataset


def held_out_validation(
    checkpoint: Checkpoint, dataset: GroupedDataset, *, size: float | int | None = None
) -> tuple[Split, str]:
    """The validation split of ``checkpoint``'s training and its sentence
    (:func:`held_out_splits` without the rest of the training split)."""
    _, validation, note = held_out_splits(checkpoint, dataset, size=size)
    return validation, note


def held_out_splits(
    checkpoint: Checkpoint, dataset: GroupedDataset, *, size: float | int | None = None
) -> tuple[Split, Split, str]:
    """``(rest, validation, note)``: the validation split of ``checkpoint``'s training, rebuilt,
    the training samples outside it (what calibration may draw without touching validation), and
    a sentence saying what the validation split is.

    A model trained with ``TrainConfig.val_size`` never saw that split
    (:func:`~fairquant.train.fit.fit` holds it out with the config's seed), so it is rebuilt
    exactly, and ``size`` must be omitted or agree with it. A checkpoint trained on its whole
    training split has none: ``size`` then carves one (seeded by the data spec's seed) and the
    sentence says the model was trained on those images, so that a selection on it is optimistic.
    """
    config = checkpoint.train_config
    held = config.val_size if config is not None else 0
    if held:
        if size is not None and size != held:
            raise ConfigError(
                f"the checkpoint holds out a validation split of val_size={held}; a size of "
                f"{size} would differ from it (omit the size to use the checkpoint's)"
            )
        rest, validation = validation_split(dataset.train, held, seed=config.seed)
        return (
            rest,
            validation,
            (
                f"the checkpoint's validation split ({len(validation)} training images held out of "
                f"training, val_size={held}, seed {config.seed})"
            ),
        )
    if size is None:
        raise ConfigError(
            "the checkpoint was trained without a validation split (train with --val-size); give "
            "a validation size to carve one from its training split"
        )
    rest, validation = validation_split(dataset.train, size, seed=dataset.spec.seed)
    return (
        rest,
        validation,
        (
            f"a validation split of {len(validation)} images carved from the training split (seed "
            f"{dataset.spec.seed}): the model was trained on them, so what is selected on them is "
            "judged optimistically; train with --val-size to hold one out"
        ),
    )
