"""Class weights for a weighted cross-entropy that favours rare classes.

``inverse-frequency``: ``w_k ∝ 1 / n_k``. ``effective-number`` (Cui et al., CVPR 2019,
"Class-Balanced Loss Based on Effective Number of Samples"): ``w_k ∝ (1 - β) / (1 - β^{n_k})``,
which interpolates between no weighting (β = 0) and inverse frequency (β → 1). ``hard``
(:func:`hardness_weights`): ``w_k ∝`` the class's mean cross-entropy under the model being trained,
recomputed at the start of every epoch. All are scaled so that the weight averaged over the
training samples is 1, which keeps the loss on the scale of the unweighted one (and the learning
rate meaningful).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairquant.data.base import Split
from fairquant.errors import ConfigError, DataError

#: Count-based schemes (:func:`class_weights`).
SCHEMES = ("inverse-frequency", "effective-number")
#: The model-based scheme (:func:`hardness_weights`).
HARD = "hard"


def class_weights(
    counts: Sequence[int] | Tensor, scheme: str | Sequence[float], *, beta: float = 0.999
) -> Tensor:
    """Per-class weights from training counts, or explicit per-class values, normalised so that
    ``sum_k n_k w_k = sum_k n_k``.

    >>> class_weights([30, 10], "inverse-frequency").tolist()
    [0.6666666666666666, 2.0]
    """
    n = torch.as_tensor(counts, dtype=torch.float64)
    if (n <= 0).any():
        raise ConfigError(f"every class needs training samples to be weighted; counts {n.tolist()}")
    if isinstance(scheme, str):
        if scheme == "inverse-frequency":
            w = 1.0 / n
        elif scheme == "effective-number":
            if not 0 <= beta < 1:
                raise ConfigError(f"effective-number beta must lie in [0, 1); got {beta}")
            w = (1 - beta) / (1 - beta**n)
        elif scheme == HARD:
            raise ConfigError(
                "'hard' weights depend on a model, not on counts: use hardness_weights"
            )
        else:
            raise ConfigError(
                f"unknown loss weighting {scheme!r}; expected {', '.join(SCHEMES)} or one "
                "number per class"
            )
    else:
        w = torch.as_tensor(list(scheme), dtype=torch.float64)
        if len(w) != len(n) or (w < 0).any() or w.sum() == 0:
            raise ConfigError(
                f"explicit class weights need {len(n)} non-negative values, not all 0; got "
                f"{w.tolist()}"
            )
    return w * n.sum() / (w * n).sum()


def class_losses(
    model: nn.Module, split: Split, *, num_classes: int, max_per_class: int = 1024, seed: int = 0
) -> Tensor:
    """Mean cross-entropy of each class under ``model`` (float64, ``(num_classes,)``), on up to
    ``max_per_class`` seeded samples of each class of ``split``, without gradients, in the mode the
    caller left ``model`` in. A class without samples gets NaN.
    """
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    out = torch.full((num_classes,), math.nan, dtype=torch.float64)
    with torch.no_grad():
        for k in range(num_classes):
            idx = torch.nonzero(split.y == k).flatten()
            if len(idx) == 0:
                continue
            idx = idx[torch.randperm(len(idx), generator=gen)[:max_per_class]]
            total = 0.0
            for part in idx.split(512):
                logits = model(split.x[part].to(device))
                y = split.y[part].to(device)
                total += F.cross_entropy(logits.float(), y, reduction="sum").item()
            out[k] = total / len(idx)
    return out


def hardness_weights(
    model: nn.Module, split: Split, *, num_classes: int, max_per_class: int = 1024, seed: int = 0
) -> Tensor:
    """Class weights that favour the classes ``model`` finds hard: ``w_k ∝ L_k``, the class's mean
    cross-entropy (:func:`class_losses`), normalised like :func:`class_weights` over the class
    counts of ``split`` (the data the loss is applied to), as float32.

    The weighted half of Bellam & Kim's FairQAT ("a weighted cross-entropy favouring hard and
    minority classes"): paired with balancing resampling, which already gives minority classes
    equal weight by count, it adds weight where the current model is worst. A class absent from
    ``split`` gets weight 0.
    """
    losses = class_losses(
        model, split, num_classes=num_classes, max_per_class=max_per_class, seed=seed
    )
    counts = torch.bincount(split.y, minlength=num_classes).double()
    w = torch.nan_to_num(losses, nan=0.0)
    if (w * counts).sum() <= 0:
        raise DataError(
            f"every class has zero loss under the model on {len(split)} samples; hardness "
            "weights are undefined"
        )
    return (w * counts.sum() / (w * counts).sum()).float()
