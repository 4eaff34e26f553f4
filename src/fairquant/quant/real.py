"""Real int8 models on PyTorch's CPU kernels, to check the simulation and measure speed.

fairquant's quantizers simulate quantization in float32 ("fake quantization"), which is what the
papers measure. To show what a deployed int8 model does, :func:`to_int8_model` converts a model
with PyTorch's FX graph-mode quantization (``torch.ao.quantization``) for the ``x86`` (fbgemm +
oneDNN) backend: Conv2d with its BatchNorm folded in and ReLU fused, Linear, and the residual
``add`` (+ReLU) run as int8 kernels (``quantized::conv2d_relu``, ``quantized::linear``,
``quantized::add_relu``), depthwise convolutions included; so do ``mul``, LayerNorm and sigmoid
(with PyTorch's fixed output range, as tanh and softmax); pooling runs on quantized tensors;
``flatten``, SiLU, GELU, attention products and anything else without a quantized kernel stay
float32 between quantize/dequantize nodes. A model ``torch.fx`` cannot trace is refused.
Weights are qint8 per-tensor symmetric and activations quint8 per-tensor affine with min-max
ranges, the real-kernel counterpart of the simulated ``int8-a8`` precision. One difference
remains: real kernels quantize the BN-folded weights, the simulation the weights before
BatchNorm, so the two agree closely but not bit for bit (``bench/int8_real.py`` reports by how
much).

The x86 int8 convolutions write channels-last (NHWC) outputs whatever the input's layout. Where
such an output is 1x1 (ShuffleNetV2's last convolution at 32 px), its strides fit both layouts,
and torch 2.14's quantized ``mean`` over H and W then asks for a channels-last rank-2 result and
raises "required rank 4 tensor to use channels_last format"; :func:`to_int8_model` gives every
``mean`` of a rank-4 tensor with a 1x1 map contiguous strides first (the same bytes).
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections import Counter

import torch
from torch import Tensor, nn

from fairquant.errors import ConfigError


def to_int8_model(
    model: nn.Module,
    calibration: Tensor,
    *,
    backend: str = "x86",
    reduce_range: bool = False,
    float_modules: tuple[str, ...] = (),
) -> nn.Module:
    """An int8 copy of ``model`` calibrated on ``calibration`` (model-ready images); the modules
    named in ``float_modules`` stay in float (their qconfig is ``None``).

    ``reduce_range`` gives activations 7 bits (quint8 0..127), PyTorch's own default for x86:
    on CPUs without VNNI its uint8 x int8 kernels can saturate 16-bit sums with 8 bits."""
    from torch.ao.quantization import (
        FixedQParamsObserver,
        MinMaxObserver,
        QConfig,
        QConfigMapping,
        get_default_qconfig_mapping,
    )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if backend not in torch.backends.quantized.supported_engines:
        raise ConfigError(
            f"quantized backend {backend!r} is not available here; this PyTorch supports "
            f"{torch.backends.quantized.supported_engines}"
        )
    if len(calibration) == 0:
        raise ConfigError("a real int8 model needs at least one calibration image")
    torch.backends.quantized.engine = backend
    qconfig = QConfig(
        activation=MinMaxObserver.with_args(
            dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=reduce_range
        ),
        weight=MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
    )
    mapping = QConfigMapping().set_global(qconfig)
    for name in float_modules:
        mapping.set_module_name(name, None)
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the FX flow still works here
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        warnings.filterwarnings("ignore", "Please use quant_min and quant_max", UserWarning)
        # sigmoid, tanh, softmax (bounded outputs) take fixed output ranges, as PyTorch's defaults
        for kind, q in get_default_qconfig_mapping(backend).object_type_qconfigs.items():
            if q is not None and isinstance(q.activation(), FixedQParamsObserver):
                mapping.set_object_type(kind, q)
        try:
            prepared = prepare_fx(
                copy.deepcopy(model).eval(), mapping, example_inputs=(calibration[:1],)
            )
        except Exception as e:  # torch.fx raises many types on untraceable control flow
            raise ConfigError(
                f"cannot build a real int8 model of {type(model).__name__}: torch.fx could not "
                f"trace it ({e}); the simulated int8 precisions still apply"
            ) from None
        with torch.inference_mode():
            for i in range(0, len(calibration), 256):
                prepared(calibration[i : i + 256])
        return _contiguous_before_means(convert_fx(prepared))


def _contiguous_before_means(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``model`` with :func:`plain_layout` applied to the input of every ``mean`` (module
    docstring)."""
    graph = model.graph
    for node in list(graph.nodes):
        is_mean = (node.op == "call_method" and node.target == "mean") or (
            node.op == "call_function" and node.target is torch.mean
        )
        if is_mean and isinstance(node.args[0], torch.fx.Node):
            with graph.inserting_before(node):
                plain = graph.call_function(plain_layout, (node.args[0],))
            node.replace_input_with(node.args[0], plain)
    graph.lint()
    model.recompile()
    return model


def plain_layout(x: Tensor) -> Tensor:
    """``x`` with contiguous (NCHW) strides if it is rank 4 with a 1x1 map, else ``x`` itself:
    a 1x1 map holds the same bytes in either layout, so only the strides change."""
    if x.dim() == 4 and x.shape[2] == x.shape[3] == 1:
        return x.clone(memory_format=torch.contiguous_format)
    return x


def real_kernel_layers(model: nn.Module) -> dict[str, int]:
    """Counts of the module and function types in ``model`` that run quantized kernels."""
    counts: Counter[str] = Counter()
    for m in model.modules():
        kind = type(m)
        quantized = kind.__module__.startswith("torch.ao.nn") and ".quantized" in kind.__module__
        # LinearPackedParams is the weight container inside a quantized Linear, not a layer, and
        # the quantized Dropout is the identity at inference: neither runs a quantized kernel
        if quantized and not kind.__name__.endswith("PackedParams") and kind.__name__ != "Dropout":
            counts[kind.__name__] += 1
    graph = getattr(model, "graph", None)
    for node in graph.nodes if graph is not None else ():
        if node.op == "call_function" and "quantized" in str(node.target):
            counts[str(node.target).removeprefix("quantized.")] += 1
    return dict(sorted(counts.items()))


@torch.inference_mode()
def latency_ms(model: nn.Module, x: Tensor, *, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one forward pass on ``x``, in milliseconds."""
    model.eval()
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
