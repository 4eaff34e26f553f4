"""An ONNX classifier run by ONNX Runtime: the graph is interpreted, never executed as Python.

:class:`OnnxModel` loads a ``.onnx`` file into an ``onnxruntime.InferenceSession`` on the CPU and
predicts float32 logits for a batch. Its inputs are read from the graph (name, shape with free
dimensions such as the batch, element type), so :meth:`OnnxModel.check_input` can refuse data
that does not fit with one line naming the file, before ONNX Runtime fails with its own message.
A single-input graph takes a tensor; a multi-input graph takes a dict of tensors keyed by its
input names. The graph's first output is taken as the logits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fairquant._extras import require
from fairquant.data.stream import Inputs
from fairquant.errors import CheckpointError, DataError

#: ONNX element types (as ONNX Runtime spells them) and the torch dtype each expects.
_DTYPES = {
    "tensor(float)": torch.float32,
    "tensor(double)": torch.float64,
    "tensor(float16)": torch.float16,
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
    "tensor(int16)": torch.int16,
    "tensor(int8)": torch.int8,
    "tensor(uint8)": torch.uint8,
    "tensor(bool)": torch.bool,
}


@dataclass(frozen=True)
class OnnxInput:
    """One graph input: its name, shape (an int per fixed dimension, ``None`` or a symbol's name
    per free one) and element type."""

    name: str
    shape: tuple[int | str | None, ...]
    type: str

    def spelled(self) -> str:
        dims = ", ".join("?" if not isinstance(d, int) else str(d) for d in self.shape)
        dtype = _DTYPES.get(self.type)
        kind = str(dtype) if dtype is not None else self.type.removeprefix("tensor(")[:-1]
        return f"({dims}) {kind.removeprefix('torch.')}"


class OnnxModel:
    """A classifier in an ONNX file, run by ONNX Runtime on the CPU.

    ``threads`` sets ONNX Runtime's intra-op threads; by default torch's thread count, so one
    ``OMP_NUM_THREADS`` governs both runtimes.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        ort = require("onnxruntime", what=f"running the ONNX model {path}")
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX model {self.path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: ORT warns about unused initializers etc.
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # ORT raises its own InvalidProtobuf, Fail, NoSuchFile, ...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{self.path} is not a model ONNX Runtime can run: {first}"
            ) from None
        self.inputs = tuple(
            OnnxInput(i.name, tuple(i.shape), i.type) for i in self.session.get_inputs()
        )
        self.output = self.session.get_outputs()[0].name

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r})"

    def check_input(self, x: Inputs) -> None:
        """Raise a one-line :class:`DataError` naming the file if ``x`` (a batch) does not fit the
        graph's inputs in names, rank, fixed dimensions or element type."""
        for spec, value in self._pair(x):
            expected = _DTYPES.get(spec.type)
            shape_ok = value.ndim == len(spec.shape) and all(
                not isinstance(d, int) or d == n
                for d, n in zip(spec.shape, value.shape, strict=True)
            )
            if not shape_ok or (expected is not None and value.dtype != expected):
                raise DataError(
                    f"ONNX model {self.path}: input {spec.name!r} expects {spec.spelled()}; the "
                    f"data gives {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
                )

    def feed(self, x: Inputs) -> dict[str, np.ndarray]:
        """The session's input feed for the batch ``x``, checked by :meth:`check_input`."""
        self.check_input(x)
        return {spec.name: value.detach().cpu().numpy() for spec, value in self._pair(x)}

    def predict(self, x: Inputs) -> Tensor:
        """Float32 logits of the graph's first output for the batch ``x``."""
        out: Any = self.session.run([self.output], self.feed(x))[0]
        logits = torch.from_numpy(np.asarray(out))
        if not logits.is_floating_point():
            raise DataError(
                f"ONNX model {self.path}: output {self.output!r} is {logits.dtype}; expected "
                "floating-point logits"
            )
        return logits.float()

    def _pair(self, x: Inputs) -> list[tuple[OnnxInput, Tensor]]:
        names = [i.name for i in self.inputs]
        if isinstance(x, Tensor):
            if len(self.inputs) != 1:
                raise DataError(
                    f"ONNX model {self.path} has inputs {names}; give a dict of tensors with "
                    "those names, not one tensor"
                )
            return [(self.inputs[0], x)]
        if set(x) != set(names):
            raise DataError(
                f"ONNX model {self.path} has inputs {names}; the data gives {sorted(x)}"
            )
        return [(spec, x[spec.name]) for spec in self.inputs]
