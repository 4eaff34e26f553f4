"""Imbalanced variants of a split by a per-label ratio (Liu et al., 2025; Cui et al., 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fairquant.errors import ConfigError

#: The papers' long-tailed ratio for 10 classes (CIFAR-10-imbalanced, MNIST-imbalanced).
PAPER_RATIO: tuple[float, ...] = (16, 16, 8, 8, 4, 4, 2, 2, 1, 1)


def imbalance_indices(labels: Tensor, ratio: Sequence[float], *, seed: int) -> Tensor:
    """Indices of a seeded subset where label ``k`` keeps ``n_k * ratio[k] / max(ratio)`` samples.

    Each label keeps at least one sample; the kept indices are returned in ascending order.

    >>> y = torch.tensor([0] * 8 + [1] * 8)
    >>> y[imbalance_indices(y, (4, 1), seed=0)].bincount().tolist()
    [8, 2]
    """
    k = int(labels.max()) + 1 if len(labels) else 0
    if len(ratio) != k:
        raise ConfigError(f"imbalance ratio has {len(ratio)} entries; the data has {k} labels")
    if any(r <= 0 for r in ratio):
        raise ConfigError(f"imbalance ratios must be positive; got {list(ratio)}")
    top = max(ratio)
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for label, r in enumerate(ratio):
        idx = torch.nonzero(labels == label).flatten()
        n = max(1, int(len(idx) * r / top)) if len(idx) else 0
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    return torch.cat(keep).sort().values
