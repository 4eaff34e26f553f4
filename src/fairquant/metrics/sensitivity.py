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

That costs one Hessian-vector product per (layer, bits, group), more than measuring: on a
width-8 ResNet-18 (21 layers, bits 2, 3, 4, 8, 16, 5 groups of 128 images, one busy CPU thread)
297 s, against 134 s measuring on 2,000 images and 14 s for the diagonal below
(``bench/sensitivity_speed.py``). :func:`diagonal_excess` keeps only the diagonal ``D_a`` of
each group's generalized Gauss-Newton ``G_a`` (positive semi-definite; equal in trace to ``H_a``
for piecewise-linear networks):

    ``G_{l,b}(a) ≈ g_a · δ_{l,b} + ½ Σ_k D_{a,k} δ_{l,b,k}²``,

where ``g_a`` and ``D_a`` come exactly from one pass over the samples
(:func:`~fairquant.metrics.curvature.ggn_diagonal`), and every layer and bit width afterwards is a
dot product. The off-diagonal curvature within a layer is dropped, as in the diagonal-Hessian
saliencies of Optimal Brain Damage (LeCun et al., 1990). Pooled over all samples, the diagonal
summed over a layer's ``n_l`` weights gives HAWQ-V2's trace-weighted sensitivity
``Tr(H_l)/n_l · ||Q_b(w_l) - w_l||²`` (Dong et al., NeurIPS 2020): :func:`layer_trace_sensitivity`.

:func:`measured_layer_excess` gives the same table measured: quantize only layer ``l`` at ``b``
bits and evaluate each group's loss (and accuracy, the exhaustive search of AIMET).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import get_args

import pandas as pd
import torch
from torch import Tensor, nn

from fairquant.data.base import Split
from fairquant.errors import ConfigError, DataError
from fairquant.metrics.curvature import GroupCurvature, GroupDiagonal, ggn_diagonal
from fairquant.metrics.functional import group_counts, group_mean, per_sample_loss
from fairquant.models.predict import predict_logits
from fairquant.options import SensitivitySource as SensitivitySource
from fairquant.quant.build import quantize
from fairquant.quant.functional import check_bits, quantize_symmetric
from fairquant.quant.mixed import layer_deltas
from fairquant.quant.model import quantized_layers
from fairquant.quant.precision import Precision

#: How :func:`group_sensitivity` gets ``G_{l,b}(a)`` (``SensitivitySource``).
SENSITIVITIES: tuple[str, ...] = get_args(SensitivitySource)
#: Columns of :func:`taylor_excess` and :func:`diagonal_excess`.
TAYLOR_COLUMNS = ["layer", "bits", "numel", "group", "first", "second", "predicted"]
#: Columns of :func:`measured_layer_excess`.
MEASURED_COLUMNS = ["layer", "bits", "numel", "group", "excess", "drop"]
#: Columns of :func:`layer_trace_sensitivity`.
TRACE_COLUMNS = ["layer", "bits", "numel", "trace", "error", "score"]


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


def _diagonal_keys(curv: GroupDiagonal, model: nn.Module) -> dict[str, str]:
    """Each quantized layer's weight name in ``curv``."""
    keys = {name: f"{name}.weight" for name, _ in quantized_layers(model)}
    missing = [key for key in keys.values() if key not in curv.grads]
    if missing:
        raise ConfigError(
            f"the GroupDiagonal has no entries for the weights {missing}: build it on this model "
            "with parameters='quantized'"
        )
    return keys


def diagonal_excess(
    curv: GroupDiagonal,
    model: nn.Module,
    group_names: Sequence[str],
    options: Sequence[int],
    *,
    per_channel: bool = False,
) -> pd.DataFrame:
    """Predicted per-layer, per-group excess loss with the diagonal curvature (module doc):
    ``first = g_a · δ``, ``second = ½ Σ_k D_{a,k} δ_k²`` and ``predicted = first + second`` for
    every quantized layer, bit width and group with samples.

    ``curv`` holds every group's gradient and GGN diagonal
    (:func:`~fairquant.metrics.curvature.ggn_diagonal` of ``model``, ``parameters="quantized"``);
    nothing here differentiates. Returns the columns :data:`TAYLOR_COLUMNS`, one row per
    (layer, bits, group).
    """
    if len(group_names) != len(curv.counts):
        raise ConfigError(f"{len(group_names)} group names for {len(curv.counts)} groups")
    keys = _diagonal_keys(curv, model)
    groups = curv.present()
    rows = []
    for name, b, d in layer_deltas(model, options, per_channel=per_channel):
        d = d.double()
        first = (curv.grads[keys[name]] * d).flatten(1).sum(1)
        second = 0.5 * (curv.diag[keys[name]] * d**2).flatten(1).sum(1)
        rows += [
            (name, b, d.numel(), group_names[a], f, s, f + s)
            for a, f, s in zip(groups, first[groups].tolist(), second[groups].tolist(), strict=True)
        ]
    return pd.DataFrame(rows, columns=TAYLOR_COLUMNS)


