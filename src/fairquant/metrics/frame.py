"""One result object for group fairness across models, in the spirit of Fairlearn's MetricFrame.

A :class:`FairnessFrame` holds, for several models evaluated on the same test set (e.g. one model
at several precisions), every group metric by group and overall, the comparisons between groups
(φ(D), accuracy gap, worst group, CEV/SDE, and for a binary or one-vs-rest target demographic
parity, equalized odds, predictive equality and equal opportunity), and group-stratified
bootstrap intervals for all of them. Each metric is computed here, once, from sums of per-sample
columns (the Fairlearn metrics are checked against Fairlearn in the tests); only the maths of
CEV/SDE lives apart, in :mod:`fairquant.metrics.fairness`. Replicates resample test samples
jointly for all models, so differences between models are paired (:meth:`FairnessFrame.compare`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from fairquant.errors import ConfigError
from fairquant.metrics.fairness import (
    UndefinedMetricWarning,
    cev_sde_from_counts,
    defined_classes,
    one_vs_rest_errors,
)
from fairquant.metrics.functional import per_sample_loss
from fairquant.metrics.policy import CONFIDENCE
from fairquant.metrics.uncertainty import (
    check_bootstrap,
    percentile_interval,
    stratified_bootstrap_sums,
)

__all__ = [
    "AGREEMENT_METRICS",
    "ALL",
    "EmptyGroupWarning",
    "FairnessFrame",
    "UndefinedMetricWarning",
]

#: The group label of numbers that describe the whole test set.
ALL = "all"

#: Metrics with a value per group and for ``all``, in table order.
GROUP_METRICS = ["n", "accuracy", "loss", "excess_loss", "accuracy_drop", "exemplars"]
#: Per-group agreement (%) of a model's predictions with the reference's and with its twin's.
AGREEMENT_METRICS = ["agreement", "agreement_twin"]
#: Per-group rates of a binary (or one-vs-rest) target.
RATE_METRICS = ["selection_rate", "true_positive_rate", "false_positive_rate"]
#: Comparisons between groups or against the reference, reported for ``all`` only.
BETWEEN_METRICS = [
    "phi",
    "accuracy_gap",
    "worst_group_accuracy",
    "cev",
    "sde",
    "cev_abs",
    "sde_abs",
]
#: CEV and SDE of Blakeney et al. (relative changes) and fairquant's absolute-change variant.
CEV_SDE = {"": True, "_abs": False}
BINARY_METRICS = [
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
    "predictive_equality_difference",
]


class EmptyGroupWarning(UserWarning):
    """A group has no test samples, so its metrics are undefined and it is left out of φ(D)."""


def _numpy(name: str, values, ndim: tuple[int, ...] = (1,)) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = (values.double() if values.is_floating_point() else values).numpy()
    out = np.asarray(values)
    if out.ndim not in ndim:
        raise ConfigError(
            f"{name} must have {' or '.join(map(str, ndim))} dimensions, got {out.shape}"
        )
    return out


def _group_codes(groups, group_names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Integer group codes and names, from codes + names or from labels (names sorted)."""
    g = _numpy("groups", groups)
    if np.issubdtype(g.dtype, np.integer) and group_names is not None:
        bad = (g < 0) | (g >= len(group_names))
        if bad.any():
            raise ConfigError(
                f"group code {int(g[bad][0])} is outside 0..{len(group_names) - 1} "
                f"(group_names has {len(group_names)} names)"
            )
        return g.astype(np.int64), [str(n) for n in group_names]
    labels = g.astype(str)
    names = (
        [str(n) for n in group_names]
        if group_names is not None
        else sorted({str(v) for v in labels})
    )
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(str(v) for v in set(labels) - set(index))
    if unknown:
        raise ConfigError(f"groups {unknown} are not in group_names {names}")
    return np.array([index[v] for v in labels], dtype=np.int64), names


