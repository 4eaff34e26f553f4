"""Per-sample loss and per-group counts and means as pure tensor functions, and the Pareto front.

An audit's group metrics (the excess loss ``G(a)``, the disparity ``φ(D)`` of Liu et al., ICML
2025, accuracy gaps, ...) are computed in one place, with their bootstrap intervals:
:class:`fairquant.metrics.frame.FairnessFrame`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def per_sample_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of each sample, in float32 whatever the logits' dtype."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def group_counts(groups: Tensor, num_groups: int) -> Tensor:
    """Samples per group, ``(num_groups,)`` int64."""
    return torch.bincount(groups, minlength=num_groups)


def group_mean(values: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """Mean of ``values`` within each group; NaN exactly where a group has no samples.

    Callers must check :func:`group_counts` before reporting a group mean.

    >>> group_mean(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0, 0, 1]), 2)
    tensor([2., 5.], dtype=torch.float64)
    """
    sums = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups, values.double())
    return sums / group_counts(groups, num_groups)


def pareto_front(accuracy: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats: none has accuracy >= and φ(D) <=, one strictly.

    >>> pareto_front(np.array([90.0, 80.0, 85.0]), np.array([0.2, 0.1, 0.3])).tolist()
    [True, True, False]
    """
    acc, phi = np.asarray(accuracy, dtype=float), np.asarray(phi, dtype=float)
    better_eq = (acc[None, :] >= acc[:, None]) & (phi[None, :] <= phi[:, None])
    strictly = (acc[None, :] > acc[:, None]) | (phi[None, :] < phi[:, None])
    return ~(better_eq & strictly).any(axis=1)