def layer_trace_sensitivity(
    model: nn.Module,
    data: Split,
    options: Sequence[int],
    *,
    per_channel: bool = False,
    curvature: GroupDiagonal | None = None,
    weights: Tensor | None = None,
) -> pd.DataFrame:
    """HAWQ-V2's trace-weighted sensitivity of each quantized layer on all of ``data`` (groups
    pooled): ``trace = Tr(G_l)/n_l``, the layer's exact GGN trace per weight (the Hessian's for a
    piecewise-linear network), ``error = ||Q_b(w_l) - w_l||²`` and ``score = trace * error``.

    Dong et al. (NeurIPS 2020) quantize the layers with the smallest score hardest. ``curvature``:
    the per-group :func:`~fairquant.metrics.curvature.ggn_diagonal` of ``model`` already at hand
    (pooled instead of another pass over ``data``, with the groups weighted by ``weights``, e.g.
    their population shares, or by their counts by default). Returns the columns
    :data:`TRACE_COLUMNS`, one row per (layer, bits).
    """
    if curvature is None:
        if len(data) == 0:
            raise DataError("the data has no samples: a trace needs at least one")
        pooled = torch.zeros(len(data), dtype=torch.long)
        curv = ggn_diagonal(model, data.x, data.y, pooled, 1)
    else:
        curv = curvature.pooled(weights)
    keys = _diagonal_keys(curv, model)
    rows = []
    for name, b, d in layer_deltas(model, options, per_channel=per_channel):
        trace = curv.diag[keys[name]].sum().item() / d.numel()
        error = d.double().square().sum().item()
        rows.append((name, b, d.numel(), trace, error, trace * error))
    return pd.DataFrame(rows, columns=TRACE_COLUMNS)


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


def _group_stats(model: nn.Module, data: Split, num_groups: int) -> tuple[Tensor, Tensor]:
    """Each group's mean loss and accuracy in points (one forward pass)."""
    logits = predict_logits(model, data.x)
    losses = group_mean(per_sample_loss(logits, data.y), data.g, num_groups)
    correct = (logits.argmax(1) == data.y).double() * 100
    return losses, group_mean(correct, data.g, num_groups)


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
    bits) - L_a(θ)`` on ``data``, for every quantized layer, bit width and group with samples,
    and from the same forward passes the accuracy drop in points, ``drop = acc_a(θ) - acc_a(θ
    with only layer l at b bits)`` (positive: the group loses accuracy).

    Returns the columns :data:`MEASURED_COLUMNS`; ``model`` is unchanged.
    """
    for b in options:
        check_bits(b)
    work = copy.deepcopy(model).eval()
    present = _present(data, len(group_names))
    base_loss, base_acc = _group_stats(work, data, len(group_names))
    rows = []
    for name, layer in quantized_layers(work):
        original = layer.weight.detach().clone()
        for b in options:
            layer.weight.copy_(quantize_symmetric(original, b, per_channel=per_channel))
            loss, acc = _group_stats(work, data, len(group_names))
            excess, drop = loss - base_loss, base_acc - acc
            rows += [
                (name, int(b), original.numel(), group_names[a], excess[a].item(), drop[a].item())
                for a in present
            ]
        layer.weight.copy_(original)
    return pd.DataFrame(rows, columns=MEASURED_COLUMNS)


def measured_excess(
    model: nn.Module, data: Split, group_names: Sequence[str], precision: Precision
) -> pd.Series:
    """Measured ``G(a)`` of the whole model at ``precision`` (weights quantized by
    :func:`~fairquant.quant.build.quantize`) on ``data``, by group name, for the groups with
    samples."""
    present = _present(data, len(group_names))
    base = _group_stats(model, data, len(group_names))[0]
    quantized = _group_stats(quantize(model, precision).module, data, len(group_names))[0]
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
    curvature: GroupDiagonal | None = None,
) -> pd.DataFrame:
    """Per-layer, per-group excess loss ``G_{l,b}(a)`` on ``data`` (columns ``layer, bits,
    numel, group, excess``): ``"measured"`` quantizes one layer at a time and evaluates
    (:func:`measured_layer_excess`, with the accuracy drop ``drop`` too); ``"predicted"`` is the
    Taylor prediction ``g_a·δ + ½ δᵀH_aδ`` (:func:`taylor_excess`, one Hessian-vector product per
    layer, bit width and group); ``"diagonal"`` keeps the diagonal of each group's GGN
    (:func:`diagonal_excess`, one pass over ``data`` for all of them); the predictions keep their
    terms ``first`` and ``second``. With all samples in one group it is the pooled, loss-only
    sensitivity of HAWQ and AIMET. ``curvature``: for ``"diagonal"``, the per-group
    :func:`~fairquant.metrics.curvature.ggn_diagonal` of ``model`` on ``data`` already at hand
    (no other pass)."""
    if sensitivity == "measured":
        return measured_layer_excess(model, data, group_names, options, per_channel=per_channel)
    if sensitivity == "predicted":
        op = GroupCurvature(model, data.x, data.y, data.g, len(group_names))
        table = taylor_excess(op, model, group_names, options, per_channel=per_channel, block=block)
        return table.rename(columns={"predicted": "excess"})
    if sensitivity == "diagonal":
        curv = curvature or ggn_diagonal(model, data.x, data.y, data.g, len(group_names))
        table = diagonal_excess(curv, model, group_names, options, per_channel=per_channel)
        return table.rename(columns={"predicted": "excess"})
    raise ConfigError(f"sensitivity must be one of {SENSITIVITIES}; got {sensitivity!r}")
