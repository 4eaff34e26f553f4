"""One config dataclass per deployed workflow, and the deployed precision that carries one.

As torchao's ``quantize_(model, Int8DynamicActivationInt8WeightConfig())``: a precision names a
workflow and its settings; :func:`fairquant.quant.build.quantize` builds it. These are plain,
torch-free dataclasses, so parsing a precision (:func:`fairquant.quant.precision.parse_precision`)
loads no toolchain. The layers a workflow keeps in float are named the toolchain's own way
(ONNX Runtime's ``nodes_to_exclude``, NNCF's ``ignored_scope``, module names for PyTorch and
torchao); ``quantize(..., layers=...)`` fills them in from a filter over the model's modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OrtCalibration = Literal["minmax", "entropy", "percentile"]
#: fairquant's spelling of each ``onnxruntime.quantization.CalibrationMethod``.
ORT_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
ORT_CALIBRATIONS: tuple[str, ...] = tuple(ORT_METHODS)

Workflow = Literal["int8wo", "int8dq", "int4wo"]
WORKFLOWS: tuple[str, ...] = ("int8wo", "int8dq", "int4wo")
INT4_GROUP_SIZES = (32, 64, 128, 256)

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


@dataclass(frozen=True)
class TorchInt8Config:
    """PyTorch's FX int8 flow on its ``backend`` (:func:`fairquant.quant.real.to_int8_model`)."""

    backend: str = "x86"
    reduce_range: bool = False
    """7-bit activations (quint8 0..127), PyTorch's default on x86 (``torch:int8-rr``)."""
    float_modules: tuple[str, ...] = ()
    """Modules kept in float (their qconfig is ``None``)."""


@dataclass(frozen=True)
class OrtStaticConfig:
    """ONNX Runtime static QDQ int8 with a calibrator (``ort:int8[-pc][-<calibration>][-rr]``)."""

    per_channel: bool = False
    calibration: OrtCalibration = "minmax"
    reduce_range: bool = False
    nodes_to_exclude: tuple[str, ...] = ()
    """Nodes of the preprocessed graph (see :func:`fairquant.quant.ort.weight_nodes`) ORT keeps
    in float."""


@dataclass(frozen=True)
class OrtDynamicConfig:
    """ONNX Runtime dynamic int8 (``ort:int8-dynamic[-pc][-rr]``): activation ranges per batch."""

    per_channel: bool = False
    reduce_range: bool = False
    nodes_to_exclude: tuple[str, ...] = ()
    """Nodes of the preprocessed graph ORT keeps in float."""


@dataclass(frozen=True)
class TorchaoConfig:
    """A torchao workflow (``torchao:int8wo``, ``torchao:int8dq``, ``torchao:int4wo[-g<size>]``)."""

    workflow: Workflow
    group_size: int | None = None
    """Input channels per int4 scale (``int4wo``: 32, 64, 128 or 256; torchao's default 128)."""
    float_modules: tuple[str, ...] = ()
    """``nn.Linear`` modules its ``filter_fn`` leaves in float."""


@dataclass(frozen=True)
class OpenVinoConfig:
    """NNCF post-training int8 quantization for OpenVINO (``openvino:int8[-mixed][-bc]``)."""

    preset: Literal["performance", "mixed"] = "performance"
    """Symmetric activations (``performance``, NNCF's default for CNNs) or asymmetric (``mixed``,
    ``-mixed``); weights are symmetric either way."""
    fast_bias_correction: bool = True
    """NNCF's fast bias correction (default); ``False`` (``-bc``) runs its full BiasCorrection."""
    model_type: Literal["transformer"] | None = None
    """NNCF's ``ModelType.TRANSFORMER`` patterns (and ``mixed`` as the default preset)."""
    subset_size: int | None = None
    """Calibration samples NNCF reads, the first ones; ``None``: all of them."""
    ignored_scope: tuple[str, ...] = ()
    """OpenVINO node names (see :func:`fairquant.quant.openvino.weight_layers`) NNCF keeps in
    float."""
    overflow_fix: Literal["first_layer_only", "enable", "disable"] = "first_layer_only"
    """NNCF's ``OverflowFix``: half the int8 range (7 bits) for the weights of the first
    convolution (its default), of every layer, or none."""
    inference_precision: Literal["f32", "bf16"] | None = "f32"
    """The CPU plugin's ``INFERENCE_PRECISION_HINT``; ``None`` leaves OpenVINO's default."""


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

    is_reference = False
    deployed = True

    @property
    def needs_calibration(self) -> bool:
        """Every deployed build takes model-ready inputs: static ranges are calibrated on them,
        and the others check on their first samples that the built model runs."""
        return True

    @property
    def float_layers(self) -> tuple[str, ...]:
        """The layers this precision keeps in float, named the toolchain's way."""
        config = self.config
        for field_name in ("nodes_to_exclude", "ignored_scope", "float_modules"):
            if hasattr(config, field_name):
                return tuple(getattr(config, field_name))
        return ()
