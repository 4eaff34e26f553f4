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

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from fairquant._extras import require
from fairquant.data.stream import Inputs, inputs_len
from fairquant.errors import ConfigError
from fairquant.models.onnx import OnnxModel
from fairquant.quant.cpu import reduce_range_note, saturation_note, x86_without_vnni
from fairquant.quant.openvino import OpenVinoConfig, quantize_openvino
from fairquant.quant.ort import (
    ORT_CALIBRATIONS,
    OrtDynamicConfig,
    OrtStaticConfig,
    export_onnx,
    quantize_onnx,
)
from fairquant.quant.real import real_kernel_layers, to_int8_model
from fairquant.quant.torchao import INT4_GROUP_SIZES, TorchaoConfig, quantize_torchao

#: The spellings of every deployed precision.
FORMS = (
    "torch:int8[-rr]",
    "ort:int8[-pc][-minmax|-entropy|-percentile][-rr]",
    "ort:int8-dynamic[-pc][-rr]",
    "torchao:int8wo",
    "torchao:int8dq",
    "torchao:int4wo[-g32|-g64|-g128|-g256]",
    "openvino:int8[-mixed][-bc]",
)
#: The optional packages each toolchain needs (see :mod:`fairquant._extras`).
_REQUIRES = {
    "torch": (),
    "ort": ("onnx", "onnxruntime"),
    "torchao": ("torchao",),
    "openvino": ("onnx", "onnxruntime", "openvino", "nncf"),
}
#: Samples of the calibration inputs that check an export or a torchao model runs.
EXAMPLE_SIZE = 8


@dataclass(frozen=True)
class TorchInt8Config:
    """PyTorch's FX int8 flow on its ``backend`` (:func:`fairquant.quant.real.to_int8_model`)."""

    backend: str = "x86"
    reduce_range: bool = False
    """7-bit activations (quint8 0..127), PyTorch's default on x86 (``torch:int8-rr``)."""


DeployedConfig = (
    TorchInt8Config | OrtStaticConfig | OrtDynamicConfig | TorchaoConfig | OpenVinoConfig
)


@dataclass(frozen=True)
class DeployedPrecision:
    """A deployed precision: its name, toolchain, weight bits, simulated twin and its workflow's
    config."""

    name: str
    toolchain: Literal["torch", "ort", "torchao", "openvino"]
    bits: int
    twin: str | None
    config: DeployedConfig


@dataclass(frozen=True)
class Deployed:
    """A built deployed model: ``predict`` gives float32 logits for one batch; ``artifact`` is the
    file the toolchain wrote (``size_bytes`` on disk); ``notes`` say what was quantized."""

    precision: DeployedPrecision
    artifact: Path
    size_bytes: int
    notes: tuple[str, ...]
    run: Callable[[Inputs], Tensor] = field(repr=False)

    def predict(self, x: Inputs) -> Tensor:
        return self.run(x)


def is_deployed(name: str) -> bool:
    """Whether ``name`` is spelled as a deployed precision (``toolchain:...``)."""
    return re.match(r"\s*[a-z][a-z0-9_]*:", name.lower()) is not None


def _unknown(name: str, why: str = "") -> ConfigError:
    return ConfigError(
        f"unknown deployed precision {name!r}{why}; expected one of: {', '.join(FORMS)}"
    )


def parse_deployed(name: str) -> DeployedPrecision:
    """Parse a deployed precision name (see the module docstring for the forms).

    >>> p = parse_deployed("ort:int8-pc-entropy")
    >>> p.toolchain, p.bits, p.twin, p.config.calibration
    ('ort', 8, 'int8-pc-a8', 'entropy')
    """
    text = name.strip().lower()
    toolchain, _, spec = text.partition(":")
    head, *suffixes = spec.split("-")
    if len(set(suffixes)) != len(suffixes):
        raise _unknown(name, " (a repeated suffix)")
    if toolchain == "torch" and spec in ("int8", "int8-rr"):
        rr = spec == "int8-rr"
        twin = "int8-a7-bn" if rr else "int8-a8-bn"
        return DeployedPrecision(text, "torch", 8, twin, TorchInt8Config(reduce_range=rr))
    if toolchain == "ort" and head == "int8":
        return _parse_ort(name, text, suffixes)
    if toolchain == "torchao" and head in ("int8wo", "int8dq") and not suffixes:
        twin = "int8-pc" if head == "int8wo" else "int8-pc-da8"
        return DeployedPrecision(text, "torchao", 8, twin, TorchaoConfig(head))
    if toolchain == "torchao" and head == "int4wo" and len(suffixes) <= 1:
        size = suffixes[0][1:] if suffixes else "128"
        if suffixes and (not suffixes[0].startswith("g") or not size.isdigit()):
            raise _unknown(name)
        if int(size) not in INT4_GROUP_SIZES:
            raise _unknown(name, f" (int4 group size {size} is not one of {INT4_GROUP_SIZES})")
        return DeployedPrecision(text, "torchao", 4, None, TorchaoConfig("int4wo", int(size)))
    if toolchain == "openvino" and head == "int8" and set(suffixes) <= {"mixed", "bc"}:
        config = OpenVinoConfig(
            preset="mixed" if "mixed" in suffixes else "performance",
            fast_bias_correction="bc" not in suffixes,
        )
        return DeployedPrecision(text, "openvino", 8, "int8-pc-a8", config)
    raise _unknown(name)


