"""Deployed quantization toolchains as precisions: PyTorch's int8 kernels, ONNX Runtime, torchao.

fairquant's own precisions (:mod:`fairquant.quant.precision`) *simulate* quantization in float32.
A deployed precision instead builds the artifact a toolchain ships (a quantized ``.onnx`` file, an
int8 PyTorch model, a torchao model) and runs it on that toolchain's kernels, so an audit measures
what is deployed. Names are ``toolchain:spec``:

- ``torch:int8[-rr]``: PyTorch's FX int8 flow on its x86 kernels (BatchNorm folded, min-max
  ranges); twin ``int8-a8-bn``, or with 7-bit activations (``-rr``) ``int8-a7-bn``.
- ``ort:int8[-pc][-minmax|-entropy|-percentile][-rr]``: ONNX Runtime static QDQ int8 with that
  calibrator (default min-max); twin ``int8-a8-bn``, or ``int8-pc-a8`` per channel.
- ``ort:int8-dynamic[-pc][-rr]``: ONNX Runtime dynamic int8; twin ``int8-da8-bn`` / ``int8-pc-da8``.
- ``torchao:int8wo``: torchao int8 weights (per row, nn.Linear only); twin ``int8-pc``.
- ``torchao:int8dq``: the same weights and per-row dynamic int8 activations; twin ``int8-pc-da8``.
- ``torchao:int4wo[-g32|-g64|-g128|-g256]``: int4 weights in groups of that many inputs; no twin.
- ``openvino:int8[-mixed][-bc]``: NNCF's int8 post-training quantization on OpenVINO's CPU
  kernels (:mod:`fairquant.quant.openvino`): per-channel symmetric weights, per-tensor
  activations, symmetric or (``-mixed``) asymmetric; ``-bc``: full bias correction; twin
  ``int8-pc-a8``.

``-pc`` quantizes weights per output channel; ``-rr`` is the toolchain's ``reduce_range``, 7 bits
for x86 CPUs without VNNI, whose 8-bit kernels saturate (:mod:`fairquant.quant.cpu`; elsewhere it
only gives up a bit, and the notes say so): ORT's weights (twin ``int7-...``), PyTorch's
activations.

The *twin* is the simulated precision the deployed one should match most closely; an audit that
lists both reports how often their predictions agree. Per-channel weights need no ``-bn`` twin:
folding BatchNorm scales each output channel, which per-channel quantization absorbs exactly.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from fairquant._extras import require
from fairquant._io import atomic_write
from fairquant.data.stream import Inputs, inputs_len
from fairquant.errors import ConfigError
from fairquant.models.onnx import OnnxModel
from fairquant.quant.artifact import Quantized, file_saver, module_predictor, state_dict_saver
from fairquant.quant.configs import (
    DeployedPrecision,
    OpenVinoConfig,
    OrtDynamicConfig,
    OrtStaticConfig,
    TorchInt8Config,
)
from fairquant.quant.cpu import reduce_range_note, saturation_note, x86_without_vnni
from fairquant.quant.openvino import quantize_openvino
from fairquant.quant.ort import export_onnx, quantize_onnx
from fairquant.quant.real import real_kernel_layers, to_int8_model
from fairquant.quant.torchao import quantize_torchao

#: The optional packages each toolchain needs (see :mod:`fairquant._extras`).
_REQUIRES = {
    "torch": (),
    "ort": ("onnx", "onnxruntime"),
    "torchao": ("torchao",),
    "openvino": ("onnx", "onnxruntime", "openvino", "nncf"),
}
#: Samples of the calibration inputs that check an export or a torchao model runs.
EXAMPLE_SIZE = 8


def build_deployed(
    precision: DeployedPrecision,
    model: nn.Module | OnnxModel,
    calibration: Inputs | None,
    *,
    workdir: Path,
) -> Quantized:
    """Build ``precision``'s deployed model of ``model`` in ``workdir`` (an empty folder of its
    own): the part of :func:`fairquant.quant.build.quantize` for deployed precisions.
    ``calibration`` holds model-ready inputs: the calibration set of static ``ort:`` precisions,
    ``torch:int8`` and ``openvino:``; for the others its first samples check the built model runs.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = precision.config
    if calibration is None or inputs_len(calibration) == 0:
        raise ConfigError(
            f"{precision.name} needs calibration inputs (at least one model-ready sample)"
        )
    for module in _REQUIRES[precision.toolchain]:
        require(module, what=precision.name)
    if isinstance(config, OpenVinoConfig):
        ir, notes = quantize_openvino(config, model, calibration, workdir)
        return Quantized(precision, ir.size_bytes, tuple(notes), ir.predict, ir.save, ir.path)
    example = _head(calibration, EXAMPLE_SIZE)
    if isinstance(config, OrtStaticConfig | OrtDynamicConfig):
        source = (
            model
            if isinstance(model, OnnxModel)
            else export_onnx(model, example, workdir / "fp32.onnx")
        )
        quantized, notes = quantize_onnx(config, source, calibration, workdir)
        path = quantized.path
        return Quantized(
            precision, path.stat().st_size, tuple(notes), quantized.predict, file_saver(path), path
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{precision.name} quantizes a PyTorch module; an ONNX model takes the ort: and "
            "openvino: precisions"
        )
    if isinstance(config, TorchInt8Config):
        if not isinstance(calibration, Tensor):
            raise ConfigError(
                f"{precision.name} calibrates on a tensor input; the data's inputs are a dict"
            )
        q = to_int8_model(
            model,
            calibration,
            backend=config.backend,
            reduce_range=config.reduce_range,
            float_modules=config.float_modules,
        )
        kernels = ", ".join(f"{k} x{n}" for k, n in real_kernel_layers(q).items())
        notes = [f"PyTorch int8 kernels ({config.backend}): {kernels}"]
        if config.float_modules:
            notes.append(f"kept in float: {', '.join(config.float_modules)}")
        if not config.reduce_range and x86_without_vnni():
            notes.append(saturation_note("7-bit activations (torch:int8-rr)"))
        elif config.reduce_range and not x86_without_vnni():
            notes.append(reduce_range_note("7-bit activations"))
        if not isinstance(example, Tensor):
            raise ConfigError(f"{precision.name} takes one tensor input; the data gives a dict")
        saver = _torchscript_saver(q, example)
    else:
        q, notes = quantize_torchao(config, model, example)
        saver = state_dict_saver(q)
    # the size on disk: the state_dict's (a TorchScript file adds the code of the graph)
    path = workdir / "model.pt"
    torch.save(q.state_dict(), path)
    size = path.stat().st_size
    return Quantized(precision, size, tuple(notes), module_predictor(q), saver, path, q)


