"""The shared path from a dataset's files to a :class:`GroupedDataset`.

Each format defines how to list its samples and labels (:meth:`ImageSource.scan`, fast, no pixels)
and how to decode pixels for some of them (:meth:`ImageSource.decode`). Everything else is common:
choosing target and group, splitting, subsetting, imbalance, the decode cache, grayscale, resizing
and normalization with the training split's statistics.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from torch import Tensor

from fairquant.data.base import (
    DataSpec,
    GroupedDataset,
    cell_counts,
    coding,
    standardize_,
    wide_counts,
)
from fairquant.data.cache import cached
from fairquant.data.catalog import Catalog
from fairquant.data.files import FileTree, file_fingerprint, require_root
from fairquant.data.images import decode_files, to_float
from fairquant.data.split import Plan, as_int64, plan_splits
from fairquant.data.tabular import parse_pixels, read_csv
from fairquant.errors import ConfigError

#: Options every dataset accepts (``DataSpec.options``).
COMMON_OPTIONS = {
    "grayscale": "convert RGB to one luma channel (BT.601), default false",
    "center_crop": "crop non-square images to a centred square before resizing",
    "split": "'own' (the dataset's split, where it has one) or 'random' (seeded, stratified)",
    "limit": 'a seeded random subset: at most N samples per split, or {"train": N, "test": M}',
    "group_imbalance": "per-group ratios applied to the training split, like imbalance",
    "flip": "whether a mirrored image keeps its labels, so training may flip images at random "
    "(default: the dataset's own rule, true for faces and photos, false for digits and folders)",
}


class ImageSource(ABC):
    """A dataset format: how to list its samples and decode their pixels."""

    name: ClassVar[str]
    description: ClassVar[str]
    default_target: ClassVar[str]
    #: The attributes a target or group can name, for listings.
    attribute_help: ClassVar[str]
    default_group: ClassVar[str | None] = None
    #: Dataset-specific options and what they mean.
    options: ClassVar[dict[str, str]] = {}
    #: Defaults of common options that differ for this dataset.
    option_defaults: ClassVar[dict[str, Any]] = {}
    #: Whether a horizontally mirrored image keeps its labels (option ``flip`` overrides it):
    #: true for faces and natural photos, false where mirroring changes the content (digits).
    flip_ok: ClassVar[bool] = False

    #: What ``DataSpec.root`` must point at, for error messages.
    expected_root: ClassVar[str]

    def root(self, spec: DataSpec) -> Path:
        """``spec.root`` as an existing path, or a :class:`DataError` saying what was expected."""
        return require_root(spec.root, self.name, self.expected_root)

    def root_is_csv(self, spec: DataSpec) -> bool:
        return self.root(spec).suffix.lower() == ".csv"

    @abstractmethod
    def scan(self, spec: DataSpec) -> Catalog:
        """Every sample's key and attributes, without decoding pixels."""

    @abstractmethod
    def decode(self, spec: DataSpec, catalog: Catalog, rows: np.ndarray) -> Tensor:
        """uint8 images (N, C, H, W) for the catalog rows ``rows``, in that order."""

    @abstractmethod
    def fingerprint(self, spec: DataSpec) -> Any:
        """JSON-serializable identity of the source files (paths, sizes, mtimes) for the cache."""

    def decode_options(self, spec: DataSpec) -> dict[str, Any]:
        """The options that can change what :meth:`decode` returns (part of the cache key)."""
        return {
            "size": spec.image_size,
            "center_crop": bool(self.option(spec, "center_crop")),
            "grayscale": bool(self.option(spec, "grayscale")),
        }

    def channels(self, spec: DataSpec) -> int:
        """Channels to decode colour image files to: 1 with option grayscale (smaller cache)."""
        return 1 if self.option(spec, "grayscale") else 3

    def group_default(self, catalog: Catalog) -> str | None:
        """The group when the spec names none (None: the target itself, as in the papers)."""
        return self.default_group

    def flips(self, spec: DataSpec) -> bool:
        """Whether training may mirror this data's images: option ``flip``, else ``flip_ok``."""
        flip = self.option(spec, "flip")
        if flip is None:
            return self.flip_ok
        if not isinstance(flip, bool):
            raise ConfigError(
                f"option flip={flip!r} of dataset {self.name!r}: expected true or false"
            )
        return flip

    def option(self, spec: DataSpec, key: str) -> Any:
        return spec.options.get(key, self.option_defaults.get(key))

    def check_options(self, spec: DataSpec) -> None:
        known = {*COMMON_OPTIONS, *self.options}
        unknown = sorted(set(spec.options) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for dataset {self.name!r}; expected: "
                f"{', '.join(sorted(known))}"
            )

    def plan(self, spec: DataSpec) -> tuple[Catalog, Plan]:
        """The catalog and which rows each split takes (no pixels decoded)."""
        self.check_options(spec)
        catalog = self.scan(spec)
        plan = plan_splits(
            spec,
            catalog,
            default_target=self.default_target,
            default_group=self.group_default(catalog),
        )
        return catalog, plan

    def counts(self, spec: DataSpec, plan: Plan | None = None) -> pd.DataFrame:
        """Samples per split x target x group (non-empty cells), columns split, target, group, n."""
        if plan is None:
            _, plan = self.plan(spec)
        splits = [
            (split, plan.y.codes[idx], plan.g.codes[idx])
            for split, idx in (("train", plan.train), ("test", plan.test))
        ]
        return cell_counts(splits, plan.y.names, plan.g.names)

    def count_table(self, spec: DataSpec) -> pd.DataFrame:
        """:meth:`counts` wide (:func:`~fairquant.data.base.wide_counts`)."""
        return wide_counts(self.counts(spec))

    def describe(self, spec: DataSpec) -> tuple[pd.DataFrame, dict[str, Any]]:
        """:meth:`count_table` and the coding of target and group, from one scan (no pixels)."""
        _, plan = self.plan(spec)
        table = wide_counts(self.counts(spec, plan))
        return table, coding(plan.target, plan.y.names, plan.group, plan.g.names)

    def load(self, spec: DataSpec) -> GroupedDataset:
        """Decode (or read from the cache) the planned samples and build the dataset."""
        catalog, plan = self.plan(spec)
        rows = plan.rows() if spec.options.get("limit") is not None else np.arange(len(catalog))
        digest = hashlib.sha256("\n".join(catalog.keys[i] for i in rows).encode()).hexdigest()
        images = cached(
            self.name,
            {
                "source": self.fingerprint(spec),
                "decode": self.decode_options(spec),
                "samples": digest,
            },
            lambda: self.decode(spec, catalog, rows),
            Tensor,
        )
        position = np.full(len(catalog), -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        kwargs = {
            "size": spec.image_size,
            "grayscale": bool(self.option(spec, "grayscale")),
            "center_crop": bool(self.option(spec, "center_crop")),
        }
        train_x = to_float(images, as_int64(position[plan.train]), **kwargs)
        test_x = to_float(images, as_int64(position[plan.test]), **kwargs)
        train_x, test_x, mean, std = standardize_(train_x, test_x)
        return plan.dataset(spec, train_x, test_x, mean=mean, std=std, flip_ok=self.flips(spec))


class PixelTableOrFiles(ImageSource):
    """A format read from one CSV of pixel strings (columns ``csv_columns``, as Kaggle ships
    FER2013 and UTKFace) or from image files named by the catalog's keys."""

    csv_columns: ClassVar[tuple[str, ...]]

    def file_channels(self, spec: DataSpec) -> int:
        """Channels to decode image files to."""
        return self.channels(spec)

    def decode(self, spec: DataSpec, catalog: Catalog, rows: np.ndarray) -> Tensor:
        root = self.root(spec)
        if self.root_is_csv(spec):
            frame = read_csv(root, self.csv_columns, usecols=["pixels"])
            return parse_pixels(frame["pixels"].to_numpy()[rows], root, rows + 2)
        names = [catalog.keys[i] for i in rows]
        return decode_files(
            FileTree(root), names, channels=self.file_channels(spec), size=spec.image_size
        )

    def fingerprint(self, spec: DataSpec) -> Any:
        root = self.root(spec)
        return file_fingerprint(root) if self.root_is_csv(spec) else FileTree(root).fingerprint()
