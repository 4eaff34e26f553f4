"""Per-group accuracy, loss, excess loss and the disparity φ(D) as pure tensor functions.

Notation follows Liu et al. (ICML 2025): for a group ``a`` with test samples ``D_a``,
``G(a) = L(θ~; D_a) - L(θ; D_a)`` is the excess loss of the quantized model ``θ~`` over the
full-precision ``θ``, and ``φ(D) = max_{a, a'} |G(a) - G(a')|`` is the disparity between groups.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def excess_loss(group_loss_quantized: Tensor, group_loss_reference: Tensor) -> Tensor:
    """``G(a) = L(θ~; D_a) - L(θ; D_a)`` for every group."""
    return group_loss_quantized - group_loss_reference


def phi(excess: Sequence[float] | Tensor) -> float:
    """``φ(D) = max_{a,a'} |G(a) - G(a')| = max_a G(a) - min_a G(a)``.

    >>> phi([0.1, 0.5, -0.2])
    0.7
    """
    g = torch.as_tensor(excess, dtype=torch.float64)
    if g.numel() == 0:
        raise ValueError("φ(D) needs the excess loss of at least one group")
    if torch.isnan(g).any():
        raise ValueError(f"φ(D) is undefined: an excess loss is NaN ({g.tolist()})")
    return float(g.max() - g.min())


def pareto_front(accuracy: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats: none has accuracy >= and φ(D) <=, one strictly.

    >>> pareto_front(np.array([90.0, 80.0, 85.0]), np.array([0.2, 0.1, 0.3])).tolist()
    [True, True, False]
    """
    acc, phi = np.asarray(accuracy, dtype=float), np.asarray(phi, dtype=float)
    better_eq = (acc[None, :] >= acc[:, None]) & (phi[None, :] <= phi[:, None])
    strictly = (acc[None, :] > acc[:, None]) | (phi[None, :] < phi[:, None])
    return ~(better_eq & strictly).any(axis=1)