def _torchscript_saver(model: nn.Module, example: Tensor) -> Callable[[Path], Path]:
    """PyTorch's own format for an int8 FX model: TorchScript (``torch.jit.load`` runs it
    without fairquant; ``torch.export`` cannot serialize its packed int8 weights)."""

    def save(path: Path) -> Path:
        def write(tmp: Path) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer warnings
                torch.jit.save(torch.jit.trace(model, example), str(tmp))

        return atomic_write(path, write)

    return save


def _head(x: Inputs, n: int) -> Inputs:
    return x[:n] if isinstance(x, Tensor) else {k: v[:n] for k, v in x.items()}


#: Ops that end a node's name after its module's scope (``/layer1/layer1.0/conv1/Conv``).
_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def scope_module(node: str) -> str:
    """The module a node of an exported graph belongs to, from its scope: torch's TorchScript
    exporter names nodes ``/<attr>/<parent-attr>.<index>/.../<Op>``, e.g.
    ``/stage2/stage2.0/branch2/branch2.0/Conv`` is module ``stage2.0.branch2.0``; OpenVINO adds
    a suffix (``/conv1/Conv/WithoutBiases``).

    >>> scope_module("/layer1/layer1.0/conv1/Conv"), scope_module("/fc/Gemm")
    ('layer1.0.conv1', 'fc')
    """
    parts: list[str] = []
    for part in node.strip("/").split("/"):
        if part.split("_")[0] in _OPS:
            break
        parts.append(part.rsplit(".", 1)[1] if "." in part else part)
    return ".".join(parts)


def module_nodes(
    model: nn.Module, modules: list[str], example: Inputs, *, toolchain: str
) -> list[str]:
    """The weight nodes of ``model``'s exported graph (ONNX Runtime's preprocessed graph, or
    OpenVINO's) that compute the modules ``modules``: what ``nodes_to_exclude`` and
    ``ignored_scope`` name."""
    if not modules:
        return []
    from fairquant.quant.openvino import weight_layers
    from fairquant.quant.ort import weight_nodes

    with tempfile.TemporaryDirectory(prefix="fairquant-names-") as tmp:
        source = export_onnx(model, _head(example, 2), Path(tmp) / "fp32.onnx")
        if toolchain == "openvino":
            ov = require("openvino", what="openvino: precisions")
            nodes = weight_layers(ov.Core().read_model(str(source.path)))
        else:
            nodes = weight_nodes(source, Path(tmp))
    by_module: dict[str, list[str]] = {}
    for node in nodes:
        by_module.setdefault(scope_module(node), []).append(node)
    missing = [m for m in modules if m not in by_module]
    if missing:
        raise ConfigError(
            f"cannot find the graph nodes of modules {missing} in the export of "
            f"{type(model).__name__} (its weight nodes: {nodes[:8]}...); name the nodes in the "
            "toolchain's config instead"
        )
    return [node for m in modules for node in by_module[m]]
