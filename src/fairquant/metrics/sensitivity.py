"""Per-layer, per-group sensitivity: each group's excess loss when one layer is quantized.

The per-layer, per-group excess loss ``G_{l,b}(a)`` is what fairness-aware mixed precision
(:mod:`fairquant.mitigate.allocate`) trades off between layers; :func:`group_sensitivity` gives it
measured or predicted.

Liu et al. (ICML 2025) bound a group's excess loss by its gradient, its curvature and the
quantization error. Here the second-order Taylor expansion is used as a predictor: quantizing
layer ``l`` to ``b`` bits moves the weights by ``δ_{l,b} = Q_b(w_l) - w_l`` (zero outside layer
``l``), and group ``a``'s loss ``L_a(θ) = L(θ; D_a)`` changes by

    ``G_{l,b}(a) ≈ g_a · δ_{l,b} + ½ δ_{l,b}ᵀ H_a δ_{l,b}``,

with ``g_a = ∇L_a`` and ``H_a = ∇²L_a``. The quadratic term takes one Hessian-vector product
along ``δ_{l,b}`` per group (:class:`~fairquant.metrics.curvature.GroupCurvature`, all layers and
bit widths of a block in one batched double-backward pass). A spec that puts layer ``l`` at
``b_l`` bits is predicted to cost group ``a`` the sum ``Σ_l G_{l,b_l}(a)``: the cross-layer terms
``δ_lᵀ H_a δ_{l'}`` (``l ≠ l'``) and every higher-order term are ignored (compare with
:func:`measured_excess` of the whole spec to see what that costs).

:func:`measured_layer_excess` gives the same table measured: quantize only layer ``l`` at ``b``
bits and evaluate each group's loss.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import pandas as pd
import torch
from torch import Tensor, nn

from fairquant.data.base import Split
from fairquant.errors import ConfigError, DataError
from fairquant.metrics.curvature import GroupCurvature
from fairquant.metrics.functional import group_counts, group_mean, per_sample_loss
from fairquant.models.predict import predict_logits
from fairquant.quant.functional import check_bits, quantize_symmetric
from fairquant.quant.mixed import layer_deltas
from fairquant.quant.model import quantize_model, quantized_layers
from fairquant.quant.precision import Precision

#: How :func:`group_sensitivity` gets ``G_{l,b}(a)``.
SensitivitySource = Literal["measured", "predicted"]
SENSITIVITIES: tuple[str, ...] = get_args(SensitivitySource)
#: Columns of :func:`taylor_excess`.
TAYLOR_COLUMNS = ["layer", "bits", "numel", "group", "first", "second", "predicted"]


def _offsets(op: GroupCurvature, model: nn.Module) -> dict[str, tuple[int, int]]:
    """Each quantized layer's slice of the flat parameter vector of ``op``."""
    layers = quantized_layers(model)
    same = len(layers) == len(op.params) and all(
        m.weight is p for (_, m), p in zip(layers, op.params, strict=True)
    )
    if not same:
        raise ConfigError(
            "the GroupCurvature must be built on this model with parameters='quantized' "
            "(its parameters are not this model's quantized weights)"
        )
    out, start = {}, 0
    for (name, _), p in zip(layers, op.params, strict=True):
        out[name] = (start, start + p.numel())
        start += p.numel()
    return out


def taylor_excess(
    op: GroupCurvature,
    model: nn.Module,
    group_names: Sequence[str],
    options: Sequence[int],
    *,
    per_channel: bool = False,
    block: int = 1,
) -> pd.DataFrame:
    """Predicted per-layer, per-group excess loss: ``first = g_a · δ``, ``second = ½ δᵀ H_a δ``
    and ``predicted = first + second`` for every quantized layer, bit width and group with samples.

    ``op`` holds the per-group gradients and Hessian (or GGN) of ``model`` (built with
    ``parameters="quantized"``); ``block`` directions share one batched (``vmap``) Hessian-vector
    product per group. One at a time is the default: on a busy 2-core CPU a narrow ResNet-18 took
    27 s for a block of 8 directions against 8 x 2.4 s one by one (100 images, contended).
    Returns the columns :data:`TAYLOR_COLUMNS`, one row per (layer, bits, group).
    """
    if block < 1:
        raise ConfigError(f"block must be >= 1; got {block}")
    if len(group_names) != len(op.counts):
        raise ConfigError(f"{len(group_names)} group names for {len(op.counts)} groups")
    offsets = _offsets(op, model)
    deltas = layer_deltas(model, options, per_channel=per_channel)
    groups = op.present()
    rows = []
    for start in range(0, len(deltas), block):
        part = deltas[start : start + block]
        v = torch.zeros(len(part), op.dim, dtype=op.dtype)
        for i, (name, _, d) in enumerate(part):
            lo, hi = offsets[name]
            v[i, lo:hi] = d.reshape(-1).to(op.dtype)
        for a in groups:
            first = (v.double() @ op.grads[a].double()).tolist()
            second = (0.5 * (op.matvec(a, v) * v).double().sum(1)).tolist()
            for (name, b, d), f, s in zip(part, first, second, strict=True):
                rows.append((name, b, d.numel(), group_names[a], f, s, f + s))
    return pd.DataFrame(rows, columns=TAYLOR_COLUMNS)


