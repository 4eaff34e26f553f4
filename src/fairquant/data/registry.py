"""Dataset registry: a name maps to a loader that turns a :class:`DataSpec` into a dataset."""

from __future__ import annotations

from collections.abc import Callable

from fairquant.data.base import DataSpec, GroupedDataset
from fairquant.data.digits import load_digits_dataset
from fairquant.errors import unknown_name

Loader = Callable[[DataSpec], GroupedDataset]

DATASETS: dict[str, Loader] = {"digits": load_digits_dataset}


def register_dataset(name: str, loader: Loader) -> None:
    """Make ``loader`` available under ``name`` (to the CLI and to checkpoints)."""
    DATASETS[name] = loader


def load_dataset(spec: DataSpec) -> GroupedDataset:
    """Build the dataset a spec describes; an unknown name lists the known ones."""
    try:
        loader = DATASETS[spec.name]
    except KeyError:
        raise unknown_name("dataset", spec.name, DATASETS) from None
    return loader(spec)
