"""Resampling a training split to balance its labels (the resampling half of Bellam & Kim's
FairQAT): over-sampling repeats samples of the smaller labels up to the largest count,
under-sampling keeps a random subset of every label down to the smallest count, and ``both``
(FairQAT's over-and-under sampling) brings every label to the mean count, under-sampling the
labels above it and over-sampling those below."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from fairquant.errors import ConfigError

Mode = Literal["over", "under", "both"]
MODES = ("over", "under", "both")


def resample_indices(labels: Tensor, mode: str, *, seed: int) -> Tensor:
    """Seeded indices into ``labels`` after over- or under-sampling every present label.

    ``over`` keeps every sample once and adds random repeats (each original sample is repeated
    at most ``ceil(max / n_k) - 1`` times more, so repeats spread evenly); ``under`` draws
    ``min_k n_k`` samples of each label without replacement; ``both`` targets the rounded mean
    count ``round(mean_k n_k)``, drawing without replacement from labels above it and adding
    repeats to labels below it.

    >>> y = torch.tensor([0, 0, 0, 0, 1])
    >>> y[resample_indices(y, "over", seed=0)].bincount().tolist()
    [4, 4]
    >>> y[resample_indices(y, "under", seed=0)].bincount().tolist()
    [1, 1]
    >>> y[resample_indices(y, "both", seed=0)].bincount().tolist()
    [2, 2]
    """
    if mode not in MODES:
        raise ConfigError(f"resampling mode must be 'over', 'under' or 'both'; got {mode!r}")
    gen = torch.Generator().manual_seed(seed)
    present = labels.unique()
    groups = [torch.nonzero(labels == k).flatten() for k in present.tolist()]
    sizes = [len(idx) for idx in groups]
    if mode == "over":
        target = max(sizes)
    elif mode == "under":
        target = min(sizes)
    else:
        target = max(1, round(sum(sizes) / len(sizes)))
    out = []
    for idx in groups:
        if len(idx) >= target:
            out.append(idx[torch.randperm(len(idx), generator=gen)[:target]])
            continue
        reps = -(-target // len(idx))  # ceil: whole shuffled copies, cut to the target
        pool = torch.cat([idx[torch.randperm(len(idx), generator=gen)] for _ in range(reps)])
        out.append(torch.cat([idx, pool[: target - len(idx)]]))
    return torch.cat(out).sort().values
