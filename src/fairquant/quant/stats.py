"""What quantization does to the weights, per layer: error, induced sparsity and distribution.

The first link of Bellam & Kim's impact flow (their Fig. 2): at low bit widths the rounding error
``Σ|w~ - w|`` grows, many small weights are rounded to exactly zero (induced sparsity) and the
weight distribution is pulled toward zero. Only integer precisions change weights here; ``fp16``
and ``bf16`` are cast, so their rows report the cast's rounding.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor, nn

from fairquant.quant.functional import quantize_symmetric, symmetric_scale
from fairquant.quant.model import quantized_layers
from fairquant.quant.precision import Precision

#: Columns of :func:`weight_stats`.
WEIGHT_COLUMNS = [
    "precision",
    "layer",
    "n",
    "step",
    "abs_error_sum",
    "abs_error_mean",
    "zero_fraction",
    "induced_sparsity",
]


def quantized_weight(w: Tensor, precision: Precision) -> Tensor:
    """The weight ``w`` as ``precision`` represents it (float32 values)."""
    if precision.kind == "float":
        return w.detach().to(precision.dtype).float()
    return quantize_symmetric(w.detach().float(), precision.bits)


def weight_step(w: Tensor, precision: Precision) -> float:
    """The step ``s = max|w| / (2^(b-1) - 1)`` of an integer precision; 0 for floats."""
    return 0.0 if precision.kind == "float" else float(symmetric_scale(w.float(), precision.bits))


def weight_delta(model: nn.Module, precision: Precision) -> Tensor:
    """The flat quantization error ``δ = w~ - w`` over every quantized layer's weight, in the order
    of :func:`~fairquant.quant.model.quantized_layers`."""
    return torch.cat(
        [
            (quantized_weight(m.weight, precision) - m.weight.detach().float()).reshape(-1)
            for _, m in quantized_layers(model)
        ]
    )


def weight_stats(model: nn.Module, precisions: list[Precision]) -> pd.DataFrame:
    """Per precision and quantized layer: weight count ``n``, ``step``, ``abs_error_sum``
    (``Σ|w~ - w|``), ``abs_error_mean``, ``zero_fraction`` (weights equal to 0 after quantization)
    and ``induced_sparsity`` (weights non-zero in fp32 that quantization sets to 0), plus a row
    ``layer='all'`` over every quantized weight (``step`` there is the largest layer step, the
    ``s_max`` of Liu et al.'s bound).
    """
    rows = []
    for p in precisions:
        total = {"n": 0, "err": 0.0, "zero": 0, "induced": 0, "step": 0.0}
        for name, m in quantized_layers(model):
            w = m.weight.detach().float()
            q = quantized_weight(w, p)
            n, err = w.numel(), (q - w).abs().sum().item()
            zero, induced = int((q == 0).sum()), int(((q == 0) & (w != 0)).sum())
            step = weight_step(w, p)
            rows.append((p.name, name, n, step, err, err / n, zero / n, induced / n))
            total["n"] += n
            total["err"] += err
            total["zero"] += zero
            total["induced"] += induced
            total["step"] = max(total["step"], step)
        n = max(total["n"], 1)
        rows.append(
            (
                p.name,
                "all",
                total["n"],
                total["step"],
                total["err"],
                total["err"] / n,
                total["zero"] / n,
                total["induced"] / n,
            )
        )
    return pd.DataFrame(rows, columns=WEIGHT_COLUMNS)


def weight_histograms(
    model: nn.Module, precisions: list[Precision], *, bins: int = 81
) -> pd.DataFrame:
    """Histograms of all quantized weights per precision on shared edges (long: ``precision,
    left, right, count``), so the pull toward zero is visible across precisions."""
    ws = [m.weight.detach().float().reshape(-1) for _, m in quantized_layers(model)]
    lim = max(w.abs().max().item() for w in ws) or 1.0
    edges = torch.linspace(-lim, lim, bins + 1)
    rows = []
    for p in precisions:
        q = torch.cat([quantized_weight(w, p) for w in ws])
        counts = torch.histogram(q.clamp(-lim, lim), bins=edges).hist
        rows += [
            (p.name, edges[i].item(), edges[i + 1].item(), int(counts[i])) for i in range(bins)
        ]
    return pd.DataFrame(rows, columns=["precision", "left", "right", "count"])
