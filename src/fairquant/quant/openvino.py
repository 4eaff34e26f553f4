"""OpenVINO int8 through NNCF's post-training quantization, run on OpenVINO's CPU kernels.

The documented OpenVINO flow: the float model as ONNX (a PyTorch module is exported with
:func:`fairquant.quant.ort.export_onnx`; an ``.onnx`` file is taken as it is), read by
``openvino.Core().read_model``; ``nncf.quantize(model, nncf.Dataset(items), preset=...,
subset_size=..., fast_bias_correction=..., model_type=..., ignored_scope=nncf.IgnoredScope(...))``
inserts FakeQuantize operations; ``openvino.save_model`` writes the IR (``model.xml`` with its
``model.bin``), and the CPU plugin compiles the FakeQuantize pairs into int8 kernels.

NNCF 3.4's defaults for a CNN (``target_device=ANY``, its CPU rules), measured in the IR:

- weights: int8, symmetric, one scale per output channel, the narrow range -127..127, stored as
  int8 constants times a float scale; the first convolution's weights on half that range,
  -63..63 (``overflow_fix`` ``first_layer_only``: NNCF's guard against the saturation of 8-bit
  kernels without VNNI, applied whatever the CPU);
- activations: 8 bits, one range per tensor, from the **mean over the calibration samples** of
  each sample's minimum and maximum (``MEAN_MINMAX``; NNCF recommends calibrating one sample at a
  time, as done here). Preset ``performance`` (NNCF's default for CNNs) quantizes them
  symmetrically (unsigned 0..255 where the calibration saw no negative value, as after ReLU),
  ``mixed`` asymmetrically. NNCF quantizes the model input and the inputs of Convolution, MatMul,
  Add and pooling, not only those of weight layers;
- ``fast_bias_correction``: after quantizing, each layer's bias is shifted by the mean change of
  its output on the calibration samples (on by default; off runs NNCF's slower BiasCorrection).

The CPU plugin runs float operations in bfloat16 on CPUs with AVX512_BF16 unless told otherwise;
fairquant compiles with ``INFERENCE_PRECISION_HINT=f32`` (``OpenVinoConfig.inference_precision``)
so that layers kept in float compute in float32, as the twin and the fp32 reference do. The hint
is a compile option, not part of the IR: load the saved IR with the same option to get the same
predictions (OpenVINO 2026.4 ignores it in the IR's ``runtime_options``, measured).

NNCF sends usage telemetry (events, no data) unless opted out with ``opt_in_out --opt_out``
(``openvino-telemetry``) or run under pytest; fairquant leaves that to the user.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fairquant._extras import require
from fairquant.data.stream import Inputs, inputs_len
from fairquant.errors import ConfigError, DataError
from fairquant.models.onnx import OnnxModel
from fairquant.quant.configs import OpenVinoConfig as OpenVinoConfig
from fairquant.quant.ort import export_onnx

#: Samples of the calibration inputs that check the ONNX export of a PyTorch module.
EXAMPLE_SIZE = 8
#: OpenVINO operations with a weight input: the layers fairquant's simulator quantizes.
WEIGHT_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")
#: Operations a quantized weight passes through between its int8 constant and its layer.
_WEIGHT_PATH = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze")


class OpenVinoModel:
    """An OpenVINO IR (``.xml`` with its ``.bin``) compiled for the CPU.

    ``threads`` sets ``INFERENCE_NUM_THREADS``, by default torch's thread count (as
    :class:`fairquant.models.onnx.OnnxModel` does for ONNX Runtime).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        inference_precision: str | None = "f32",
    ) -> None:
        ov = require("openvino", what=f"running the OpenVINO model {path}")
        self.path = Path(path)
        core = ov.Core()
        self.model = core.read_model(str(self.path))
        options: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
        if inference_precision is not None:
            options["INFERENCE_PRECISION_HINT"] = inference_precision
        self.compiled = core.compile_model(self.model, "CPU", options)
        self.inputs = tuple(i.get_any_name() for i in self.compiled.inputs)
        self._request = self.compiled.create_infer_request()

    def __repr__(self) -> str:
        return f"OpenVinoModel({str(self.path)!r})"

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of the IR: the ``.xml`` and its ``.bin``."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_suffix(".bin")))

    def feed(self, x: Inputs) -> dict[str, np.ndarray]:
        """The input feed for the batch ``x``: a tensor for a one-input model, else a dict keyed
        by the model's input names."""
        if isinstance(x, Tensor):
            if len(self.inputs) != 1:
                raise DataError(
                    f"OpenVINO model {self.path} has inputs {list(self.inputs)}; give a dict of "
                    "tensors with those names, not one tensor"
                )
            return {self.inputs[0]: x.detach().cpu().numpy()}
        if set(x) != set(self.inputs):
            raise DataError(
                f"OpenVINO model {self.path} has inputs {list(self.inputs)}; the data gives "
                f"{sorted(x)}"
            )
        return {k: x[k].detach().cpu().numpy() for k in self.inputs}

    def predict(self, x: Inputs) -> Tensor:
        """Float32 logits of the model's first output for the batch ``x``."""
        out = self._request.infer(self.feed(x))[self.compiled.output(0)]
        return torch.from_numpy(np.array(out, dtype=np.float32))  # a copy: the request reuses it

    def save(self, path: str | Path) -> Path:
        """Write the IR to ``path`` (``.xml``, with the ``.bin`` beside it), float weights kept
        in float32 (``compress_to_fp16=False``)."""
        ov = require("openvino", what="saving an OpenVINO model")
        path = Path(path).with_suffix(".xml")
        ov.save_model(self.model, str(path), compress_to_fp16=False)
        return path


