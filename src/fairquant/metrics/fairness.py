"""Group-fairness metrics on predictions, labels and groups: array-likes in, floats out.

Where Fairlearn has a metric (demographic parity, equalized odds, equal opportunity, the
false-positive rate, accuracy by group) it computes it here; fairquant adds the checks that turn
Fairlearn's silent NaNs and zero rates for undefined quantities into clear errors. Written by hand
is only what Fairlearn lacks: one-vs-rest for multiclass targets, the error-change metrics of
Blakeney et al. (CEV and SDE) and the compression-identified exemplars of Hooker et al. Rates are
fractions in [0, 1], as in Fairlearn and scikit-learn.

The count-based helpers (``*_from_counts``) accept any leading batch dimensions, so the bootstrap
in :mod:`fairquant.metrics.frame` evaluates them on all replicates at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from fairlearn import metrics as flm
from sklearn.metrics import accuracy_score

from fairquant.errors import ConfigError

__all__ = [
    "accuracy_gap",
    "cev_sde_from_counts",
    "combined_error_variance",
    "compression_exemplars",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equal_opportunity_difference",
    "equalized_odds_difference",
    "exemplars_by_group",
    "one_vs_rest",
    "predictive_equality_difference",
    "symmetric_distance_error",
    "worst_group_accuracy",
]


def _array(name: str, values) -> np.ndarray:
    """A 1-D numpy array from a tensor, array, list or Series."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    out = np.asarray(values)
    if out.ndim != 1:
        raise ConfigError(f"{name} must be one-dimensional, got shape {out.shape}")
    return out


