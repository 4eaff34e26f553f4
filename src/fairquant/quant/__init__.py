"""Quantization: the papers' quantizer, named precisions and quantized model copies; calibration,
PTQ or QAT, and the deployed toolchains' export and loading."""

from fairquant.quant.artifact import Quantized
from fairquant.quant.build import quantize
from fairquant.quant.calibrate import calibration_indices, calibration_inputs
from fairquant.quant.functional import check_bits, quantize_symmetric, symmetric_scale
from fairquant.quant.methods import make_quantizer
from fairquant.quant.model import WEIGHT_LAYERS, layer_bits, quantize_model, quantized_layers
from fairquant.quant.openvino import OpenVinoModel, int8_weight_layers, weight_layers
from fairquant.quant.ort import export_onnx
from fairquant.quant.precision import (
    DEFAULT_PRECISIONS,
    Precision,
    parse_precision,
    parse_precisions,
)
from fairquant.quant.qat import DEFAULT_QAT_CONFIG
from fairquant.quant.real import latency_ms
from fairquant.quant.size import packed_size_bytes

__all__ = [
    "DEFAULT_PRECISIONS",
    "WEIGHT_LAYERS",
    "Precision",
    "Quantized",
    "check_bits",
    "layer_bits",
    "packed_size_bytes",
    "parse_precision",
    "parse_precisions",
    "quantize",
    "quantize_model",
    "quantize_symmetric",
    "quantized_layers",
    "symmetric_scale",
]
__all__ += ["DEFAULT_QAT_CONFIG", "calibration_indices", "calibration_inputs", "make_quantizer"]
# deployed toolchains: the ONNX export, an OpenVINO IR and its weight layers, latency on this CPU
__all__ += ["OpenVinoModel", "export_onnx", "int8_weight_layers", "latency_ms", "weight_layers"]
