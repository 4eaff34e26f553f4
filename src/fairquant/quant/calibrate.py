"""Calibration sets for PTQ: random, or balanced across groups.

The five-architecture study calls the balanced variant "bias-aware calibration": every group
contributes the same number of calibration images, so a rare group's activations shape the
clipping ranges as much as the majority's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fairquant.data.base import Split
from fairquant.data.stream import BatchSource, Inputs, inputs_len
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


def calibration_inputs(
    calibration: Tensor | dict[str, Tensor] | Split | None,
    *,
    data: Any = None,
    stream: BatchSource | None = None,
    size: int,
    balanced: bool,
    seed: int,
) -> tuple[Inputs, dict[str, Any], str | None]:
    """The calibration inputs every precision is built from, how they were drawn (for the
    record), and a note when they are not a calibration set of their own.

    ``calibration``: inputs, taken as they are; or a :class:`Split` to draw ``size`` samples
    from (:func:`calibration_indices`: random, or ``balanced`` across groups, seeded by
    ``seed``); ``None``: the training split of ``data`` when it is a GroupedDataset, else the
    first ``size`` samples of ``stream`` (the audited data: the note says so).
    """
    from fairquant.data.base import GroupedDataset

    if isinstance(calibration, Tensor | dict):
        return calibration, {"source": "given", "size": inputs_len(calibration)}, None
    if calibration is None and isinstance(data, GroupedDataset):
        calibration = data.train
        where = f"the training split of {data.spec.name}"
    elif isinstance(calibration, Split):
        where = "the given split"
    elif calibration is None and stream is not None:
        if balanced:
            raise ConfigError(
                "calib_balanced draws calibration samples per group from a split; pass "
                "calibration=Split (e.g. the training split) to use it with streamed data"
            )
        x = stream.take(size)
        n = inputs_len(x)
        note = (
            f"calibrated on the first {n} audited samples ({stream.description}): no "
            "calibration set was given"
        )
        return x, {"source": "the first audited samples", "size": n}, note
    else:
        raise ConfigError(
            "calibration must be inputs (a tensor or dict of tensors) or a Split; got "
            f"{type(calibration).__name__}"
        )
    index = calibration_indices(calibration, size, balanced=balanced, seed=seed)
    record = {"source": where, "size": len(index), "balanced": balanced, "seed": seed}
    return calibration.x[index], record, None