def predict_excess(table: pd.DataFrame, bits: Mapping[str, int], *, column: str = "predicted"):
    """``Σ_l table[l, bits[l], a]`` per group: the additive prediction of a per-layer spec (no
    cross-layer terms). ``table`` has columns ``layer, bits, group`` and ``column``; ``bits``
    must give every layer of the table one of its bit widths. Returns a Series by group."""
    layers = list(dict.fromkeys(table.layer))
    if set(bits) != set(layers):
        raise ConfigError(
            f"the spec's layers {sorted(bits)} differ from the table's layers {sorted(layers)}"
        )
    chosen = pd.MultiIndex.from_tuples([(layer, int(bits[layer])) for layer in layers])
    keyed = table.set_index(["layer", "bits"])
    missing = [key for key in chosen if key not in keyed.index]
    if missing:
        raise ConfigError(f"no {column!r} for (layer, bits) {missing}")
    picked = keyed.loc[chosen]
    return picked.groupby("group", sort=False)[column].sum()


def _group_losses(model: nn.Module, data: Split, num_groups: int) -> Tensor:
    losses = per_sample_loss(predict_logits(model, data.x), data.y)
    return group_mean(losses, data.g, num_groups)


def _present(data: Split, num_groups: int) -> list[int]:
    counts = group_counts(data.g, num_groups)
    present = [a for a in range(num_groups) if counts[a] > 0]
    if not present:
        raise DataError("the data has no samples in any group")
    return present


@torch.no_grad()
def measured_layer_excess(
    model: nn.Module,
    data: Split,
    group_names: Sequence[str],
    options: Sequence[int],
    *,
    per_channel: bool = False,
) -> pd.DataFrame:
    """Measured per-layer, per-group excess loss: ``G_{l,b}(a) = L_a(θ with only layer l at b
    bits) - L_a(θ)`` on ``data``, for every quantized layer, bit width and group with samples.

    Returns columns ``layer, bits, numel, group, excess``; ``model`` is unchanged.
    """
    for b in options:
        check_bits(b)
    work = copy.deepcopy(model).eval()
    present = _present(data, len(group_names))
    base = _group_losses(work, data, len(group_names))
    rows = []
    for name, layer in quantized_layers(work):
        original = layer.weight.detach().clone()
        for b in options:
            layer.weight.copy_(quantize_symmetric(original, b, per_channel=per_channel))
            excess = _group_losses(work, data, len(group_names)) - base
            rows += [
                (name, int(b), original.numel(), group_names[a], excess[a].item()) for a in present
            ]
        layer.weight.copy_(original)
    return pd.DataFrame(rows, columns=["layer", "bits", "numel", "group", "excess"])


def measured_excess(
    model: nn.Module, data: Split, group_names: Sequence[str], precision: Precision
) -> pd.Series:
    """Measured ``G(a)`` of the whole model at ``precision`` (weights quantized by
    :func:`quantize_model`) on ``data``, by group name, for the groups with samples."""
    present = _present(data, len(group_names))
    base = _group_losses(model, data, len(group_names))
    quantized = _group_losses(quantize_model(model, precision), data, len(group_names))
    return pd.Series(
        [(quantized[a] - base[a]).item() for a in present],
        index=pd.Index([group_names[a] for a in present], name="group"),
        name="excess",
    )


def group_sensitivity(
    model: nn.Module,
    data: Split,
    group_names: Sequence[str],
    options: Sequence[int],
    *,
    sensitivity: SensitivitySource = "measured",
    per_channel: bool = False,
    block: int = 1,
) -> pd.DataFrame:
    """Per-layer, per-group excess loss ``G_{l,b}(a)`` on ``data`` (columns ``layer, bits,
    numel, group, excess``): ``"measured"`` quantizes one layer at a time and evaluates
    (:func:`measured_layer_excess`); ``"predicted"`` is the Taylor prediction
    ``g_a·δ + ½ δᵀH_aδ`` (:func:`taylor_excess`, Hessian-vector products). With all samples in
    one group it is the pooled, loss-only sensitivity of HAWQ and AIMET."""
    if sensitivity == "measured":
        return measured_layer_excess(model, data, group_names, options, per_channel=per_channel)
    if sensitivity == "predicted":
        op = GroupCurvature(model, data.x, data.y, data.g, len(group_names))
        table = taylor_excess(op, model, group_names, options, per_channel=per_channel, block=block)
        return table.rename(columns={"predicted": "excess"})
    raise ConfigError(f"sensitivity must be one of {SENSITIVITIES}; got {sensitivity!r}")
