"""What quantizing builds: :class:`Quantized`, a model at a precision that predicts and saves."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fairquant._io import atomic_write
from fairquant.data.stream import Inputs, map_inputs
from fairquant.models.predict import model_dtype

Predict = Callable[[Inputs], Tensor]


@dataclass(frozen=True)
class Quantized:
    """A model built at a precision by :func:`fairquant.quantize`.

    ``predict(x)`` gives float32 logits for one batch of model-ready inputs; ``save(path)``
    writes it in its toolchain's own format (an ``.onnx`` file, an OpenVINO IR, TorchScript for
    PyTorch int8, a ``state_dict`` for torchao and fairquant's simulated precisions) and returns
    the path written. ``size_bytes``: the packed size a simulated precision needs, or the bytes
    on disk of the file a toolchain wrote (``artifact``). ``module``: the PyTorch module that
    runs it, where there is one. ``notes`` say what the toolchain quantized and kept in float.
    """

    precision: Any
    size_bytes: int
    notes: tuple[str, ...]
    run: Predict = field(repr=False)
    saver: Callable[[Path], Path] = field(repr=False)
    artifact: Path | None = None
    module: nn.Module | None = field(default=None, repr=False)

    def predict(self, x: Inputs) -> Tensor:
        return self.run(x)

    def save(self, path: str | Path) -> Path:
        return self.saver(Path(path))


def file_saver(source: Path) -> Callable[[Path], Path]:
    """Save by copying the file a toolchain wrote (with its suffix)."""

    def save(path: Path) -> Path:
        if path.suffix != source.suffix:
            path = path.with_suffix(source.suffix)
        return atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))

    return save


def state_dict_saver(model: nn.Module) -> Callable[[Path], Path]:
    """Save ``model``'s ``state_dict`` with ``torch.save`` (load it with
    ``torch.load(path, weights_only=True)`` into the same architecture)."""

    def save(path: Path) -> Path:
        return atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))

    return save


def module_predictor(model: nn.Module) -> Predict:
    """Float32 logits of ``model`` (eval mode, no gradients), its float inputs cast to its dtype;
    a dict input is passed as keyword arguments."""
    model.eval()
    dtype = model_dtype(model)

    def cast(t: Tensor) -> Tensor:
        return t.to(dtype) if t.is_floating_point() else t

    @torch.inference_mode()
    def predict(x: Inputs) -> Tensor:
        x = map_inputs(x, cast)
        return (model(x) if isinstance(x, Tensor) else model(**x)).float()

    return predict
