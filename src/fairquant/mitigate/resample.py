"""Resampling a training split to balance its labels (the resampling half of Bellam & Kim's
FairQAT): over-sampling repeats samples of the smaller labels up to the largest count,
under-sampling keeps a random subset of every label down to the smallest count."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from fairquant.errors import ConfigError

Mode = Literal["over", "under"]


def resample_indices(labels: Tensor, mode: str, *, seed: int) -> Tensor:
    """Seeded indices into ``labels`` after over- or under-sampling every present label.

    ``over`` keeps every sample once and adds random repeats (each original sample is repeated
    at most ``ceil(max / n_k) - 1`` times more, so repeats spread evenly); ``under`` draws
    ``min_k n_k`` samples of each label without replacement.

    >>> y = torch.tensor([0, 0, 0, 0, 1])
    >>> y[resample_indices(y, "over", seed=0)].bincount().tolist()
    [4, 4]
    >>> y[resample_indices(y, "under", seed=0)].bincount().tolist()
    [1, 1]
    """
    if mode not in ("over", "under"):
        raise ConfigError(f"resampling mode must be 'over' or 'under'; got {mode!r}")
    gen = torch.Generator().manual_seed(seed)
    present = labels.unique()
    groups = [torch.nonzero(labels == k).flatten() for k in present.tolist()]
    target = max(map(len, groups)) if mode == "over" else min(map(len, groups))
    out = []
    for idx in groups:
        if mode == "under":
            out.append(idx[torch.randperm(len(idx), generator=gen)[:target]])
            continue
        reps = -(-target // len(idx))  # ceil: whole shuffled copies, cut to the target
        pool = torch.cat([idx[torch.randperm(len(idx), generator=gen)] for _ in range(reps)])
        out.append(torch.cat([idx, pool[: target - len(idx)]]))
    return torch.cat(out).sort().values
