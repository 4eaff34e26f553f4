"""What quantization does to the weights, per layer: error, induced sparsity and distribution.

The first link of Bellam & Kim's impact flow (their Fig. 2): at low bit widths the rounding error
``Σ|w~ - w|`` grows, many small weights are rounded to exactly zero (induced sparsity) and the
weight distribution is pulled toward zero. Only integer precisions change weights here; ``fp16``
and ``bf16`` are cast, so their rows report the cast's rounding.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import torch
from torch import Tensor, nn

from fairquant.errors import ConfigError
from fairquant.quant.functional import symmetric_scale
from fairquant.quant.model import layer_bits, quantize_model, quantized_layers
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


def layer_weights(
    model: nn.Module, precision: Precision
) -> list[tuple[str, Tensor, Tensor, float]]:
    """``(layer, w, w~, step)`` for each quantized layer, with ``w~`` taken from
    :func:`~fairquant.quant.model.quantize_model` itself, so per-channel scales, ``-fl<k>`` and
    per-layer bits count exactly as the audit applies them. ``step`` is the layer's largest
    quantization step (0 for float precisions). Activation quantization does not change weights
    and is ignored here; ``-bn`` is refused, since folding changes the layers being compared."""
    if precision.fold_bn:
        raise ConfigError(
            f"weight statistics compare each layer's weights before and after quantization; "
            f"{precision.name!r} folds BatchNorm into them: use it without -bn"
        )
    q = dict(
        quantize_model(model, replace(precision, act_bits=None, dynamic=False)).named_modules()
    )
    bits = layer_bits(model, precision) if precision.kind == "int" else {}
    out = []
    for name, m in quantized_layers(model):
        w = m.weight.detach().float()
        step = (
            float(symmetric_scale(w, bits[name], per_channel=precision.per_channel).max())
            if precision.kind == "int"
            else 0.0
        )
        out.append((name, w, q[name].weight.detach().float(), step))
    return out


def weight_delta(model: nn.Module, precision: Precision) -> Tensor:
    """The flat quantization error ``δ = w~ - w`` over every quantized layer's weight, in the order
    of :func:`~fairquant.quant.model.quantized_layers`."""
    return torch.cat([(q - w).reshape(-1) for _, w, q, _ in layer_weights(model, precision)])


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
        for name, w, q, step in layer_weights(model, p):
            n, err = w.numel(), (q - w).abs().sum().item()
            zero, induced = int((q == 0).sum()), int(((q == 0) & (w != 0)).sum())
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
        q = torch.cat([q.reshape(-1) for _, _, q, _ in layer_weights(model, p)])
        counts = torch.histogram(q.clamp(-lim, lim), bins=edges).hist
        rows += [
            (p.name, edges[i].item(), edges[i + 1].item(), int(counts[i])) for i in range(bins)
        ]
    return pd.DataFrame(rows, columns=["precision", "left", "right", "count"])
