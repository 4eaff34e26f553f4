"""Blakeney et al.'s error-change metrics CEV and SDE, from one-vs-rest counts per class.

Written here because Fairlearn lacks them. The group-fairness metrics Fairlearn has (demographic
parity, equalized odds, ...) are computed in one place, by
:class:`fairquant.metrics.frame.FairnessFrame`, from the sums its bootstrap reuses, and the tests
check them against Fairlearn.

For each class ``c`` one-vs-rest, with ``FPR_c = FP_c / neg_c`` and ``FNR_c = FN_c / pos_c`` of
the compressed model ``θ~`` and the reference ``θ`` on the same test set, a *change* per class is

- relative, as published (``relative=True``, the ``cev``/``sde`` of results.csv):
  ``ΔFPR_c = (FPR_c(θ~) - FPR_c(θ)) / FPR_c(θ) = (FP_c(θ~) - FP_c(θ)) / FP_c(θ)``, likewise FNR;
- absolute, fairquant's robust variant (``relative=False``, ``cev_abs``/``sde_abs``):
  ``ΔFPR_c = FPR_c(θ~) - FPR_c(θ)``, likewise FNR.

Over the C classes where the change is defined,

``CEV = 1/C Σ_c [(ΔFPR_c - mean_c ΔFPR)² + (ΔFNR_c - mean_c ΔFNR)²]``, the mean squared distance
of the points ``(ΔFPR_c, ΔFNR_c)`` from their centroid (how unevenly the change is spread over
classes), and ``SDE = 1/C Σ_c |ΔFNR_c - ΔFPR_c|`` (how far the classes move off the line
``ΔFPR = ΔFNR``, i.e. trade one kind of error for the other).

**Units.** Every change is a *fraction* (a relative change of 0.5 is +50 %; an absolute change of
0.01 is one point of rate), so ``sde`` is in fractions and ``cev`` in squared fractions, here and
in results.csv. Blakeney et al.'s code reports relative changes in *percent*: to compare with a
number computed that way, multiply ``sde`` by 100 and ``cev`` by 10,000 (``cev`` 0.5 here is
5,000 there). fairquant keeps fractions, as the formulas are written in the papers and as every
other rate in results.csv is stored, rather than rescale numbers already published in its runs.

References: C. Blakeney, N. Huish, Y. Yan, Z. Zong, "Simon Says: Evaluating and Mitigating Bias in
Pruned Neural Networks with Knowledge Distillation", arXiv:2106.07849 (2021); C. Blakeney,
G. Atkinson, N. Huish, Y. Yan, V. Metsis, Z. Zong, "Measuring Bias and Fairness in Multiclass
Classification", IEEE NAS 2022, doi:10.1109/NAS55553.2022.9925287 (arXiv:2110.04397).

The relative change is undefined for a class whose reference rate is 0 (the reference never
predicts ``c`` for another class, or never misses ``c``), which small test sets make common;
such classes are left out of the mean, and where none is left the metric is undefined (NaN here;
the frame leaves it out of its table with a note). The absolute variant needs only positives and
negatives of the class, is bounded (changes lie in [-1, 1]) and does not blow up when a reference
rate is tiny (one reference false positive turning into three is a relative change of 2,
whatever the class size), which is why fairquant reports it beside the published one.

Counts may carry any leading batch dimensions (the bootstrap replicates of the frame); classes
are on the last axis.
"""

from __future__ import annotations

import warnings

import numpy as np

from fairquant.errors import ConfigError

__all__ = [
    "UndefinedMetricWarning",
    "cev_sde_from_counts",
    "combined_error_variance",
    "defined_classes",
    "error_rate_changes",
    "one_vs_rest_errors",
    "symmetric_distance_error",
]


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined on these predictions (e.g. disparate impact with no positive
    prediction), or only on some classes or groups, which are left out; the frame's ``notes``
    say why."""


def one_vs_rest_errors(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample one-vs-rest indicators, classes on the last axis: false positive of ``c``
    (predicted ``c``, label not ``c``) and false negative (label ``c``, predicted otherwise),
    shaped like ``y_pred`` plus a class axis, and positive (label ``c``), ``(N, C)``. A
    prediction outside ``0..C-1`` (``-1``: a sample counted wrong without a class) is no class's
    positive.

    >>> fp, fn, pos = one_vs_rest_errors(np.array([0, 1]), np.array([1, 1]), 2)
    >>> fp.astype(int).tolist(), fn.astype(int).tolist(), pos.astype(int).tolist()
    ([[0, 1], [0, 0]], [[1, 0], [0, 0]], [[1, 0], [0, 1]])
    """
    t = np.eye(num_classes, dtype=bool)[y_true]
    p = np.asarray(y_pred)[..., None] == np.arange(num_classes)
    return p & ~t, ~p & t, t