def _infinite_effect(value: float) -> float:
    """The effect size of a difference that never varies: 0 if it is 0, else ±inf."""
    return 0.0 if value == 0 else float(np.sign(value) * np.inf)


def _spread(values: np.ndarray, defined: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(max, min, max - min) over the last axis where ``defined``; NaN where none is."""
    hi = np.where(defined, values, -np.inf).max(-1)
    lo = np.where(defined, values, np.inf).min(-1)
    some = defined.any(-1)
    hi, lo = np.where(some, hi, np.nan), np.where(some, lo, np.nan)
    return hi, lo, hi - lo


class FairnessFrame:
    """Group metrics of several models on one test set, with bootstrap intervals.

    Parameters (keyword-only)
    -------------------------
    y_true
        True class codes ``0..C-1``, shape (N,).
    groups
        Group codes with ``group_names``, or group labels (a Series of names works).
    predictions
        ``{model name: logits (N, C) or predicted codes (N,)}``, e.g. one entry per precision.
    losses
        ``{model name: per-sample loss (N,)}``; computed as cross-entropy when logits are given.
        Without losses, ``loss``, ``excess_loss`` and φ(D) are not reported.
    reference
        The model that excess loss, accuracy drop, exemplars and CEV/SDE are measured against
        (default: the first).
    class_names
        Names of the class codes, for the notes (default: the codes).
    pos_label
        The positive class for the binary-target metrics (demographic parity, equalized odds,
        predictive equality, equal opportunity); ``None`` means ``1`` for a 2-class target and no
        binary-target metrics otherwise. For a multiclass target a class code gives its
        one-vs-rest form.
    twins
        ``{model: its twin model}``: the model whose predictions it should match (a deployed
        precision and the simulated one it implements); gives ``agreement_twin``.
    n_bootstrap, confidence, random_state
        Group-stratified bootstrap replicates (0: no intervals), the interval's level, the seed.

    Metrics in :attr:`table` (accuracy-type numbers in %, rates as fractions):
    per group and for ``all``: ``n``, ``accuracy``, ``loss``, ``excess_loss`` (G(a)),
    ``accuracy_drop`` (reference accuracy minus this, points), ``exemplars`` (samples whose
    prediction differs from the reference's: the compression-identified exemplars of Hooker et
    al. 2019, "What Do Compressed Deep Neural Networks Forget?"), ``agreement`` (% of samples
    whose predicted class is the reference's) and, for the models in ``twins``,
    ``agreement_twin`` (% whose predicted class is the twin's): a prediction outside
    ``0..C-1`` (``-1``, a sample counted wrong without a class) agrees with nothing, not even
    another ``-1``; and for a binary target
    ``selection_rate``, ``true_positive_rate``, ``false_positive_rate``; for ``all`` only: ``phi``
    (φ(D) = max_{a,a'} |G(a) - G(a')| = max_a G(a) - min_a G(a) over groups with samples, Liu et
    al., ICML 2025), ``accuracy_gap`` (max - min group accuracy), ``worst_group_accuracy``,
    ``cev`` and ``sde`` (Combined Error Variance and Symmetric Distance Error of Blakeney et al.,
    from relative changes of one-vs-rest error rates against the reference, as published; in
    fractions, ``cev`` squared: ×10,000 and ×100 compare them with changes in percent),
    ``cev_abs`` and ``sde_abs`` (the same from absolute changes, fairquant's robust variant; see
    :mod:`fairquant.metrics.fairness`), and for a binary target the Fairlearn metrics named in
    :data:`BINARY_METRICS` (differences are max - min over groups, the ratio min / max).

    A group without samples gets only its ``n = 0`` row and an :class:`EmptyGroupWarning`; a
    metric undefined on the data (no positive prediction for a ratio, no positive sample in a
    group for a true-positive rate) is left out, or computed over the groups where it is
    defined, with an :class:`UndefinedMetricWarning` and a line in :attr:`notes`. No number in
    the table is NaN, except ``ci_low``/``ci_high`` when ``n_bootstrap=0``. ``cev`` and ``sde``
    leave out the classes whose reference false-positive or false-negative rate is 0 (the
    relative change is undefined there), with a note naming them; with no class left they are
    absent.

    Intervals are percentile intervals. For a max - min over groups (``phi``, ``accuracy_gap``,
    the parity differences) they are biased upward when groups are close: with equal groups
    resampling noise alone makes max - min positive, so the interval excludes the true 0. Use
    :meth:`compare` (or seeds) to ask whether a gap differs between models. A bootstrap replicate
    computes ``cev``/``sde`` by the same rule as the value: a class whose reference false
    positives (or false negatives) all fall out of that resample has a zero reference rate there
    and is left out of that replicate's mean, so the interval reflects the statistic as computed,
    exclusion included, and never holds inf or NaN (a class left out of the value is left out of
    every replicate: resampling cannot create an error the reference never made). A replicate
    with no class left is undefined and left out of the interval; the notes count such
    replicates. Where few classes have reference errors, replicates keep fewer classes (one
    class alone has CEV 0), so these intervals are wide: the instability of relative changes,
    which ``cev_abs``/``sde_abs`` avoid.

    >>> frame = FairnessFrame(
    ...     y_true=[0, 1, 0, 1], groups=["a", "a", "b", "b"],
    ...     predictions={"fp32": [0, 1, 0, 0], "int4": [0, 1, 1, 0]}, n_bootstrap=0)
    >>> frame.by_group("accuracy").to_dict("index")
    {'a': {'fp32': 100.0, 'int4': 100.0}, 'b': {'fp32': 50.0, 'int4': 0.0}}
    >>> frame.overall().loc["int4", ["accuracy_gap", "exemplars"]].tolist()
    [100.0, 1.0]
    """

    def __init__(
        self,
        *,
        y_true,
        groups,
        predictions: Mapping[str, object],
        losses: Mapping[str, object] | None = None,
        reference: str | None = None,
        group_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        pos_label: int | None = None,
        twins: Mapping[str, str] | None = None,
        n_bootstrap: int = 1000,
        confidence: float = CONFIDENCE,
        random_state: int = 0,
    ) -> None:
        check_bootstrap(n_bootstrap, confidence)
        y = _numpy("y_true", y_true).astype(np.int64)
        g, self.group_names = _group_codes(groups, group_names)
        if len(g) != len(y):
            raise ConfigError(f"groups has {len(g)} entries for {len(y)} labels")
        if len(y) == 0:
            raise ConfigError("the test split has no samples in any group")
        if not predictions:
            raise ConfigError("no predictions: pass {model name: logits or predicted labels}")
        self.models = list(predictions)
        self.reference = self.models[0] if reference is None else reference
        if self.reference not in predictions:
            raise ConfigError(f"reference {self.reference!r} is not one of {self.models}")
        self.twins = dict(twins or {})
        for model, twin in self.twins.items():
            for role, name in (("model", model), ("twin", twin)):
                if name not in predictions:
                    raise ConfigError(
                        f"twins: {role} {name!r} (of {model!r}: {twin!r}) is not one of "
                        f"{self.models}"
                    )
        preds, loss = self._predictions(predictions, losses or {}, y)
        c = int(max(y.max(), max(p.max() for p in preds))) + 1
        if num_classes is not None and c > num_classes:
            raise ConfigError(f"num_classes={num_classes}, but a label or prediction is {c - 1}")
        self.num_classes = c if num_classes is None else num_classes
        if class_names is not None and len(class_names) < self.num_classes:
            raise ConfigError(
                f"class_names has {len(class_names)} names for {self.num_classes} classes"
            )
        self.class_names = [str(n) for n in class_names] if class_names is not None else None
        if pos_label is None and self.num_classes == 2:
            pos_label = 1
        if pos_label is not None and not 0 <= pos_label < self.num_classes:
            raise ConfigError(
                f"pos_label {pos_label} is not a class code 0..{self.num_classes - 1}"
            )
        self.pos_label = pos_label
        self.n_bootstrap, self.confidence, self.random_state = n_bootstrap, confidence, random_state
        self.notes: list[str] = []
        k = len(self.group_names)
        self._counts = np.bincount(g, minlength=k).astype(np.float64)
        for a in np.flatnonzero(self._counts == 0):
            self._note(
                f"group {self.group_names[a]!r} has no test samples: its accuracy, loss and "
                "excess loss are undefined and it is left out of phi",
                EmptyGroupWarning,
                stacklevel=3,
            )

        x, x_total = self._features(y, preds, loss)
        point = np.zeros((k, x.shape[1]))
        np.add.at(point, g, x)
        self._values = self._evaluate(point, x_total.sum(0))
        self._explain_undefined()
        self._explain_cev_sde(x_total.sum(0))
        self._replicates: dict[str, np.ndarray] | None = None
        if n_bootstrap:
            sums, totals = stratified_bootstrap_sums(
                x, g, k, n_bootstrap=n_bootstrap, random_state=random_state, totals=x_total
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                self._replicates = self._evaluate(sums, totals)
            self._explain_undefined_replicates()
        self.table = self._table()

    # ---- construction ---------------------------------------------------------------------

    def _note(self, text: str, category: type[Warning], stacklevel: int = 4) -> None:
        """Record ``text`` in :attr:`notes` and warn the code that built the frame."""
        self.notes.append(text)
        warnings.warn(text, category, stacklevel=stacklevel)

    def _predictions(self, predictions, losses, y) -> tuple[list[np.ndarray], list | None]:
        preds, loss = [], []
        for name, value in predictions.items():
            tensor = torch.as_tensor(_numpy(f"predictions[{name!r}]", value, (1, 2)))
            if len(tensor) != len(y):
                raise ConfigError(
                    f"predictions[{name!r}] has {len(tensor)} rows for {len(y)} labels"
                )
            if tensor.ndim == 2:
                preds.append(tensor.argmax(1).numpy())
                if name not in losses:
                    losses = {**losses, name: per_sample_loss(tensor, torch.as_tensor(y))}
            else:
                preds.append(tensor.numpy().astype(np.int64))
            if name in losses:
                loss.append(_numpy(f"losses[{name!r}]", losses[name]).astype(np.float64))
        missing = [m for m in self.models if m not in losses]
        if losses and missing:
            raise ConfigError(f"losses are given for some models but not for {missing}")
        return preds, (loss if not missing else None)

    def _features(self, y, preds, loss) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample columns whose sums every metric is computed from: one matrix summed per
        group, one (one-vs-rest class counts for CEV/SDE) summed over the whole test set."""
        ref = self.models.index(self.reference)
        p = np.stack(preds)  # (M, N)
        class_fp, class_fn, class_pos = one_vs_rest_errors(y, p, self.num_classes)
        some_class = (p >= 0) & (p < self.num_classes)  # a sample without a class agrees with none
        per_group = {
            "correct": (p == y).T,
            "changed": (p != p[ref]).T,
            "agree": ((p == p[ref]) & some_class).T,
        }
        if self.twins:
            twin = [self.models.index(self.twins.get(m, m)) for m in self.models]
            per_group["agree_twin"] = ((p == p[twin]) & some_class).T
        if loss is not None:
            loss_arr = np.stack(loss)
            per_group["loss"] = loss_arr.T
            per_group["dloss"] = (loss_arr - loss_arr[ref]).T
        if self.pos_label is not None:
            sel, pos = p == self.pos_label, y == self.pos_label
            per_group |= {
                "sel": sel.T,
                "tp": (sel & pos).T,
                "fp": (sel & ~pos).T,
                "pos": pos[:, None],
            }
        total = {
            "class_fp": class_fp.transpose(1, 0, 2).reshape(len(y), -1),  # (N, M * C)
            "class_fn": class_fn.transpose(1, 0, 2).reshape(len(y), -1),
            "class_pos": class_pos,
        }
        self._columns: dict[str, slice] = {}
        for parts in (per_group, total):
            start = 0
            for name, part in parts.items():
                self._columns[name] = slice(start, start + part.shape[1])
                start += part.shape[1]
        return tuple(
            np.concatenate([v.astype(np.float64) for v in parts.values()], 1)
            for parts in (per_group, total)
        )

    def _evaluate(self, sums: np.ndarray, total: np.ndarray) -> dict[str, np.ndarray]:
        """All metrics from per-group sums ``(..., k, F)`` and whole-set sums ``(..., F2)``:
        arrays ``(..., M, k + 1)``, the last column for ``all``; NaN where a metric is undefined
        or not per group."""
        m = len(self.models)
        sums = np.concatenate([sums, sums.sum(-2, keepdims=True)], -2)  # append "all"
        n = np.append(self._counts, self._counts.sum())  # same in every replicate
        lead = sums.shape[:-2]

        def col(name: str) -> np.ndarray:  # (..., M, k + 1)
            return np.swapaxes(sums[..., self._columns[name]], -1, -2)

        present = np.append(self._counts > 0, False)  # groups compared; "all" is not one
        out: dict[str, np.ndarray] = {}
        with np.errstate(divide="ignore", invalid="ignore"):
            out["n"] = np.broadcast_to(n, (*lead, m, len(n))).astype(np.float64)
            out["accuracy"] = 100.0 * col("correct") / n
            if "loss" in self._columns:
                out["loss"] = col("loss") / n
                out["excess_loss"] = col("dloss") / n
            ref = self.models.index(self.reference)
            out["accuracy_drop"] = out["accuracy"][..., [ref], :] - out["accuracy"]
            out["exemplars"] = col("changed")
            out["agreement"] = 100.0 * col("agree") / n
            if self.twins:
                has_twin = np.array([[m in self.twins] for m in self.models])
                out["agreement_twin"] = np.where(has_twin, 100.0 * col("agree_twin") / n, np.nan)
            for name in [*GROUP_METRICS[1:], *AGREEMENT_METRICS]:
                if name in out:
                    out[name] = np.where(n > 0, out[name], np.nan)

            def overall(values: np.ndarray) -> np.ndarray:
                full = np.full((*values.shape, len(n)), np.nan)
                full[..., -1] = values
                return full

            if "excess_loss" in out:
                out["phi"] = overall(_spread(out["excess_loss"], present)[2])
            hi, lo, gap = _spread(out["accuracy"], present)
            out["accuracy_gap"], out["worst_group_accuracy"] = overall(gap), overall(lo)
            fp, fn, pos, neg = self._class_counts(total)
            for suffix, relative in CEV_SDE.items():
                cev, sde = cev_sde_from_counts(
                    fp, fn, fp[..., [ref], :], fn[..., [ref], :], pos, neg, relative=relative
                )
                out[f"cev{suffix}"], out[f"sde{suffix}"] = overall(cev), overall(sde)
            if self.pos_label is not None:
                positives = sums[..., None, :, self._columns["pos"]][..., 0]  # (..., 1, k + 1)
                negatives = n - positives
                out["selection_rate"] = np.where(n > 0, col("sel") / n, np.nan)
                out["true_positive_rate"] = np.where(positives > 0, col("tp") / positives, np.nan)
                out["false_positive_rate"] = np.where(negatives > 0, col("fp") / negatives, np.nan)
                sel = out["selection_rate"]
                hi, lo, dp = _spread(sel, present)
                out["demographic_parity_difference"] = overall(dp)
                out["demographic_parity_ratio"] = overall(np.where(hi > 0, lo / hi, np.nan))
                tpr, fpr = out["true_positive_rate"], out["false_positive_rate"]
                eop = _spread(tpr, present & (positives > 0))[2]
                pe = _spread(fpr, present & (negatives > 0))[2]
                out["equal_opportunity_difference"] = overall(eop)
                out["predictive_equality_difference"] = overall(pe)
                out["equalized_odds_difference"] = overall(np.fmax(eop, pe))
        return out

    def _class_counts(self, total: np.ndarray) -> tuple[np.ndarray, ...]:
        """One-vs-rest false positives and negatives ``(..., M, C)`` and positives and negatives
        ``(..., 1, C)`` per class, from whole-set sums ``(..., F2)``."""
        lead, shape = total.shape[:-1], (len(self.models), self.num_classes)
        fp = total[..., self._columns["class_fp"]].reshape(*lead, *shape)
        fn = total[..., self._columns["class_fn"]].reshape(*lead, *shape)
        pos = total[..., None, self._columns["class_pos"]]
        return fp, fn, pos, self._counts.sum() - pos

    def _explain_cev_sde(self, total: np.ndarray) -> None:
        """Notes on the classes that CEV/SDE leave out of their means (or that leave none)."""
        ref = self.models.index(self.reference)
        fp, fn, pos, neg = self._class_counts(total)
        fp, fn, pos, neg = fp[ref], fn[ref], pos[0], neg[0]
        if not defined_classes(fp, fn, pos, neg, relative=False).any():
            self._note(
                "cev, sde, cev_abs and sde_abs are undefined: no class has both positive and "
                "negative test samples",
                UndefinedMetricWarning,
            )
            return
        lacking = self._class_list(np.flatnonzero((pos == 0) | (neg == 0)))
        if lacking:
            self._note(
                f"cev, sde, cev_abs and sde_abs leave out classes {lacking}: they have no "
                "positive or negative test samples",
                UndefinedMetricWarning,
            )
        sampled = (pos > 0) & (neg > 0)
        zero_fpr = np.flatnonzero(sampled & (fp == 0))
        zero_fnr = np.flatnonzero(sampled & (fn == 0))
        if not len(zero_fpr) and not len(zero_fnr):
            return
        left = np.union1d(zero_fpr, zero_fnr)
        rates = [
            f"{kind} rate 0 for classes {self._class_list(classes)}"
            for kind, classes in (("false-positive", zero_fpr), ("false-negative", zero_fnr))
            if len(classes)
        ]
        why = f"{self.reference} has {' and '.join(rates)}, where a relative change is undefined"
        if len(left) == sampled.sum():
            text = f"cev and sde are undefined: {why} (cev_abs and sde_abs use absolute changes)"
        else:
            text = (
                f"cev and sde (relative changes, as published) leave out {len(left)} of "
                f"{int(sampled.sum())} classes: {why}"
            )
        self._note(text, UndefinedMetricWarning)

    def _class_list(self, codes: np.ndarray) -> list:
        """Class codes as the notes name them: by their names where the frame has them."""
        if self.class_names is None:
            return codes.tolist()
        return [self.class_names[int(c)] for c in codes]

    def _explain_undefined_replicates(self) -> None:
        """A note where CEV/SDE are defined but some bootstrap replicates leave no class."""
        for suffix in CEV_SDE:
            name = f"cev{suffix}"
            undefined = int(np.isnan(self._replicates[name][:, 0, -1]).sum())
            if undefined and not np.isnan(self._values[name][0, -1]):
                self._note(
                    f"{name} and sde{suffix}: in {undefined} of {self.n_bootstrap} bootstrap "
                    "replicates no class has a defined change; their intervals use the other "
                    f"{self.n_bootstrap - undefined}",
                    UndefinedMetricWarning,
                )

    def _explain_undefined(self) -> None:
        """A note for every binary-target number left out of the table that is not an empty
        group's."""
        v = self._values
        if self.pos_label is None:
            return
        for i, model in enumerate(self.models):
            if np.isnan(v["demographic_parity_ratio"][i, -1]):
                self._note(
                    f"{model}: demographic_parity_ratio (disparate impact) is undefined: no "
                    f"sample is predicted {self.pos_label}, so every selection rate is 0 (0/0)",
                    UndefinedMetricWarning,
                )
        for rate, kind in (("true_positive_rate", "positive"), ("false_positive_rate", "negative")):
            for a, name in enumerate(self.group_names):
                if self._counts[a] > 0 and np.isnan(v[rate][0, a]):
                    self._note(
                        f"group {name!r} has no {kind} samples (label "
                        f"{'' if kind == 'positive' else 'not '}{self.pos_label}): its "
                        f"{rate} is undefined and it is left out of the difference between groups",
                        UndefinedMetricWarning,
                    )

    # ---- results ----------------------------------------------------------------------------

    def _interval(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval per (model, group); NaN where there are no replicates. Replicates
        in which a metric is undefined (a resampled group without positives) are left out."""
        shape = self._values[name].shape
        if self._replicates is None:
            return np.full(shape, np.nan), np.full(shape, np.nan)
        reps = self._replicates[name]
        if not np.isnan(reps).any():
            return percentile_interval(reps, self.confidence)
        low, high = np.full(shape, np.nan), np.full(shape, np.nan)
        for idx in zip(*np.nonzero(~np.isnan(self._values[name])), strict=True):
            column = reps[(slice(None), *idx)]
            column = column[~np.isnan(column)]
            if len(column):
                low[idx], high[idx] = percentile_interval(column, self.confidence)
        return low, high

    def _metric_names(self) -> list[str]:
        names = [
            *GROUP_METRICS,
            *AGREEMENT_METRICS,
            *RATE_METRICS,
            *BETWEEN_METRICS,
            *BINARY_METRICS,
        ]
        return [name for name in names if name in self._values]

    def _table(self) -> pd.DataFrame:
        names = self._metric_names()
        cells = {name: (self._values[name], *self._interval(name)) for name in names}
        rows = []
        for i, model in enumerate(self.models):
            for a, group in enumerate([*self.group_names, ALL]):
                for name in names:
                    value, low, high = (float(arr[i, a]) for arr in cells[name])
                    if not np.isnan(value):
                        rows.append((model, group, name, value, low, high))
        return pd.DataFrame(
            rows, columns=["model", "group", "metric", "value", "ci_low", "ci_high"]
        )

    def by_group(self, metric: str = "accuracy", *, column: str = "value") -> pd.DataFrame:
        """Groups x models of one metric (``column``: ``value``, ``ci_low`` or ``ci_high``)."""
        rows = self.table[(self.table.metric == metric) & (self.table.group != ALL)]
        if rows.empty:
            raise ConfigError(f"no per-group metric {metric!r}; have {self._metric_names()}")
        wide = rows.pivot(index="group", columns="model", values=column)
        order = [g for g in self.group_names if g in wide.index]
        return wide.reindex(index=order, columns=self.models)

    def overall(self, *, column: str = "value") -> pd.DataFrame:
        """Models x metrics for the whole test set (group ``all``)."""
        rows = self.table[self.table.group == ALL]
        wide = rows.pivot(index="model", columns="metric", values=column)
        return wide.reindex(
            index=self.models, columns=[n for n in self._metric_names() if n in wide]
        )

    def _between(self, metric: str, reduce) -> pd.DataFrame:
        if metric not in self._values:
            raise ConfigError(f"unknown metric {metric!r}; have {self._metric_names()}")
        present = np.append(self._counts > 0, False)

        def apply(values):
            return reduce(*_spread(values, present & ~np.isnan(values)))

        value = apply(self._values[metric])
        if self._replicates is None:
            low = high = np.full(value.shape, np.nan)
        else:
            low, high = percentile_interval(apply(self._replicates[metric]), self.confidence)
        return pd.DataFrame(
            {"value": value, "ci_low": low, "ci_high": high},
            index=pd.Index(self.models, name="model"),
        )

    def difference(self, metric: str = "accuracy") -> pd.DataFrame:
        """Max - min of a per-group metric over groups, per model, with its interval."""
        return self._between(metric, lambda hi, lo, d: d)

    def ratio(self, metric: str = "accuracy") -> pd.DataFrame:
        """Min / max of a per-group metric over groups, per model, with its interval."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._between(metric, lambda hi, lo, d: np.where(hi > 0, lo / hi, np.nan))

    def worst_group(
        self, metric: str = "accuracy", *, higher_is_better: bool = True
    ) -> pd.DataFrame:
        """Per model, the group with the lowest (or highest) value of ``metric`` and the value."""
        wide = self.by_group(metric)
        pick = wide.idxmin() if higher_is_better else wide.idxmax()
        value = wide.min() if higher_is_better else wide.max()
        return pd.DataFrame({"group": pick, "value": value})

    def replicates(self, metric: str) -> np.ndarray:
        """The bootstrap replicates of ``metric``: ``(n_bootstrap, models, groups + 1)``, models
        in :attr:`models` order, groups in ``group_names`` order and ``all`` last; NaN where the
        metric is undefined (or, like ``phi``, given for ``all`` only). Every metric's replicate
        ``b`` is computed on the same resampled test samples, so any difference between models
        or metrics is paired. A read-only view."""
        if self._replicates is None:
            raise ConfigError("no bootstrap replicates: build the frame with n_bootstrap > 0")
        if metric not in self._values:
            raise ConfigError(f"unknown metric {metric!r}; have {self._metric_names()}")
        view = self._replicates[metric].view()
        view.flags.writeable = False
        return view

    def compare(self, metric: str, baseline: str, candidate: str, *, group: str = ALL) -> pd.Series:
        """Paired bootstrap over test samples: ``metric(candidate) - metric(baseline)``.

        Both models are evaluated on the same resampled test sets, so the interval reflects
        test-set noise in the difference only (not training noise: see
        :func:`fairquant.metrics.uncertainty.paired_seed_test`). ``p_value`` is two-sided, as
        the policy (:mod:`fairquant.metrics.policy`) says: twice the smaller bootstrap share of
        replicates with a difference ``<= 0`` or ``>= 0``, at most 1; ``effect_size`` is the
        difference over the replicates' standard deviation.
        """
        if self._replicates is None:
            raise ConfigError(
                "compare needs bootstrap replicates: build the frame with n_bootstrap > 0"
            )
        for name in (baseline, candidate):
            if name not in self.models:
                raise ConfigError(f"unknown model {name!r}; have {self.models}")
        if metric not in self._values:
            raise ConfigError(f"unknown metric {metric!r}; have {self._metric_names()}")
        groups = [*self.group_names, ALL]
        if group not in groups:
            raise ConfigError(f"unknown group {group!r}; have {groups}")
        a, i, j = groups.index(group), self.models.index(baseline), self.models.index(candidate)
        value = self._values[metric][j, a] - self._values[metric][i, a]
        if np.isnan(value):
            raise ConfigError(f"{metric!r} is undefined for group {group!r}; see notes")
        reps = self._replicates[metric][:, j, a] - self._replicates[metric][:, i, a]
        reps = reps[~np.isnan(reps)]
        low, high = percentile_interval(reps, self.confidence)
        sd = reps.std(ddof=1)
        return pd.Series(
            {
                "difference": float(value),
                "ci_low": float(low),
                "ci_high": float(high),
                "p_value": min(1.0, 2.0 * float(min(np.mean(reps <= 0), np.mean(reps >= 0)))),
                "effect_size": float(value / sd) if sd > 0 else _infinite_effect(value),
            },
            name=f"{metric}: {candidate} - {baseline} ({group})",
        )
