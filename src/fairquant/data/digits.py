"""The embedded default: scikit-learn's bundled UCI handwritten digits (1,797 8x8 images).

Real data that installs with a dependency and needs no download. Following Liu et al. (2025), the
training split is made long-tailed with the per-class ratio 16:16:8:8:4:4:2:2:1:1 (digits 0-1 most
frequent, 8-9 rarest); the test split is left untouched, and the protected group is the class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fairquant.data.base import DataSpec, GroupedDataset, Split, standardize
from fairquant.data.imbalance import PAPER_RATIO, imbalance_indices
from fairquant.errors import ConfigError

DEFAULT_IMAGE_SIZE = 32
DEFAULT_TEST_SIZE = 0.3


def load_digits_dataset(spec: DataSpec) -> GroupedDataset:
    """Load the digits, split stratified and seeded, resized to ``spec.image_size`` (32)."""
    for attr in (spec.target, spec.group):
        if attr not in (None, "digit"):
            raise ConfigError(f"digits has one attribute, 'digit'; got {attr!r}")
    size = spec.image_size or DEFAULT_IMAGE_SIZE
    test_size = spec.test_size if spec.test_size is not None else DEFAULT_TEST_SIZE
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must lie strictly between 0 and 1; got {test_size}")

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # pixel range 0..16
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target).long()

    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=test_size,
        stratify=labels.numpy(),
        random_state=spec.seed,
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    if spec.imbalance is not None:
        train_idx = train_idx[imbalance_indices(labels[train_idx], spec.imbalance, seed=spec.seed)]

    train_x, test_x, mean, std = standardize(images[train_idx], images[test_idx])
    y_train, y_test = labels[train_idx], labels[test_idx]
    classes = [str(d) for d in range(10)]
    return GroupedDataset(
        spec=spec,
        train=Split(train_x, y_train, y_train.clone()),
        test=Split(test_x, y_test, y_test.clone()),
        classes=classes,
        group_names=list(classes),
        target="digit",
        group="digit",
        mean=mean,
        std=std,
    )


def default_digits_spec(*, seed: int = 0) -> DataSpec:
    """The quickstart's data: imbalanced digits at 32x32, group = class."""
    return DataSpec(name="digits", imbalance=PAPER_RATIO, seed=seed)
