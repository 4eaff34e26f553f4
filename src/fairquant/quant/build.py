"""The one quantizer factory: ``quantize(model, precision, *, calibration, layers)``.

Every precision goes through :func:`quantize`: fairquant's simulated PTQ formats (``int4``,
``int8-pc-a8``, a per-layer ``@spec``), and the toolchains people deploy with (``torch:int8``,
``ort:*``, ``torchao:*``, ``openvino:*``; :mod:`fairquant.quant.deployed`). It returns a
:class:`~fairquant.quant.artifact.Quantized` that predicts and saves in the toolchain's format.

``layers`` keeps chosen layers at another precision, as torchao's ``filter_fn(module, name)``
picks the layers ``quantize_`` touches: a function ``(module, name) -> bool`` that is true for
the weight layers to quantize (the others stay in float), or a mapping from weight-layer name to
bits (``None`` or ``"fp32"``: float). Each toolchain expresses it its own way: per-layer bits for
the simulated formats; a ``None`` qconfig per module for PyTorch int8; ``filter_fn`` for torchao;
``nodes_to_exclude`` for ONNX Runtime; ``ignored_scope`` for OpenVINO. A choice a toolchain
cannot express (int4 layers under ``ort:int8``) is an error that says so.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairquant.data.stream import Inputs
from fairquant.errors import ConfigError
from fairquant.models.onnx import OnnxModel
from fairquant.quant.artifact import Quantized, file_saver, module_predictor, state_dict_saver
from fairquant.quant.configs import DeployedPrecision
from fairquant.quant.model import quantize_model, quantized_layers
from fairquant.quant.precision import FLOAT_BITS, AnyPrecision, Precision, parse_precision
from fairquant.quant.size import packed_size_bytes

#: What ``layers`` may be: a filter ``(module, name) -> quantize it?`` or per-layer bits.
Layers = Callable[[nn.Module, str], bool] | Mapping[str, int | str | None]


def quantize(
    model: nn.Module | OnnxModel,
    precision: str | AnyPrecision,
    *,
    calibration: Inputs | None = None,
    layers: Layers | None = None,
    calibration_method: str = "minmax",
    workdir: str | Path | None = None,
) -> Quantized:
    """``model`` built at ``precision``; the model itself is never changed.

    ``calibration``: model-ready inputs (a tensor, or a dict of tensors) for static activation
    ranges (``-a<k>``, ``torch:int8``, static ``ort:``, ``openvino:``), also used to check that a
    deployed model runs; draw them with :func:`fairquant.quant.calibrate.calibration_inputs`.
    ``calibration_method`` (``minmax``, ``percentile``, ...) sets the simulated ranges' rule (a
    deployed precision names its calibrator in its spelling). ``layers``: see the module's
    docstring. ``workdir``: where a toolchain writes its files (default: a temporary folder
    removed with the returned object).

    >>> import torch
    >>> q = quantize(torch.nn.Linear(4, 2), "int4")
    >>> q.size_bytes, q.predict(torch.ones(1, 4)).shape
    (16, torch.Size([1, 2]))
    """
    p = parse_precision(precision) if isinstance(precision, str) else precision
    if layers is not None:
        p = with_layers(model, p, layers, example=calibration)
    if isinstance(p, DeployedPrecision):
        from fairquant.quant.deployed import build_deployed

        if workdir is None:
            folder = Path(tempfile.mkdtemp(prefix="fairquant-"))
            built = build_deployed(p, model, calibration, workdir=folder)
            weakref.finalize(built, shutil.rmtree, folder, ignore_errors=True)
            return built
        folder = Path(workdir) / p.name.replace(":", "_")
        return build_deployed(p, model, calibration, workdir=folder)
    if isinstance(model, OnnxModel):
        if not p.is_reference:
            raise ConfigError(
                f"precision {p.name} quantizes a PyTorch model; an ONNX model audits fp32 and "
                "the deployed ort: and openvino: precisions"
            )
        path = Path(model.path)
        return Quantized(p, path.stat().st_size, (), model.predict, file_saver(path), path)
    if p.needs_calibration and not isinstance(calibration, torch.Tensor | None):
        raise ConfigError(
            f"precision {p.name} calibrates activation ranges on a tensor input; the data's "
            "inputs are a dict of tensors"
        )
    copy = quantize_model(model, p, calibration=calibration, calibration_method=calibration_method)
    return simulated(model, p, copy)


def simulated(model: nn.Module, precision: Precision, module: nn.Module) -> Quantized:
    """``module``, ``model`` quantized to the simulated ``precision`` (by PTQ here, or by QAT),
    as a :class:`Quantized`: its packed size, its predictions, its ``state_dict`` when saved."""
    return Quantized(
        precision,
        packed_size_bytes(model, precision),
        (),
        module_predictor(module),
        state_dict_saver(module),
        module=module,
    )


def with_layers(
    model: Any, precision: AnyPrecision, layers: Layers, *, example: Inputs | None = None
) -> AnyPrecision:
    """``precision`` with the per-layer choice ``layers`` in its toolchain's terms (``example``:
    model-ready inputs, to export the model and read the node names ONNX Runtime and OpenVINO
    take)."""
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"layers= picks modules of a PyTorch model; {type(model).__name__} has none (for an "
            "ONNX model, set the toolchain's own node names in its config)"
        )
    names = [n for n, _ in quantized_layers(model)]
    bits = _layer_bits(model, names, precision, layers)
    if isinstance(precision, Precision):
        if precision.kind != "int":
            raise ConfigError(f"layers= applies to integer precisions, not {precision.name}")
        chosen = {n: b for n, b in bits.items() if b is not None}
        return replace(precision, layers=tuple({**dict(precision.layers), **chosen}.items()))
    other = {n: b for n, b in bits.items() if b not in (None, FLOAT_BITS, precision.bits)}
    if other:
        raise ConfigError(
            f"{precision.name} runs every quantized layer at {precision.bits} bits; it cannot "
            f"express {other} (per layer it can only keep a layer in float)"
        )
    floats = [n for n, b in bits.items() if b == FLOAT_BITS]
    return replace(precision, config=_float_config(model, precision, floats, example))


def _layer_bits(
    model: nn.Module, names: list[str], precision: AnyPrecision, layers: Layers
) -> dict[str, int | None]:
    """Each weight layer's bits under ``layers``: :data:`FLOAT_BITS` for float, ``None`` to
    leave it as ``precision`` has it."""
    if callable(layers):
        modules = dict(model.named_modules())
        return {n: None if layers(modules[n], n) else FLOAT_BITS for n in names}
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ConfigError(
            f"layers names {unknown}, which are not weight layers of {type(model).__name__}; "
            f"its weight layers: {names}"
        )
    out: dict[str, int | None] = {}
    for name, value in layers.items():
        p = parse_precision(
            "fp32" if value is None else f"int{value}" if isinstance(value, int) else str(value)
        )
        if p.is_reference:
            out[name] = FLOAT_BITS
        elif isinstance(p, Precision) and p.kind == "int" and p == parse_precision(f"int{p.bits}"):
            out[name] = p.bits
        else:
            raise ConfigError(
                f"layers[{name!r}] = {value!r}: expected bits (e.g. 8 or 'int8') or None / 'fp32'"
            )
    return out


def _float_config(
    model: nn.Module, precision: DeployedPrecision, floats: list[str], example: Inputs | None
) -> Any:
    """The deployed config that keeps the modules ``floats`` in float."""
    config = precision.config
    if precision.toolchain in ("torch", "torchao"):
        return replace(config, float_modules=tuple(floats))
    if example is None:
        raise ConfigError(
            f"layers= on {precision.name} needs calibration inputs: the model is exported to "
            "read the names of its graph nodes"
        )
    from fairquant.quant.deployed import module_nodes

    nodes = module_nodes(model, floats, example, toolchain=precision.toolchain)
    if precision.toolchain == "openvino":
        return replace(config, ignored_scope=tuple(nodes))
    return replace(config, nodes_to_exclude=tuple(nodes))