def _inputs(y_true, y_pred, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_true, y_pred, groups = (
        _array("y_true", y_true),
        _array("y_pred", y_pred),
        _array("groups", groups),
    )
    if not len(y_true) == len(y_pred) == len(groups):
        raise ConfigError(
            f"y_true, y_pred and groups must have the same length, got {len(y_true)}, "
            f"{len(y_pred)} and {len(groups)}"
        )
    if len(y_true) == 0:
        raise ConfigError("no samples: y_true, y_pred and groups are empty")
    return y_true, y_pred, groups


def _binarize(y_true, y_pred, groups, pos_label) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-vs-rest: 1 where a label equals ``pos_label``, else 0 (the identity for 0/1 labels)."""
    y_true, y_pred, groups = _inputs(y_true, y_pred, groups)
    return (y_true == pos_label).astype(int), (y_pred == pos_label).astype(int), groups


def _require_each_group(y_true: np.ndarray, groups: np.ndarray, value: int, rate: str) -> None:
    """Rates conditioned on the true label need samples with that label in every group."""
    missing = [g for g in pd.unique(groups).tolist() if not (y_true[groups == g] == value).any()]
    if missing:
        kind = "positive" if value == 1 else "negative"
        raise ConfigError(
            f"the {rate} is undefined for group(s) {missing}: they have no {kind} samples"
        )


def demographic_parity_difference(y_true, y_pred, groups, *, pos_label=1) -> float:
    """``max_a P(ŷ = pos | A = a) - min_a P(ŷ = pos | A = a)`` (Fairlearn).

    >>> demographic_parity_difference([0, 0, 0, 0], [1, 1, 1, 0], ["a", "a", "b", "b"])
    0.5
    """
    y_true, y_pred, groups = _binarize(y_true, y_pred, groups, pos_label)
    return float(flm.demographic_parity_difference(y_true, y_pred, sensitive_features=groups))


def demographic_parity_ratio(y_true, y_pred, groups, *, pos_label=1) -> float:
    """Disparate impact ``min_a P(ŷ = pos | A = a) / max_a P(ŷ = pos | A = a)`` (Fairlearn).

    Undefined (a :class:`ConfigError`) when no sample is predicted ``pos_label``.

    >>> demographic_parity_ratio([0, 0, 0, 0], [1, 1, 1, 0], ["a", "a", "b", "b"])
    0.5
    """
    y_true, y_pred, groups = _binarize(y_true, y_pred, groups, pos_label)
    if not y_pred.any():
        raise ConfigError(
            f"disparate impact is undefined: no sample is predicted {pos_label!r}, so every "
            "group's selection rate is 0 (0/0)"
        )
    return float(flm.demographic_parity_ratio(y_true, y_pred, sensitive_features=groups))


def equal_opportunity_difference(y_true, y_pred, groups, *, pos_label=1) -> float:
    """``max_a TPR_a - min_a TPR_a`` (Fairlearn); every group needs a positive sample."""
    y_true, y_pred, groups = _binarize(y_true, y_pred, groups, pos_label)
    _require_each_group(y_true, groups, 1, "true-positive rate")
    return float(flm.equal_opportunity_difference(y_true, y_pred, sensitive_features=groups))


def predictive_equality_difference(y_true, y_pred, groups, *, pos_label=1) -> float:
    """``max_a FPR_a - min_a FPR_a`` (via Fairlearn's MetricFrame); groups need a negative."""
    y_true, y_pred, groups = _binarize(y_true, y_pred, groups, pos_label)
    _require_each_group(y_true, groups, 0, "false-positive rate")
    frame = flm.MetricFrame(
        metrics=lambda t, p: flm.false_positive_rate(t, p, pos_label=1),
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=groups,
    )
    return float(frame.difference())


def equalized_odds_difference(y_true, y_pred, groups, *, pos_label=1) -> float:
    """``max(TPR difference, FPR difference)`` between groups (Fairlearn, ``agg="worst_case"``)."""
    y_true, y_pred, groups = _binarize(y_true, y_pred, groups, pos_label)
    _require_each_group(y_true, groups, 1, "true-positive rate")
    _require_each_group(y_true, groups, 0, "false-positive rate")
    return float(flm.equalized_odds_difference(y_true, y_pred, sensitive_features=groups))


def _accuracy_frame(y_true, y_pred, groups) -> flm.MetricFrame:
    y_true, y_pred, groups = _inputs(y_true, y_pred, groups)
    return flm.MetricFrame(
        metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=groups
    )


def accuracy_gap(y_true, y_pred, groups) -> float:
    """``max_a acc_a - min_a acc_a`` (Fairlearn's ``MetricFrame.difference``), a fraction.

    >>> accuracy_gap([0, 1, 0, 1], [0, 1, 1, 1], ["a", "a", "b", "b"])
    0.5
    """
    return float(_accuracy_frame(y_true, y_pred, groups).difference())


def worst_group_accuracy(y_true, y_pred, groups) -> float:
    """``min_a acc_a`` (Fairlearn's ``MetricFrame.group_min``), a fraction."""
    return float(_accuracy_frame(y_true, y_pred, groups).group_min())


def one_vs_rest(metric: Callable[..., float], y_true, y_pred, groups, *, classes=None) -> pd.Series:
    """A binary ``metric`` for each class against the rest (written here: Fairlearn's binary
    metrics have no multiclass form). Classes default to those in ``y_true``.

    >>> one_vs_rest(demographic_parity_difference, [0, 1, 2, 2], [0, 1, 2, 1], [0, 0, 1, 1])
    class
    0    0.5
    1    0.0
    2    0.5
    dtype: float64
    """
    y_true, y_pred, groups = _inputs(y_true, y_pred, groups)
    classes = np.unique(y_true) if classes is None else classes
    values = {c: metric(y_true, y_pred, groups, pos_label=c) for c in classes}
    return pd.Series(values, dtype=float).rename_axis("class")


def cev_sde_from_counts(
    fp: np.ndarray,
    fn: np.ndarray,
    fp_ref: np.ndarray,
    fn_ref: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """CEV and SDE from one-vs-rest counts per class on the last axis (written here: Fairlearn
    lacks them). Blakeney et al. 2021, "Simon Says: Evaluating and Mitigating Bias in Pruned
    Neural Networks with Knowledge Distillation".

    For each class ``c`` with positives and negatives, ``ΔFPR_c = FPR_c(θ~) - FPR_c(θ)`` and
    ``ΔFNR_c = FNR_c(θ~) - FNR_c(θ)``, with ``FPR_c = FP_c / neg_c``, ``FNR_c = FN_c / pos_c``;
    then over the C such classes (NaN where there is none)

    ``CEV = 1/C Σ_c [(ΔFPR_c - mean ΔFPR)² + (ΔFNR_c - mean ΔFNR)²]`` (how unevenly the error
    changes are spread over classes) and ``SDE = 1/C Σ_c |ΔFPR_c - ΔFNR_c|`` (how far each class
    moves off the line ΔFPR = ΔFNR). Changes are absolute (rate units), not relative: a relative
    change is undefined wherever the fp32 rate is 0, which small test sets make common.
    """
    valid = (pos > 0) & (neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_fpr = np.where(valid, (fp - fp_ref) / neg, 0.0)
        d_fnr = np.where(valid, (fn - fn_ref) / pos, 0.0)
    c = valid.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_fpr = d_fpr.sum(-1, keepdims=True) / c[..., None]
        mean_fnr = d_fnr.sum(-1, keepdims=True) / c[..., None]
        spread = np.where(valid, (d_fpr - mean_fpr) ** 2 + (d_fnr - mean_fnr) ** 2, 0.0)
        cev = np.where(c > 0, spread.sum(-1) / c, np.nan)
        sde = np.where(c > 0, np.where(valid, np.abs(d_fpr - d_fnr), 0.0).sum(-1) / c, np.nan)
    return cev, sde


def _one_vs_rest_counts(y_true, y_pred, num_classes: int) -> tuple[np.ndarray, ...]:
    t = np.eye(num_classes, dtype=bool)[y_true]
    p = np.eye(num_classes, dtype=bool)[y_pred]
    return (p & ~t).sum(0), (~p & t).sum(0), t.sum(0), (~t).sum(0)


def _cev_sde(y_true, y_pred_ref, y_pred, num_classes) -> tuple[float, float]:
    y_true, y_pred, y_pred_ref = _inputs(y_true, y_pred, y_pred_ref)
    k = (
        int(max(y_true.max(), y_pred.max(), y_pred_ref.max()) + 1)
        if num_classes is None
        else num_classes
    )
    fp, fn, pos, neg = _one_vs_rest_counts(y_true, y_pred, k)
    fp_ref, fn_ref, _, _ = _one_vs_rest_counts(y_true, y_pred_ref, k)
    cev, sde = cev_sde_from_counts(fp, fn, fp_ref, fn_ref, pos, neg)
    if np.isnan(cev):
        raise ConfigError("CEV and SDE need a class with both positive and negative samples")
    return float(cev), float(sde)


def combined_error_variance(y_true, y_pred_ref, y_pred, *, num_classes: int | None = None) -> float:
    """Combined Error Variance of ``y_pred`` (compressed) against ``y_pred_ref`` (fp32); see
    :func:`cev_sde_from_counts`.

    >>> combined_error_variance([0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1])
    0.125
    """
    return _cev_sde(y_true, y_pred_ref, y_pred, num_classes)[0]


def symmetric_distance_error(
    y_true, y_pred_ref, y_pred, *, num_classes: int | None = None
) -> float:
    """Symmetric Distance Error of ``y_pred`` against ``y_pred_ref``; see
    :func:`cev_sde_from_counts`.

    >>> symmetric_distance_error([0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1])
    0.5
    """
    return _cev_sde(y_true, y_pred_ref, y_pred, num_classes)[1]


def compression_exemplars(y_pred_ref, y_pred) -> np.ndarray:
    """Which samples change prediction between fp32 and the compressed model (boolean mask).

    Hooker et al. 2019, "What Do Compressed Deep Neural Networks Forget?": the
    compression-identified exemplars are the samples on which compressed and uncompressed models
    disagree (there, over populations of models by modal label; here, with one model each).

    >>> compression_exemplars([0, 1, 2], [0, 2, 2]).tolist()
    [False, True, False]
    """
    ref, pred = _array("y_pred_ref", y_pred_ref), _array("y_pred", y_pred)
    if len(ref) != len(pred):
        raise ConfigError(f"y_pred_ref and y_pred differ in length: {len(ref)} vs {len(pred)}")
    return ref != pred


def exemplars_by_group(y_pred_ref, y_pred, groups) -> pd.Series:
    """Compression-identified exemplars counted per group.

    >>> exemplars_by_group([0, 1, 2], [0, 2, 2], ["a", "b", "b"]).to_dict()
    {'a': 0, 'b': 1}
    """
    changed = compression_exemplars(y_pred_ref, y_pred)
    groups = _array("groups", groups)
    if len(groups) != len(changed):
        raise ConfigError(f"groups has {len(groups)} entries for {len(changed)} predictions")
    return pd.Series(changed).groupby(groups).sum().rename_axis("group")