def _parse_ort(name: str, text: str, suffixes: list[str]) -> DeployedPrecision:
    dynamic = "dynamic" in suffixes
    per_channel = "pc" in suffixes
    reduce_range = "rr" in suffixes
    calibrations = [s for s in suffixes if s in ORT_CALIBRATIONS]
    unknown = set(suffixes) - {"dynamic", "pc", "rr", *ORT_CALIBRATIONS}
    if unknown or len(calibrations) > 1 or (dynamic and calibrations):
        raise _unknown(name)
    bits = 7 if reduce_range else 8
    if per_channel:
        twin = f"int{bits}-pc-{'da8' if dynamic else 'a8'}"
    else:
        twin = f"int{bits}-{'da8' if dynamic else 'a8'}-bn"
    config: DeployedConfig = (
        OrtDynamicConfig(per_channel, reduce_range)
        if dynamic
        else OrtStaticConfig(
            per_channel, calibrations[0] if calibrations else "minmax", reduce_range
        )
    )
    return DeployedPrecision(text, "ort", bits, twin, config)


def build_deployed(
    precision: DeployedPrecision,
    model: nn.Module | OnnxModel,
    calibration: Inputs | None,
    *,
    workdir: Path,
) -> Deployed:
    """Build ``precision``'s deployed model of ``model`` in ``workdir`` (an empty folder of its
    own). ``calibration`` holds model-ready inputs: the calibration set of static ``ort:``
    precisions and ``torch:int8``; for the others its first samples check the built model runs.
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
        return Deployed(precision, ir.path, ir.size_bytes, tuple(notes), ir.predict)
    example = _head(calibration, EXAMPLE_SIZE)
    if isinstance(config, OrtStaticConfig | OrtDynamicConfig):
        source = (
            model
            if isinstance(model, OnnxModel)
            else export_onnx(model, example, workdir / "fp32.onnx")
        )
        quantized, notes = quantize_onnx(config, source, calibration, workdir)
        path = quantized.path
        return Deployed(precision, path, path.stat().st_size, tuple(notes), quantized.predict)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{precision.name} quantizes a PyTorch module; an ONNX model takes the ort: precisions"
        )
    if isinstance(config, TorchInt8Config):
        if not isinstance(calibration, Tensor):
            raise ConfigError(
                f"{precision.name} calibrates on a tensor input; the data's inputs are a dict"
            )
        q = to_int8_model(
            model, calibration, backend=config.backend, reduce_range=config.reduce_range
        )
        kernels = ", ".join(f"{k} x{n}" for k, n in real_kernel_layers(q).items())
        notes = [f"PyTorch int8 kernels ({config.backend}): {kernels}"]
        if not config.reduce_range and x86_without_vnni():
            notes.append(saturation_note("7-bit activations (torch:int8-rr)"))
        elif config.reduce_range and not x86_without_vnni():
            notes.append(reduce_range_note("7-bit activations"))
    else:
        q, notes = quantize_torchao(config, model, example)
    path = workdir / "model.pt"
    torch.save(q.state_dict(), path)
    return Deployed(precision, path, path.stat().st_size, tuple(notes), _runner(q))


def _head(x: Inputs, n: int) -> Inputs:
    return x[:n] if isinstance(x, Tensor) else {k: v[:n] for k, v in x.items()}


def _runner(model: nn.Module) -> Callable[[Inputs], Tensor]:
    @torch.inference_mode()
    def run(x: Inputs) -> Tensor:
        return (model(x) if isinstance(x, Tensor) else model(**x)).float()

    return run