def defined_classes(
    fp_ref: np.ndarray, fn_ref: np.ndarray, pos: np.ndarray, neg: np.ndarray, *, relative: bool
) -> np.ndarray:
    """Where the change of class ``c`` is defined: the class has positives and negatives, and for
    the relative change the reference has false positives and false negatives (rates > 0)."""
    defined = (np.asarray(pos) > 0) & (np.asarray(neg) > 0)
    if relative:
        defined = defined & (np.asarray(fp_ref) > 0) & (np.asarray(fn_ref) > 0)
    return defined


def error_rate_changes(
    fp: np.ndarray,
    fn: np.ndarray,
    fp_ref: np.ndarray,
    fn_ref: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    *,
    relative: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ΔFPR, ΔFNR, defined)`` per class (see the module docstring), broadcast over the inputs;
    the changes are 0 where ``defined`` is False, never inf or NaN.

    >>> d_fpr, d_fnr, ok = error_rate_changes([3, 0], [1, 2], [1, 0], [2, 2], [4, 4], [6, 6])
    >>> d_fpr.tolist(), d_fnr.tolist(), ok.tolist()
    ([2.0, 0.0], [-0.5, 0.0], [True, False])
    """
    fp, fn, fp_ref, fn_ref, pos, neg = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (fp, fn, fp_ref, fn_ref, pos, neg))
    )
    defined = defined_classes(fp_ref, fn_ref, pos, neg, relative=relative)
    # the test set is shared, so FPR(θ~) / FPR(θ) - 1 = FP(θ~) / FP(θ) - 1: the counts suffice
    fpr_base, fnr_base = (fp_ref, fn_ref) if relative else (neg, pos)
    zeros = np.zeros(defined.shape)
    d_fpr = np.divide(fp - fp_ref, fpr_base, out=zeros.copy(), where=defined)
    d_fnr = np.divide(fn - fn_ref, fnr_base, out=zeros, where=defined)
    return d_fpr, d_fnr, defined


def cev_sde_from_counts(
    fp: np.ndarray,
    fn: np.ndarray,
    fp_ref: np.ndarray,
    fn_ref: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    *,
    relative: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """CEV and SDE (module docstring) from one-vs-rest counts per class on the last axis:
    false positives and negatives of the compressed model and of the reference, positives and
    negatives of each class. Classes whose change is undefined (:func:`defined_classes`) are left
    out of the means; NaN where no class is left.

    >>> cev_sde_from_counts([2, 1], [1, 2], [1, 1], [1, 1], [2, 2], [2, 2])
    (array(0.5), array(1.))
    >>> cev_sde_from_counts([2, 1], [1, 2], [1, 1], [1, 1], [2, 2], [2, 2], relative=False)
    (array(0.125), array(0.5))
    """
    d_fpr, d_fnr, defined = error_rate_changes(fp, fn, fp_ref, fn_ref, pos, neg, relative=relative)
    c = defined.sum(-1)
    per_class = np.maximum(c, 1)[..., None]  # where c = 0 every term is 0; NaN is set below
    mean_fpr = d_fpr.sum(-1, keepdims=True) / per_class
    mean_fnr = d_fnr.sum(-1, keepdims=True) / per_class
    spread = np.where(defined, (d_fpr - mean_fpr) ** 2 + (d_fnr - mean_fnr) ** 2, 0.0)
    distance = np.where(defined, np.abs(d_fnr - d_fpr), 0.0)
    cev = np.where(c > 0, spread.sum(-1) / per_class[..., 0], np.nan)
    sde = np.where(c > 0, distance.sum(-1) / per_class[..., 0], np.nan)
    return cev, sde


def _vector(name: str, values) -> np.ndarray:
    """A 1-D integer numpy array from a tensor, array, list or Series."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    out = np.asarray(values)
    if out.ndim != 1:
        raise ConfigError(f"{name} must be one-dimensional, got shape {out.shape}")
    if len(out) and not np.issubdtype(out.dtype, np.integer):
        raise ConfigError(f"{name} must hold integer class codes, got dtype {out.dtype}")
    if len(out) and out.min() < 0:
        raise ConfigError(f"{name} holds a negative class code {int(out.min())}")
    return out.astype(np.int64)


