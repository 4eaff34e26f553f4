"""Class weights for a weighted cross-entropy that favours rare classes.

``inverse-frequency``: ``w_k ∝ 1 / n_k``. ``effective-number`` (Cui et al., CVPR 2019,
"Class-Balanced Loss Based on Effective Number of Samples"): ``w_k ∝ (1 - β) / (1 - β^{n_k})``,
which interpolates between no weighting (β = 0) and inverse frequency (β → 1). Both are scaled so
that the weight averaged over the training samples is 1, which keeps the loss on the scale of the
unweighted one (and the learning rate meaningful).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fairquant.errors import ConfigError

SCHEMES = ("inverse-frequency", "effective-number")


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