def weight_layers(model: Any) -> list[str]:
    """Names of the weight layers (Convolution, MatMul, ...) of an ``openvino.Model``, in graph
    order: what :attr:`OpenVinoConfig.ignored_scope` names."""
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in WEIGHT_OPS and op.get_input_size() > 1
    ]


def int8_weight_layers(model: Any) -> list[str]:
    """The weight layers of ``model`` whose weight comes from an int8 (or uint8) constant."""

    def from_int8(node: Any) -> bool:
        kind = node.get_type_name()
        if kind == "Constant":
            return node.get_element_type().get_type_name() in ("i8", "u8")
        return kind in _WEIGHT_PATH and any(
            from_int8(node.input_value(i).get_node()) for i in range(node.get_input_size())
        )

    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in WEIGHT_OPS
        and op.get_input_size() > 1
        and from_int8(op.input_value(1).get_node())
    ]


def quantize_openvino(
    config: OpenVinoConfig,
    model: nn.Module | OnnxModel,
    calibration: Inputs,
    workdir: Path,
) -> tuple[OpenVinoModel, list[str]]:
    """The int8 OpenVINO model of ``model`` under ``config``, its IR saved as
    ``workdir/model.xml`` (and ``model.bin``), compiled for the CPU; and notes on it.

    ``calibration`` holds model-ready inputs; NNCF reads them one sample at a time. An exported
    ONNX file is temporary (a folder inside ``workdir`` removed on return).
    """
    ov = require("openvino", what="openvino: precisions")
    nncf = require("nncf", what="openvino: precisions")
    n = inputs_len(calibration)
    if n == 0:
        raise ConfigError("openvino: precisions need calibration inputs (at least one)")
    subset = config.subset_size if config.subset_size is not None else n
    if not 1 <= subset <= n:
        raise ConfigError(
            f"OpenVinoConfig subset_size {config.subset_size!r}: expected 1 to the {n} "
            "calibration samples given"
        )
    workdir = Path(workdir)
    with tempfile.TemporaryDirectory(prefix="openvino-", dir=workdir) as tmp:
        source = (
            model
            if isinstance(model, OnnxModel)
            else export_onnx(model, _rows(calibration, 0, EXAMPLE_SIZE), Path(tmp) / "fp32.onnx")
        )
        float_model = ov.Core().read_model(str(source.path))
        names = weight_layers(float_model)
        unknown = [s for s in config.ignored_scope if s not in _node_names(float_model)]
        if unknown:
            raise ConfigError(
                f"OpenVinoConfig ignored_scope names {unknown}, which are not nodes of the "
                f"OpenVINO model; its weight layers are: {names}"
            )
        items = [source.feed(_rows(calibration, i, i + 1)) for i in range(subset)]
        options: dict[str, Any] = {
            "preset": nncf.QuantizationPreset(config.preset),
            "subset_size": subset,
            "fast_bias_correction": config.fast_bias_correction,
            "model_type": nncf.ModelType(config.model_type) if config.model_type else None,
            "advanced_parameters": nncf.AdvancedQuantizationParameters(
                overflow_fix=nncf.OverflowFix(config.overflow_fix)
            ),
        }
        if config.ignored_scope:
            options["ignored_scope"] = nncf.IgnoredScope(names=list(config.ignored_scope))
        with _quiet():
            quantized = nncf.quantize(float_model, nncf.Dataset(items), **options)
    path = workdir / "model.xml"
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    built = OpenVinoModel(path, inference_precision=config.inference_precision)
    done = len(int8_weight_layers(built.model))
    hint = config.inference_precision or "OpenVINO's default"
    notes = [
        f"NNCF quantized {done} of {len(names)} weight layers (Convolution, MatMul)",
        f"NNCF {nncf.__version__}, OpenVINO {ov.__version__.split('-')[0]} on the CPU, float "
        f"operations in {hint}",
    ]
    if config.ignored_scope:
        notes.append(f"kept in float (ignored_scope): {', '.join(config.ignored_scope)}")
    if done == 0:
        raise ConfigError(f"NNCF quantized none of the {len(names)} weight layers of {source}")
    return built, notes


def _node_names(model: Any) -> set[str]:
    return {op.get_friendly_name() for op in model.get_ordered_ops()}


def _rows(x: Inputs, start: int, stop: int) -> Inputs:
    return x[start:stop] if isinstance(x, Tensor) else {k: v[start:stop] for k, v in x.items()}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF's INFO log and progress bars silenced for the call, its log level restored."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def append_logit_offsets(source: Path, offsets: Any, path: Path) -> Path:
    """Write the IR ``source`` to ``path`` (``.xml`` and ``.bin``) with ``offsets`` (one float per
    class) added to its first output by an ``Add`` operation before its result, so a bare
    OpenVINO compile of ``path`` gives ``logits + offsets``."""
    ov = require("openvino", what="logit offsets on an OpenVINO model")
    from openvino import opset13

    model = ov.Core().read_model(str(source))
    result = model.get_results()[0]
    logits = result.input_value(0)
    constant = opset13.constant(np.asarray(offsets, dtype=np.float32), name="logit_offsets")
    added = opset13.add(logits, constant, name="logit_offsets_add")
    result.input(0).replace_source_output(added.output(0))
    ov.save_model(model, str(path), compress_to_fp16=False)
    return Path(path)
