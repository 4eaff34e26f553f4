"""The impact flow per group: how quantization moves logits, softmax outputs, loss and accuracy.

Bellam & Kim trace the disparate impact from the weights through the logits (cosine distance to
the fp32 logits, lower variance) and the softmax (lower variance, a smaller probability of the true
class, i.e. samples closer to the decision boundary (DTDB), a lower average prediction probability
(APP)) to the loss and accuracy. These are pure functions of logits; :func:`flow_metrics` gives
the per-group summary and :func:`sample_metrics` the per-sample values behind the distributions.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from fairquant.metrics.functional import group_counts, group_mean, per_sample_loss


def cosine_distance(logits: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """``1 - cos(z~, z)`` per sample, and a mask of the samples where it is defined.

    The cosine is undefined where either logit vector is all zero, as happens when 2-3 bit weights
    collapse a layer; those samples are marked ``False`` in the mask (their distance is set to 0,
    never NaN) so that callers count and report them.

    >>> d, ok = cosine_distance(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.eye(2))
    >>> d.tolist(), ok.tolist()
    ([0.0, 0.0], [True, False])
    """
    z, r = logits.double(), reference.double()
    nz, nr = z.norm(dim=1), r.norm(dim=1)
    ok = (nz > 0) & (nr > 0)
    cos = (z * r).sum(1) / torch.where(ok, nz * nr, torch.ones_like(nz))
    return torch.where(ok, 1.0 - cos, torch.zeros_like(cos)), ok


def sample_metrics(logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """Per-sample ``logit_var`` and ``softmax_var`` (variance over classes), ``true_prob`` (softmax
    probability of the true class: the DTDB), ``max_prob`` (its average is the APP), ``loss`` and
    ``correct``."""
    z = logits.double()
    p = z.softmax(1)
    return {
        "logit_var": z.var(1, unbiased=False),
        "softmax_var": p.var(1, unbiased=False),
        "true_prob": p.gather(1, targets[:, None])[:, 0],
        "max_prob": p.max(1).values,
        "loss": per_sample_loss(logits, targets).double(),
        "correct": (z.argmax(1) == targets).double(),
    }


def flow_metrics(
    logits: Tensor, reference: Tensor, targets: Tensor, groups: Tensor, num_groups: int
) -> dict[str, Tensor]:
    """Per-group means of :func:`sample_metrics` (``max_prob`` is the APP, ``true_prob`` the mean
    DTDB, ``correct`` the accuracy as a fraction), the mean ``cosine_distance`` to ``reference``
    over samples where it is defined, and ``zero_logits``: how many samples it was not defined for.

    A group whose samples all have zero logits gets ``cosine_distance`` NaN, and a group without
    samples NaN everywhere: callers check ``zero_logits`` and :func:`group_counts`.
    """
    out = {k: group_mean(v, groups, num_groups) for k, v in sample_metrics(logits, targets).items()}
    dist, ok = cosine_distance(logits, reference)
    valid = group_counts(groups[ok], num_groups)
    sums = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, groups[ok], dist[ok])
    out["cosine_distance"] = sums / valid
    out["zero_logits"] = (group_counts(groups, num_groups) - valid).double()
    return out


def samples_frame(
    precision: str, logits: Tensor, targets: Tensor, groups: Tensor, group_names: list[str]
) -> pd.DataFrame:
    """The per-sample metrics of one precision as a DataFrame (for distribution figures)."""
    m = sample_metrics(logits, targets)
    frame = pd.DataFrame({k: v.numpy() for k, v in m.items()})
    frame.insert(0, "group", [group_names[a] for a in groups.tolist()])
    frame.insert(0, "precision", precision)
    return frame
