"""Dataset registry: a name maps to a loader that turns a :class:`DataSpec` into a dataset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from fairquant.data.base import DataSpec, GroupedDataset
from fairquant.data.celeba import CelebA
from fairquant.data.cifar10 import CIFAR10
from fairquant.data.digits import load_digits_dataset
from fairquant.data.fer2013 import FER2013
from fairquant.data.folder import ImageFolder
from fairquant.data.mnist import MNIST
from fairquant.data.source import ImageSource
from fairquant.data.table import load_table
from fairquant.data.utkface import UTKFace
from fairquant.errors import unknown_name

Loader = Callable[[DataSpec], GroupedDataset]

DATASETS: dict[str, Loader] = {"digits": load_digits_dataset, "table": load_table}

#: The file-based datasets, whose labels can be counted without decoding (``fairquant datasets``).
SOURCES: dict[str, ImageSource] = {}


def register_dataset(name: str, loader: Loader) -> None:
    """Make ``loader`` available under ``name`` (to the CLI and to checkpoints)."""
    DATASETS[name] = loader


def register_source(source: ImageSource) -> None:
    """Register a file-based dataset format under its name."""
    SOURCES[source.name] = source
    register_dataset(source.name, source.load)


for _source in (UTKFace(), FER2013(), CIFAR10(), MNIST(), CelebA(), ImageFolder()):
    register_source(_source)


#: What the datasets that are not file formats read, for listings: reads, attributes, target.
_LOADERS = {
    "digits": ("scikit-learn's bundled 8x8 digits (no root)", "digit", "digit"),
    "table": (
        "a CSV or Parquet table: numeric feature columns, a label and a group column",
        "label, group, or any other column",
        "label",
    ),
}


def catalogue() -> list[tuple[str, str, str, str]]:
    """Every registered dataset as (name, what it reads, its attributes, default target)."""
    rows = []
    for name in DATASETS:
        if name in SOURCES:
            source = SOURCES[name]
            rows.append((name, source.description, source.attribute_help, source.default_target))
        else:
            rows.append((name, *_LOADERS.get(name, ("a registered loader", "", ""))))
    return rows


def get_source(name: str) -> ImageSource:
    """The registered file-based dataset ``name``; an unknown name lists the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise unknown_name("file-based dataset", name, SOURCES) from None


def describe(spec: DataSpec) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Samples per (target, group) and split, and the coding of target and group
    (:func:`~fairquant.data.base.coding`), of the dataset ``spec`` names: counted from the labels
    alone for a file-based dataset, from the loaded data for the others (``digits``, ``table``)."""
    if spec.name in SOURCES:
        return SOURCES[spec.name].describe(spec)
    data = load_dataset(spec)
    return data.count_table(), data.coding()


def load_dataset(spec: DataSpec) -> GroupedDataset:
    """Build the dataset a spec describes; an unknown name lists the known ones."""
    try:
        loader = DATASETS[spec.name]
    except KeyError:
        raise unknown_name("dataset", spec.name, DATASETS) from None
    return loader(spec)
