"""Calibration sets for PTQ: random, or balanced across groups.

The five-architecture study calls the balanced variant "bias-aware calibration": every group
contributes the same number of calibration images, so a rare group's activations shape the
clipping ranges as much as the majority's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fairquant.data.base import Split
from fairquant.errors import ConfigError


def calibration_indices(split: Split, size: int, *, balanced: bool, seed: int) -> Tensor:
    """Indices of ``size`` seeded calibration samples; ``balanced`` draws equally per group.

    With ``balanced``, a group with fewer samples than its share contributes all of them, and
    the remainder is drawn from the other groups so the total stays ``size`` (or all samples).

    >>> g = torch.tensor([0] * 90 + [1] * 10)
    >>> split = Split(torch.zeros(100, 1, 1, 1), g, g)
    >>> g[calibration_indices(split, 20, balanced=True, seed=0)].bincount().tolist()
    [10, 10]
    """
    n = len(split)
    if size < 1:
        raise ConfigError(f"calibration size must be at least 1; got {size}")
    gen = torch.Generator().manual_seed(seed)
    if not balanced or size >= n:
        return torch.randperm(n, generator=gen)[: min(size, n)].sort().values
    groups = [torch.nonzero(split.g == a).flatten() for a in split.g.unique().tolist()]
    groups = [idx[torch.randperm(len(idx), generator=gen)] for idx in groups]
    take = [0] * len(groups)
    remaining = size
    # water-filling: give every group an equal share, re-dealing what small groups cannot use
    while remaining > 0:
        open_groups = [i for i, idx in enumerate(groups) if take[i] < len(idx)]
        share = max(1, remaining // len(open_groups))
        for i in open_groups:
            extra = min(share, len(groups[i]) - take[i], remaining)
            take[i] += extra
            remaining -= extra
            if remaining == 0:
                break
    return torch.cat([idx[:t] for idx, t in zip(groups, take, strict=True)]).sort().values
