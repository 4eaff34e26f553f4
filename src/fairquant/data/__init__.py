"""Datasets with a target and a protected group: specs, splits, the registry and loaders."""

from fairquant.data.base import DataSpec, GroupedDataset, Split
from fairquant.data.digits import default_digits_spec
from fairquant.data.imbalance import PAPER_RATIO, imbalance_indices
from fairquant.data.registry import (
    DATASETS,
    SOURCES,
    get_source,
    load_dataset,
    register_dataset,
    register_source,
)
from fairquant.data.source import ImageSource
from fairquant.data.split import validation_split
from fairquant.options import DataOptions

__all__ = [
    "DATASETS",
    "PAPER_RATIO",
    "SOURCES",
    "DataOptions",
    "DataSpec",
    "GroupedDataset",
    "ImageSource",
    "Split",
    "default_digits_spec",
    "get_source",
    "imbalance_indices",
    "load_dataset",
    "register_dataset",
    "register_source",
    "validation_split",
]
