"""Dataset registry: a name maps to a loader that turns a :class:`DataSpec` into a dataset."""

from __future__ import annotations

from collections.abc import Callable

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


def get_source(name: str) -> ImageSource:
    """The registered file-based dataset ``name``; an unknown name lists the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise unknown_name("file-based dataset", name, SOURCES) from None


def load_dataset(spec: DataSpec) -> GroupedDataset:
    """Build the dataset a spec describes; an unknown name lists the known ones."""
    try:
        loader = DATASETS[spec.name]
    except KeyError:
        raise unknown_name("dataset", spec.name, DATASETS) from None
    return loader(spec)
