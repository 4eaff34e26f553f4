"""ONNX Runtime int8: static QDQ quantization with its calibrators, and dynamic quantization.

The documented ONNX Runtime flow (``onnxruntime.quantization``): export the float model to ONNX,
run ``shape_inference.quant_pre_process`` (symbolic and ONNX shape inference plus ORT's graph
optimizations, which fold BatchNorm into the convolutions), then

- **static** (:class:`OrtStaticConfig`): ``quantize_static`` in the QDQ format, the one ORT
  recommends for CPU since 1.11. A ``CalibrationDataReader`` feeds the calibration batch through
  an augmented copy of the graph; the calibrator (``CalibrationMethod.MinMax``, ``Entropy``: the
  threshold minimising the KL divergence of a 128-bin histogram, or ``Percentile``: 99.999 % of a
  2048-bin histogram, ORT's defaults) fixes each tensor's range. Weights are signed int8,
  symmetric, per tensor or per output channel; activations unsigned int8, affine, as ORT advises
  for x86 CPUs. QuantizeLinear/DequantizeLinear pairs go around every op ORT quantizes (Conv,
  Gemm, MatMul, and Add, pooling, ... in between), and ORT's session fuses them into int8
  kernels (QLinearConv, QGemm, ...) when it loads the file.
- **dynamic** (:class:`OrtDynamicConfig`): ``quantize_dynamic``: int8 weights, and each
  Conv/MatMul/Gemm input quantized to uint8 with the min-max range of the batch at run time
  (ConvInteger, MatMulInteger); no calibration.

``reduce_range`` quantizes weights to 7 bits, which ORT advises on x86 CPUs without VNNI, whose
uint8 x int8 kernels can saturate (:mod:`fairquant.quant.cpu`). Measured on such a CPU: a
two-Linear model's logits off by 0.89 with 8-bit weights, by 0.03 with 7-bit ones.

ORT 1.31's ``quantize_static`` runs its entropy calibrator with 128 histogram bins for 128
quantized bins, which leaves a single candidate threshold, the whole range: ``-entropy`` then
gives exactly the min-max ranges (measured: identical scales and zero points).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fairquant._extras import require
from fairquant.data.stream import Inputs, inputs_len
from fairquant.errors import ConfigError
from fairquant.models.onnx import OnnxModel
from fairquant.quant.configs import ORT_CALIBRATIONS as ORT_CALIBRATIONS
from fairquant.quant.configs import ORT_METHODS
from fairquant.quant.configs import OrtDynamicConfig as OrtDynamicConfig
from fairquant.quant.configs import OrtStaticConfig as OrtStaticConfig
from fairquant.quant.cpu import reduce_range_note, saturation_note, x86_without_vnni

#: ONNX opset of exported models (QDQ per-channel quantization needs >= 13).
OPSET = 17
#: Most samples per batch the calibration reader feeds ONNX Runtime.
CALIBRATION_BATCH = 64
#: Ops whose second input is a weight: the layers fairquant's simulator quantizes.
_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_INTEGER_OPS = ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm")


def export_onnx(model: nn.Module, example: Inputs, path: Path) -> OnnxModel:
    """Export ``model`` (eval mode) to ``path`` with a free batch dimension, and check that ONNX
    Runtime reproduces its float32 outputs on ``example``.

    Uses torch's TorchScript exporter (``dynamo=False``): with torch 2.14 it exports the zoo's
    models in about a second and needs neither ``onnxscript`` nor ``torch.export``, where the
    dynamo exporter takes tens of seconds and writes weights to a side file. A dict input is
    exported as one graph input per key, the model called as ``model(**x)``.
    """
    require("onnx", what="exporting a model to ONNX")
    keys = None if isinstance(example, Tensor) else list(example)
    wrapped = model if keys is None else _Keywords(model, keys)
    args = (example,) if keys is None else tuple(example[k] for k in keys)
    names = ["input"] if keys is None else keys
    with warnings.catch_warnings():
        # torch announces the TorchScript exporter's replacement by the dynamo one
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            torch.onnx.export(
                wrapped.eval(),
                args,
                str(path),
                input_names=names,
                output_names=["logits"],
                dynamic_axes={name: {0: "batch"} for name in names},
                opset_version=OPSET,
                dynamo=False,
            )
        except Exception as e:  # the exporter raises many types on unsupported ops
            raise ConfigError(
                f"cannot export {type(model).__name__} to ONNX: {str(e).strip().splitlines()[0]}"
            ) from None
    exported = OnnxModel(path)
    with torch.inference_mode():
        expected = (model(example) if keys is None else model(**example)).float()
    got = exported.predict(example)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3, atol=1e-4):
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else "shape"
        raise ConfigError(
            f"the ONNX export of {type(model).__name__} ({path}) does not reproduce its outputs "
            f"(largest difference {diff}); the ort: precisions cannot use it"
        )
    return exported


class _Keywords(nn.Module):
    """``model(**dict(zip(keys, args)))``: a keyword-input model with positional inputs."""

    def __init__(self, model: nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *args: Tensor) -> Tensor:
        return self.model(**dict(zip(self.keys, args, strict=True)))


def _batches(x: Inputs, size: int) -> Iterator[Inputs]:
    for i in range(0, inputs_len(x), size):
        yield (
            x[i : i + size] if isinstance(x, Tensor) else {k: v[i : i + size] for k, v in x.items()}
        )


def quantize_onnx(
    config: OrtStaticConfig | OrtDynamicConfig,
    source: OnnxModel,
    calibration: Inputs | None,
    workdir: Path,
) -> tuple[OnnxModel, list[str]]:
    """The int8 model of ``source`` under ``config``, written to ``workdir``, and notes on it.

    ``calibration`` (model-ready inputs, a random or group-balanced draw of the caller's) is
    required for :class:`OrtStaticConfig` and unused by :class:`OrtDynamicConfig`.
    """
    quantization = require("onnxruntime.quantization", what="ort: precisions")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    static = isinstance(config, OrtStaticConfig)
    if static and (calibration is None or inputs_len(calibration) == 0):
        raise ConfigError("static ort: precisions need calibration inputs (at least one)")
    pre = workdir / "preprocessed.onnx"
    out = workdir / "quantized.onnx"
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their progress
        quant_pre_process(str(source.path), str(pre))
        _check_nodes(config.nodes_to_exclude, pre)
        if not static:
            quantization.quantize_dynamic(
                str(pre),
                str(out),
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                weight_type=quantization.QuantType.QInt8,
                nodes_to_exclude=list(config.nodes_to_exclude) or None,
            )
        else:
            assert calibration is not None
            # equal batches: ORT 1.31's histogram calibrators (entropy, percentile) stack the
            # batches' outputs with np.asarray and fail on a shorter last batch
            n = inputs_len(calibration)
            size = max(d for d in range(1, min(n, CALIBRATION_BATCH) + 1) if n % d == 0)
            feeds = [source.feed(b) for b in _batches(calibration, size)]
            reader = _Reader(feeds)
            quantization.quantize_static(
                str(pre),
                str(out),
                reader,
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=quantization.CalibrationMethod[ORT_METHODS[config.calibration]],
                nodes_to_exclude=list(config.nodes_to_exclude) or None,
            )
    pre.unlink()
    graph = require("onnx", what="reading an ONNX graph").load(str(out)).graph
    done, total = weight_layer_counts(graph)
    notes = [f"ONNX Runtime quantized {done} of {total} weight layers (Conv, Gemm, MatMul)"]
    if config.nodes_to_exclude:
        notes.append(f"kept in float (nodes_to_exclude): {', '.join(config.nodes_to_exclude)}")
    convs = any(n.op_type == "ConvInteger" for n in graph.node)
    if isinstance(config, OrtDynamicConfig) and config.per_channel and convs:
        notes.append(
            "ONNX Runtime's dynamic ConvInteger takes one weight scale per tensor: -pc applies "
            "to Gemm/MatMul only, so on convolutions int8-da8-bn is the closer twin"
        )
    if not config.reduce_range and x86_without_vnni():
        notes.append(saturation_note("7-bit weights (-rr)"))
    elif config.reduce_range and not x86_without_vnni():
        notes.append(reduce_range_note("7-bit weights"))
    if done == 0:
        raise ConfigError(
            f"ONNX Runtime quantized none of the {total} weight layers of {source.path}"
        )
    return OnnxModel(out), notes


def weight_nodes(source: OnnxModel, workdir: Path) -> list[str]:
    """Names of the weight layers (Conv, Gemm, MatMul with a stored weight) of ``source`` after
    ``quant_pre_process``, in graph order: what :attr:`OrtStaticConfig.nodes_to_exclude` names."""
    require("onnxruntime.quantization", what="ort: precisions")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = Path(workdir) / "preprocessed-names.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        quant_pre_process(str(source.path), str(pre))
    graph = require("onnx", what="reading an ONNX graph").load(str(pre)).graph
    pre.unlink()
    stored = {t.name for t in graph.initializer}
    return [
        n.name
        for n in graph.node
        if n.op_type in _WEIGHT_OPS and len(n.input) > 1 and n.input[1] in stored
    ]


def _check_nodes(names: tuple[str, ...], pre: Path) -> None:
    if not names:
        return
    graph = require("onnx", what="reading an ONNX graph").load(str(pre)).graph
    unknown = [s for s in names if s not in {n.name for n in graph.node}]
    if unknown:
        raise ConfigError(
            f"OrtStaticConfig nodes_to_exclude names {unknown}, which are not nodes of the "
            f"preprocessed graph of {pre.name}; its nodes: {[n.name for n in graph.node][:20]}"
        )


class _Reader:
    """A ``CalibrationDataReader`` over prepared input feeds (ORT checks ``get_next`` by duck
    typing; subclassing it would import onnxruntime with this module)."""

    def __init__(self, feeds: list[dict]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def weight_layer_counts(graph: Any) -> tuple[int, int]:
    """(quantized, all) weight layers of an ONNX graph: Conv/Gemm/MatMul nodes whose weight is a
    stored tensor, counted as quantized when that weight is dequantized from int8 (QDQ) or the
    node is an integer op (dynamic quantization's ConvInteger, MatMulInteger). ``graph`` is an
    ``onnx.GraphProto``."""
    stored = {t.name for t in graph.initializer}
    dequantized = {
        n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in stored
    }
    counts: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type in _INTEGER_OPS:
            counts["int"] += 1
        elif node.op_type in _WEIGHT_OPS and len(node.input) > 1:
            if node.input[1] in dequantized:
                counts["int"] += 1
            elif node.input[1] in stored:
                counts["float"] += 1
    return counts["int"], counts["int"] + counts["float"]


def append_logit_offsets(source: Path, offsets: Any, path: Path) -> Path:
    """Write ``source`` (an ONNX model) to ``path`` with ``offsets`` (one float per class) added
    to its first output by an ``Add`` node at the end of the graph: the output keeps its name,
    so a bare ``onnxruntime.InferenceSession`` of ``path`` gives ``logits + offsets``."""
    onnx = require("onnx", what="logit offsets on an ONNX model")
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    output = graph.output[0].name
    raw = f"{output}_before_offsets"
    for node in graph.node:
        node.output[:] = [raw if o == output else o for o in node.output]
        node.input[:] = [raw if i == output else i for i in node.input]
    values = numpy_helper.from_array(np.asarray(offsets, dtype=np.float32), "logit_offsets")
    graph.initializer.append(values)
    graph.node.append(helper.make_node("Add", [raw, "logit_offsets"], [output], "logit_offsets"))
    onnx.save(model, str(path))
    return path
