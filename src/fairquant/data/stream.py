"""Evaluation data as batches of ``(x, y, g)``: an in-memory :class:`Split` or any torch
``Dataset`` or ``DataLoader``, so a test set need not fit in memory.

``x`` is a tensor or a dict of tensors (images, features, token ids) whose first dimension is the
batch; ``y`` holds class codes and ``g`` group codes, one per sample. A :class:`Split` is sliced
in place (no copy: the fast path); a ``Dataset`` is read through a ``DataLoader`` in order; a
``DataLoader`` is used as it is and must yield the same samples in the same order on every pass
(no ``shuffle``), which :class:`BatchSource` checks since an audit reads the data once per
precision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from fairquant.data.base import GroupedDataset, Split
from fairquant.errors import ConfigError, DataError

#: A model's input for one batch: a tensor, or named tensors with the same first dimension.
Inputs = Tensor | dict[str, Tensor]
Batch = tuple[Inputs, Tensor, Tensor]

__all__ = [
    "Batch",
    "BatchSource",
    "Inputs",
    "SplitDataset",
    "as_batches",
    "concat_inputs",
    "inputs_len",
    "map_inputs",
]


class SplitDataset(Dataset):
    """A :class:`Split` as a torch ``Dataset`` of ``(x, y, g)`` samples."""

    def __init__(self, split: Split, group_names: Sequence[str] | None = None) -> None:
        self.split = split
        if group_names is not None:
            self.group_names = list(group_names)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.split.x[i], self.split.y[i], self.split.g[i]


def inputs_len(x: Inputs) -> int:
    """Samples in a batch of inputs (a dict's tensors must agree)."""
    if isinstance(x, Tensor):
        return len(x)
    lengths = {k: len(v) for k, v in x.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"the inputs of a batch differ in length: {lengths}")
    return next(iter(lengths.values()))


def map_inputs(x: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    """``fn`` applied to the tensor, or to each tensor of a dict."""
    return fn(x) if isinstance(x, Tensor) else {k: fn(v) for k, v in x.items()}


def concat_inputs(parts: Sequence[Inputs]) -> Inputs:
    """Batches of inputs joined along the batch dimension."""
    if isinstance(parts[0], Tensor):
        return torch.cat(list(parts))  # type: ignore[arg-type]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}  # type: ignore[index]


def _codes(value: object, what: str, where: str, n: int) -> Tensor:
    t = torch.as_tensor(value)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    integer = not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)
    if t.ndim != 1 or len(t) != n or not integer:
        raise DataError(
            f"{where}: {what} must be {n} integer codes, one per sample; got "
            f"{t.dtype} of shape {tuple(t.shape)}"
        )
    if n and int(t.min()) < 0:
        raise DataError(f"{where}: {what} codes must be >= 0; got {int(t.min())}")
    return t.long()


def check_batch(batch: object, where: str) -> Batch:
    """``(x, y, g)`` with ``x`` a tensor or dict of tensors and ``y``, ``g`` int64 codes."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 3:
        kind = f"{len(batch)} items" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise DataError(f"{where}: expected a batch (x, y, g) of 3 items; got {kind}")
    x, y, g = batch
    if isinstance(x, Mapping):
        if not x or not all(isinstance(v, Tensor) for v in x.values()):
            raise DataError(f"{where}: x must be a tensor or a non-empty dict of tensors")
        x = dict(x)
    elif not isinstance(x, Tensor):
        raise DataError(f"{where}: x must be a tensor or a dict of tensors; got {type(x).__name__}")
    n = inputs_len(x)
    return x, _codes(y, "y (targets)", where, n), _codes(g, "g (groups)", where, n)


@dataclass
class BatchSource:
    """Re-iterable batches ``(x, y, g)`` of one evaluation set.

    ``group_names`` and ``class_names`` are what the data declares (a ``group_names`` /
    ``classes`` attribute of a Dataset, or of a DataLoader's dataset), else None. ``split`` is
    the in-memory split when there is one.
    """

    description: str
    group_names: list[str] | None
    class_names: list[str] | None
    split: Split | None
    _batches: Callable[[], Iterator[object]]
    #: What ``len`` gives the number of samples of (a Dataset), for :meth:`size_hint`.
    _sized: object = None

    def __iter__(self) -> Iterator[Batch]:
        for i, batch in enumerate(self._batches()):
            yield check_batch(batch, f"{self.description}, batch {i}")

    def size_hint(self) -> int | None:
        """Samples in the data when it can tell (a sized Dataset), else None."""
        if self.split is not None:
            return len(self.split)
        try:
            return len(self._sized)  # type: ignore[arg-type]
        except TypeError:
            return None

    def take(self, n: int) -> Inputs:
        """The inputs of the first ``n`` samples (fewer if the data has fewer)."""
        if self.split is not None:
            return self.split.x[:n]
        parts, have = [], 0
        for x, _, _ in self:
            parts.append(x)
            have += inputs_len(x)
            if have >= n:
                break
        if not parts:
            raise DataError(f"{self.description} yielded no batches")
        joined = concat_inputs(parts)
        return map_inputs(joined, lambda t: t[:n])


def _names(obj: object, attr: str) -> list[str] | None:
    value = getattr(obj, attr, None)
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else None


def as_batches(data: object, *, batch_size: int = 256) -> BatchSource:
    """The batches of ``data``: a :class:`GroupedDataset` (its test split), a :class:`Split`, a
    torch ``Dataset`` yielding ``(x, y, g)`` samples or a ``DataLoader`` yielding such batches.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1; got {batch_size}")
    if isinstance(data, GroupedDataset):
        source = as_batches(data.test, batch_size=batch_size)
        source.description = f"the test split of {data.spec.name}"
        source.group_names, source.class_names = list(data.group_names), list(data.classes)
        return source
    if isinstance(data, Split):
        split = data

        def sliced() -> Iterator[object]:
            for i in range(0, len(split), batch_size):
                yield (
                    split.x[i : i + batch_size],
                    split.y[i : i + batch_size],
                    split.g[i : i + batch_size],
                )

        return BatchSource(f"a Split of {len(split)} samples", None, None, split, sliced)
    if isinstance(data, DataLoader):
        return BatchSource(
            f"DataLoader over {type(data.dataset).__name__}",
            _names(data, "group_names") or _names(data.dataset, "group_names"),
            _names(data, "classes") or _names(data.dataset, "classes"),
            None,
            lambda: iter(data),
            data.dataset,
        )
    if isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        return BatchSource(
            f"Dataset {type(data).__name__}",
            _names(data, "group_names"),
            _names(data, "classes"),
            None,
            lambda: iter(loader),
            data,
        )
    raise ConfigError(
        "data must be a GroupedDataset, a Split, a torch Dataset of (x, y, g) samples or a "
        f"DataLoader of (x, y, g) batches; got {type(data).__name__}"
    )