def _cev_sde(y_true, y_pred_ref, y_pred, num_classes: int | None, relative: bool):
    y_true, y_pred_ref, y_pred = (
        _vector("y_true", y_true),
        _vector("y_pred_ref", y_pred_ref),
        _vector("y_pred", y_pred),
    )
    if not len(y_true) == len(y_pred_ref) == len(y_pred):
        raise ConfigError(
            f"y_true, y_pred_ref and y_pred must have the same length, got {len(y_true)}, "
            f"{len(y_pred_ref)} and {len(y_pred)}"
        )
    if len(y_true) == 0:
        raise ConfigError("no samples: y_true, y_pred_ref and y_pred are empty")
    largest = int(max(y_true.max(), y_pred.max(), y_pred_ref.max()))
    if num_classes is not None and largest >= num_classes:
        raise ConfigError(f"num_classes={num_classes}, but a label or prediction is {largest}")
    k = largest + 1 if num_classes is None else num_classes
    preds = np.stack([y_pred_ref, y_pred])
    fp, fn, pos = (a.sum(-2) for a in one_vs_rest_errors(y_true, preds, k))
    fp_ref, fn_ref, neg = fp[0], fn[0], len(y_true) - pos
    defined = defined_classes(fp_ref, fn_ref, pos, neg, relative=relative)
    if not defined.any():
        raise ConfigError(
            "CEV and SDE are undefined: no class has positive and negative samples"
            + (" and a reference with false positives and false negatives" if relative else "")
        )
    if not defined.all():
        warnings.warn(
            f"CEV and SDE leave out classes {np.flatnonzero(~defined).tolist()}: they have no "
            "positive or negative samples"
            + (", or the reference no false positives or false negatives" if relative else ""),
            UndefinedMetricWarning,
            stacklevel=3,
        )
    cev, sde = cev_sde_from_counts(fp[1], fn[1], fp_ref, fn_ref, pos, neg, relative=relative)
    return float(cev), float(sde)


def combined_error_variance(
    y_true, y_pred_ref, y_pred, *, num_classes: int | None = None, relative: bool = True
) -> float:
    """Combined Error Variance of ``y_pred`` (compressed) against ``y_pred_ref`` (reference),
    one-vs-rest over class codes ``0..num_classes-1`` (default: up to the largest code given).

    ``relative=True`` is Blakeney et al.'s definition, ``False`` fairquant's absolute variant (see
    the module docstring). A squared fraction: 10,000 times it is the CEV of changes in percent,
    as the authors' code reports it. Classes where the change is undefined are left out with an
    :class:`UndefinedMetricWarning`; no class left is a :class:`~fairquant.errors.ConfigError`.

    >>> combined_error_variance([0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 0, 0])
    0.5
    >>> combined_error_variance([0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 0, 0], relative=False)
    0.125
    """
    return _cev_sde(y_true, y_pred_ref, y_pred, num_classes, relative)[0]


def symmetric_distance_error(
    y_true, y_pred_ref, y_pred, *, num_classes: int | None = None, relative: bool = True
) -> float:
    """Symmetric Distance Error of ``y_pred`` against ``y_pred_ref``; arguments as in
    :func:`combined_error_variance`. A fraction: 100 times it is the SDE of changes in percent,
    as the authors' code reports it.

    >>> symmetric_distance_error([0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 0, 0])
    1.0
    >>> symmetric_distance_error([0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 0, 0], relative=False)
    0.5
    """
    return _cev_sde(y_true, y_pred_ref, y_pred, num_classes, relative)[1]
