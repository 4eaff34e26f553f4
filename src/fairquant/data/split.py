"""Which samples go to training and test: the dataset's own split or a seeded stratified one,
optionally a seeded subset (``limit``), and imbalanced variants of the training split by class
and by group (Liu et al., 2025); and a seeded validation split carved from the training split
(:func:`validation_split`), for model selection, calibration and search without the test split."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from fairquant.data.base import DataSpec, GroupedDataset, Split
from fairquant.data.catalog import Attribute, Catalog
from fairquant.data.imbalance import imbalance_indices
from fairquant.errors import ConfigError, DataError

DEFAULT_TEST_SIZE = 0.2


@dataclass
class Plan:
    """Indices into a catalog for each split, with the chosen target and group."""

    train: np.ndarray
    test: np.ndarray
    target: str
    group: str
    y: Attribute
    g: Attribute

    def rows(self) -> np.ndarray:
        """Every catalog row either split uses, sorted."""
        return np.union1d(self.train, self.test)

    def dataset(
        self, spec: DataSpec, train_x: torch.Tensor, test_x: torch.Tensor, **fields: Any
    ) -> GroupedDataset:
        """The dataset of ``spec`` with the samples ``train_x`` and ``test_x`` (in the order of
        :attr:`train` and :attr:`test`), their targets, groups and names from this plan; ``fields``:
        the rest of :class:`~fairquant.data.base.GroupedDataset` (``mean``, ``std`` ...)."""

        def split(x: torch.Tensor, idx: np.ndarray) -> Split:
            return Split(x, as_int64(self.y.codes[idx]), as_int64(self.g.codes[idx]))

        return GroupedDataset(
            spec=spec,
            train=split(train_x, self.train),
            test=split(test_x, self.test),
            classes=list(self.y.names),
            group_names=list(self.g.names),
            target=self.target,
            group=self.group,
            **fields,
        )


def as_int64(codes: np.ndarray) -> torch.Tensor:
    """``codes`` (targets, groups or indices) as a contiguous int64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64))


def plan_splits(
    spec: DataSpec, catalog: Catalog, *, default_target: str, default_group: str | None = None
) -> Plan:
    """Resolve attributes, split, subset and imbalance as ``spec`` says, without any pixels."""
    target, y = catalog.attribute(spec.target or default_target)
    group, g = catalog.attribute(spec.group or default_group or spec.target or default_target)
    opts = spec.options
    how = opts.get("split", "own" if catalog.split is not None else "random")
    if how not in ("own", "random"):
        raise ConfigError(f"option split={how!r}: expected 'own' or 'random'")
    if how == "own":
        if catalog.split is None:
            raise ConfigError(f"{catalog.source} has no split of its own; use split='random'")
        if spec.test_size is not None:
            raise ConfigError(
                f"test_size={spec.test_size} applies to a random split, but {catalog.source} is "
                "split as the dataset defines; set option split='random' to re-split it"
            )
        train = np.flatnonzero(catalog.split == "train")
        test = np.flatnonzero(catalog.split == "test")
        for name, idx in (("train", train), ("test", test)):
            if not len(idx):
                raise DataError(
                    f"{catalog.source} has no {name} samples; set option split='random' to split "
                    "the samples it has"
                )
    else:
        train, test = _stratified(spec, y.codes * len(g.names) + g.codes, y.codes)
    if opts.get("limit") is not None:
        limits = _limits(opts["limit"])
        train = _subset(train, limits.get("train"), spec.seed)
        test = _subset(test, limits.get("test"), spec.seed + 1)
    if spec.imbalance is not None:
        train = _imbalance(train, y, spec.imbalance, spec.seed, "imbalance")
    if opts.get("group_imbalance") is not None:
        train = _imbalance(train, g, opts["group_imbalance"], spec.seed, "group_imbalance")
    return Plan(train, test, target, group, y, g)


