"""The streaming evaluator: one pass of a built precision over the data, batch by batch, into
per-sample predictions and losses (the columns of :class:`~fairquant.metrics.samples.PerSample`);
what to do with non-finite logits."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from fairquant.data.stream import BatchSource, Inputs
from fairquant.errors import ConfigError, DataError
from fairquant.metrics.functional import per_sample_loss
from fairquant.quant.artifact import Predict

#: The predicted class of a sample counted as wrong for its non-finite logits: no class.
NO_CLASS = -1


def _evaluate(
    predict: Predict,
    source: BatchSource,
    transform: Callable[[Inputs], Inputs] | None,
    num_classes: int | None,
    what: str,
    *,
    reference: tuple[np.ndarray | None, np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """Predicted classes and per-sample losses of one pass over ``source`` (and its y, g), the
    number of classes, and whether each sample's logits are all finite (where they are not, the
    prediction and loss are to be replaced: :func:`_nonfinite`)."""
    out = _Columns(source.size_hint() or 4096)
    width = num_classes
    for x, y, g in source:
        if transform is not None:
            x = transform(x)
        logits = predict(x)
        if logits.ndim != 2 or len(logits) != len(y):
            raise ConfigError(
                f"{what} returned shape {tuple(logits.shape)} for a batch of {len(y)}; expected "
                "logits (batch, classes)"
            )
        if width is None:
            width = logits.shape[1]
        if logits.shape[1] != width:
            raise ConfigError(
                f"{what} outputs {logits.shape[1]} values per sample but the data has {width} "
                "classes; expected one logit per class (--num-classes sets the model's classes)"
            )
        if len(y) and int(y.max()) >= width:
            code = int(y.max())
            names = source.class_names or []
            name = f" ({names[code]!r})" if code < len(names) else ""
            raise DataError(
                f"{source.description} has class code {code}{name} but {what} outputs "
                f"{width} classes"
            )
        out.add(
            pred=logits.argmax(1).numpy(),
            loss=per_sample_loss(logits, y).numpy(),
            y=y.numpy(),
            g=g.numpy(),
            finite=torch.isfinite(logits).all(1).numpy(),
        )
    if out.n == 0:
        raise DataError(f"{source.description} yielded no samples")
    cols = out.columns()
    y_ref, g_ref = reference
    if y_ref is not None and not (
        np.array_equal(y_ref, cols["y"]) and np.array_equal(g_ref, cols["g"])
    ):
        raise DataError(
            f"{source.description} yielded other samples on a second pass (a shuffling "
            "DataLoader?); an audit reads the data once per precision: use shuffle=False"
        )
    assert width is not None
    return cols["pred"], cols["loss"], cols["y"], cols["g"], width, cols["finite"]


def _nonfinite(
    name: str,
    finite: np.ndarray,
    pred: np.ndarray,
    loss: np.ndarray,
    reference_loss: np.ndarray | None,
    num_classes: int,
    *,
    rule: str,
    where: str,
) -> int:
    """Apply ``rule`` to the samples whose logits at precision ``name`` are not all finite;
    return how many there are.

    ``"error"`` raises. ``"wrong"`` sets, in place, their prediction to :data:`NO_CLASS` and
    their loss to ``max(ln K, reference_loss)``: ln K is the cross-entropy of a uniform guess
    over K classes (a model that says nothing), and the floor at the sample's fp32 loss
    (``reference_loss``; none when ``name`` is fp32 itself) keeps its excess loss >= 0, so a
    sample the precision broke never makes it look better than fp32.
    """
    bad = ~finite
    k = int(bad.sum())
    if rule == "error":
        raise ConfigError(
            f"{name} returned non-finite logits (NaN or ±inf) for {k} of {len(finite)} samples "
            f"of {where}; expected finite logits. To count those samples as wrong instead, use "
            "--nonfinite wrong (Python: nonfinite='wrong')"
        )
    pred[bad] = NO_CLASS
    floor = np.full(k, np.log(num_classes))
    if reference_loss is not None:
        floor = np.maximum(floor, reference_loss[bad])
    loss[bad] = floor
    return k


class _Columns:
    """Per-sample outputs of a pass, copied into arrays that double when full.

    Nothing allocated for a batch outlives it: keeping each batch's small output arrays in a list
    pinned glibc's heap between the batches' transient tensors, and a streamed audit's peak RSS
    grew with the data (by ~60 KB a sample of 27 KB in ``bench/stream_memory.py``).
    """

    DTYPES: ClassVar[dict[str, type]] = {
        "pred": np.int64,
        "loss": np.float64,
        "y": np.int64,
        "g": np.int64,
        "finite": np.bool_,
    }

    def __init__(self, capacity: int) -> None:
        self.n = 0
        self.arrays = {k: np.empty(max(capacity, 1), dtype) for k, dtype in self.DTYPES.items()}

    def add(self, **values: np.ndarray) -> None:
        b = len(values["y"])
        size = len(self.arrays["y"])
        if self.n + b > size:
            while size < self.n + b:
                size *= 2
            for k, a in self.arrays.items():
                grown = np.empty(size, a.dtype)
                grown[: self.n] = a[: self.n]
                self.arrays[k] = grown
        for k, v in values.items():
            self.arrays[k][self.n : self.n + b] = v
        self.n += b

    def columns(self) -> dict[str, np.ndarray]:
        return {k: a[: self.n] for k, a in self.arrays.items()}
