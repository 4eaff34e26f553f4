"""Activation quantization: the inputs of every Conv and Linear layer, static or dynamic.

Activations use asymmetric (affine) uniform quantization, since post-ReLU inputs are one-sided:
for a clipping range ``[lo, hi]`` (always widened to contain 0) and ``b`` bits,

    s = (hi - lo) / (2^b - 1),   z = round(-lo / s),
    x~ = s * (clamp(round(x / s) + z, 0, 2^b - 1) - z).

*Static* quantization fixes ``[lo, hi]`` per layer from a calibration set (Nagel et al., 2021,
"A White Paper on Neural Network Quantization", Sec. 3.5): ``minmax`` takes the observed extremes,
``percentile`` the 0.01% and 99.99% quantiles, and ``mse`` the range, shrunk from min-max by a
grid of factors, that minimises the mean squared quantization error on the calibration inputs.
*Dynamic* quantization takes min-max of each batch at inference time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from fairquant.errors import ConfigError
from fairquant.options import CALIBRATIONS as CALIBRATIONS
from fairquant.quant.functional import check_bits

#: Calibration inputs kept per layer for the percentile and MSE rules (a seeded subsample).
MAX_SAMPLES = 200_000
PERCENTILE = 99.99
MSE_SHRINK = tuple(1.0 - 0.025 * i for i in range(33))  # 1.0 down to 0.2


def affine_qparams(lo: float, hi: float, bits: int) -> tuple[float, int]:
    """Scale and zero point of ``bits``-bit unsigned affine quantization of ``[lo, hi]``."""
    levels = 2 ** check_bits(bits) - 1
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        return 1.0, 0
    scale = (hi - lo) / levels
    return scale, round(-lo / scale)


def quantize_affine(x: Tensor, scale: float, zero_point: int, bits: int) -> Tensor:
    """Quantize-dequantize ``x`` on the affine grid (float in, float out).

    >>> quantize_affine(torch.tensor([-1.0, 0.0, 0.5, 3.0]), 0.5, 2, 3).tolist()
    [-1.0, 0.0, 0.5, 2.5]
    """
    q = torch.clamp(torch.round(x / scale) + zero_point, 0, 2**bits - 1)
    return (q - zero_point) * scale


def calibrate_range(samples: Tensor, bits: int, method: str) -> tuple[float, float]:
    """The clipping range ``[lo, hi]`` a calibration rule picks for these activation samples."""
    if method not in CALIBRATIONS:
        raise ConfigError(f"unknown calibration {method!r}; expected one of {CALIBRATIONS}")
    x = samples.detach().flatten().float()
    if x.numel() == 0:
        raise ConfigError("calibration saw no activations; give at least one calibration image")
    lo, hi = x.min().item(), x.max().item()
    if method == "percentile":
        x = x[:: -(-x.numel() // 10_000_000)].double()  # torch.quantile takes <= 16M values
        q = torch.quantile(x, torch.tensor([1 - PERCENTILE / 100, PERCENTILE / 100]).double())
        return q[0].item(), q[1].item()
    if method == "mse":
        errors = []
        for f in MSE_SHRINK:
            s, z = affine_qparams(lo * f, hi * f, bits)
            errors.append(((quantize_affine(x, s, z, bits) - x) ** 2).mean().item())
        best = MSE_SHRINK[min(range(len(errors)), key=errors.__getitem__)]
        return lo * best, hi * best
    return lo, hi


def _static_hook(scale: float, zero_point: int, bits: int) -> Callable:
    def hook(_: nn.Module, args: tuple) -> tuple:
        return (quantize_affine(args[0], scale, zero_point, bits), *args[1:])

    return hook


def _dynamic_hook(bits: int) -> Callable:
    def hook(_: nn.Module, args: tuple) -> tuple:
        x = args[0]
        s, z = affine_qparams(x.min().item(), x.max().item(), bits)
        return (quantize_affine(x, s, z, bits), *args[1:])

    return hook


@torch.no_grad()
def attach_activation_quantization(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    bits: int,
    *,
    calibration: Tensor | None,
    method: str = "minmax",
    dynamic: bool = False,
    seed: int = 0,
) -> None:
    """Quantize the input of each layer in place with forward pre-hooks.

    Static: one forward pass over ``calibration`` (model-ready images) records each layer's
    inputs, a rule picks each range, and the hooks then apply the fixed grid.
    """
    if dynamic:
        for _, layer in layers:
            layer.register_forward_pre_hook(_dynamic_hook(bits))
        return
    if calibration is None or len(calibration) == 0:
        raise ConfigError(
            "static activation quantization needs calibration images (a calibration set of "
            "size >= 1), or use dynamic activation quantization"
        )
    seen: dict[str, list[Tensor]] = {name: [] for name, _ in layers}
    gen = torch.Generator().manual_seed(seed)
    handles = []
    for name, layer in layers:

        def record(_: nn.Module, args: tuple, name: str = name) -> None:
            x = args[0].detach().flatten()
            if x.numel() > MAX_SAMPLES:
                x = x[torch.randint(x.numel(), (MAX_SAMPLES,), generator=gen)]
            seen[name].append(x)

        handles.append(layer.register_forward_pre_hook(record))
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(calibration), 256):
            model(calibration[i : i + 256])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for name, layer in layers:
        lo, hi = calibrate_range(torch.cat(seen[name]), bits, method)
        s, z = affine_qparams(lo, hi, bits)
        layer.register_forward_pre_hook(_static_hook(s, z, bits))
