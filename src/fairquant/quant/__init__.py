"""Quantization: the papers' quantizer, named precisions and quantized model copies."""

from fairquant.quant.artifact import Quantized
from fairquant.quant.build import quantize
from fairquant.quant.functional import check_bits, quantize_symmetric, symmetric_scale
from fairquant.quant.model import WEIGHT_LAYERS, layer_bits, quantize_model, quantized_layers
from fairquant.quant.precision import (
    DEFAULT_PRECISIONS,
    Precision,
    parse_precision,
    parse_precisions,
)
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
