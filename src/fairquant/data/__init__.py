"""Datasets with a target and a protected group: specs, splits, the registry and loaders."""

from fairquant.data.base import DataSpec, GroupedDataset, Split
from fairquant.data.digits import default_digits_spec
from fairquant.data.imbalance import PAPER_RATIO, imbalance_indices
from fairquant.data.registry import DATASETS, load_dataset, register_dataset

__all__ = [
    "DATASETS",
    "PAPER_RATIO",
    "DataSpec",
    "GroupedDataset",
    "Split",
    "default_digits_spec",
    "imbalance_indices",
    "load_dataset",
    "register_dataset",
]