def _stratified(spec: DataSpec, cells: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split stratified by target x group, else (with a warning) by target only."""
    test_size = spec.test_size if spec.test_size is not None else DEFAULT_TEST_SIZE
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must lie strictly between 0 and 1; got {test_size}")
    index = np.arange(len(y))
    try:
        train, test = train_test_split(
            index, test_size=test_size, stratify=cells, random_state=spec.seed
        )
    except ValueError as e:
        warnings.warn(
            f"cannot stratify the split by target x group ({e}); stratifying by target only",
            stacklevel=4,
        )
        try:
            train, test = train_test_split(
                index, test_size=test_size, stratify=y, random_state=spec.seed
            )
        except ValueError as e:
            raise DataError(
                f"cannot split {len(y)} samples with test_size={test_size}: {e}"
            ) from None
    return np.sort(train), np.sort(test)


def _limits(limit: object) -> dict[str, int]:
    """Option ``limit``: N for both splits, or ``{"train": N, "test": M}`` (either optional)."""
    limits = limit if isinstance(limit, dict) else {"train": limit, "test": limit}
    if not all(
        key in ("train", "test") and isinstance(n, int) and not isinstance(n, bool) and n >= 1
        for key, n in limits.items()
    ):
        raise ConfigError(
            f"option limit={limit!r}: expected a positive integer or "
            '{"train": N, "test": M} with positive integers'
        )
    return limits


def _subset(idx: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None:
        return idx
    gen = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(idx), generator=gen)[:limit].numpy()
    return np.sort(idx[keep])


def _imbalance(idx: np.ndarray, attr: Attribute, ratio, seed: int, option: str) -> np.ndarray:
    if not isinstance(ratio, (list, tuple)) or not all(
        isinstance(r, (int, float)) and not isinstance(r, bool) for r in ratio
    ):
        raise ConfigError(f"{option}={ratio!r}: expected a list of ratios, one per value")
    if len(ratio) != len(attr.names):
        raise ConfigError(
            f"{option} has {len(ratio)} ratios but there are {len(attr.names)} values "
            f"({', '.join(attr.names)})"
        )
    labels = torch.from_numpy(attr.codes[idx])
    present = int(labels.max()) + 1 if len(labels) else 0
    if present < len(ratio):
        raise DataError(
            f"{option}: value {attr.names[-1]!r} has no training samples to keep a share of"
        )
    return idx[imbalance_indices(labels, tuple(ratio), seed=seed).numpy()]


def validation_split(split: Split, size: float | int, *, seed: int) -> tuple[Split, Split]:
    """``(rest, validation)``: a seeded validation split of ``size`` samples carved from
    ``split``, stratified by target x group (:func:`validation_indices`).

    ``size`` is a fraction in (0, 1) of the split or a count of samples. The same split, size and
    seed give the same samples, so training, calibration and search can each rebuild it from the
    training config that a checkpoint records.
    """
    rest, val = validation_indices(split.y, split.g, size, seed=seed)
    return split.subset(torch.from_numpy(rest)), split.subset(torch.from_numpy(val))


def validation_indices(
    y: torch.Tensor, g: torch.Tensor, size: float | int, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(rest, validation)`` of a validation split stratified by cell = target x
    group, every cell keeping at least one sample in ``rest``.

    Each cell contributes its proportional share ``size * n_cell / n`` rounded by largest
    remainder (Hamilton's method; ties broken at random), capped at ``n_cell - 1``; its members
    are drawn at random. Written here because scikit-learn's stratified splits refuse a cell of
    one sample, which long-tailed training splits have: such a cell stays in training whole.
    """
    n = len(y)
    count = _validation_count(size, n)
    k = int(g.max()) + 1 if n else 1
    cells = (y.long() * k + g.long()).numpy()
    rng = np.random.default_rng(seed)
    names, inverse, counts = np.unique(cells, return_inverse=True, return_counts=True)
    capacity = counts - 1
    if capacity.sum() < count:
        raise ConfigError(
            f"a validation split of {count} samples leaves a cell of target x group without "
            f"training samples ({len(names)} cells in {n} samples allow at most "
            f"{int(capacity.sum())})"
        )
    quota = count * counts / n
    take = np.minimum(np.floor(quota).astype(np.int64), capacity)
    while take.sum() < count:  # largest remainder first, among cells with room left
        room = np.flatnonzero(take < capacity)
        order = np.lexsort((rng.random(len(room)), -(quota - take)[room]))
        for c in room[order][: count - int(take.sum())]:
            take[c] += 1
    val = [rng.permutation(np.flatnonzero(inverse == c))[: take[c]] for c in range(len(names))]
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(n), val_idx)
    return rest, val_idx


def _validation_count(size: float | int, n: int) -> int:
    """``size`` as a number of samples: a fraction in (0, 1) of ``n`` or a count."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise ConfigError(f"validation size {size!r}: expected a fraction in (0, 1) or a count")
    if isinstance(size, float):
        if not 0 < size < 1:
            raise ConfigError(f"validation size {size} must be a fraction in (0, 1) or a count")
        count = round(size * n)
    else:
        count = size
    if not 1 <= count <= n - 2:
        raise ConfigError(
            f"validation size {size!r} gives {count} of {n} training samples; it must leave at "
            "least 1 for validation and 2 for training"
        )
    return count
