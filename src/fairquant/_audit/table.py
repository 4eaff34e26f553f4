"""The audit's table (``results.csv``) from its :class:`~fairquant.metrics.frame.FairnessFrame`,
and the checks of what its numbers mean (group names, the chance level)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fairquant.errors import DataError
from fairquant.metrics.frame import AGREEMENT_METRICS, ALL, FairnessFrame
from fairquant.quant.precision import (
    Precision,
)
from fairquant.schema import COLUMNS


def _tidy(
    frame: FairnessFrame,
    order: list[Any],
    method: str,
    *,
    sizes: dict[str, int],
    intervals: bool,
) -> pd.DataFrame:
    """The frame's table with the method and bits of each precision and its packed size (an
    exact number: with intervals on, its interval is the value itself), in :data:`COLUMNS`."""
    by_name = {p.name: p for p in order}
    ci = (lambda b: float(b)) if intervals else (lambda b: float("nan"))
    size_rows = pd.DataFrame(
        [(name, ALL, "size_bytes", float(b), ci(b), ci(b)) for name, b in sizes.items()],
        columns=["model", "group", "metric", "value", "ci_low", "ci_high"],
    )
    table = frame.table[~frame.table.metric.isin(AGREEMENT_METRICS)]  # _deployed_rows's
    table = pd.concat([table, size_rows], ignore_index=True)
    table = table.rename(columns={"model": "precision"})
    table.insert(0, "method", [_method(by_name[n], method) for n in table.precision])
    table.insert(2, "bits", [by_name[n].bits for n in table.precision])
    return _ordered(table, order)


def _method(precision: Any, method: str) -> str:
    """results.csv's ``method``: ``none`` for fp32, the toolchain (``torch``, ``ort``,
    ``torchao``) for a deployed precision, else ``method`` (``ptq``, ``qat``)."""
    if not isinstance(precision, Precision):
        return precision.toolchain
    return "none" if precision.is_reference else method


def _ordered(table: pd.DataFrame, order: list[Any]) -> pd.DataFrame:
    order_index = {p.name: i for i, p in enumerate(order)}
    table = table.sort_values("precision", key=lambda c: c.map(order_index), kind="stable")
    return table.reset_index(drop=True)[COLUMNS]


def _merge(table: pd.DataFrame, extra: pd.DataFrame, order: list[Any]) -> pd.DataFrame:
    return _ordered(pd.concat([table, extra], ignore_index=True), order)


def _twins(order: list[Any]) -> dict[str, str]:
    """``{deployed precision: its simulated twin}`` for the twins the audit evaluates too."""
    names = {p.name for p in order}
    return {p.name: p.twin for p in order if p.deployed and p.twin in names}


def _deployed_rows(
    frame: FairnessFrame, order: list[Any], artifacts: dict[str, int], method: str, *, intervals
) -> pd.DataFrame:
    """For each deployed precision: the frame's agreement (%) of its predictions with fp32's
    (``agreement_fp32``) and with its simulated twin's (``agreement_twin``, when the twin is
    audited too), per group and overall, and its artifact's size on disk (an exact number: with
    intervals on, its interval is the value itself)."""
    rows = []
    agreement = frame.table[frame.table.metric.isin(AGREEMENT_METRICS)]
    for p in order:
        if p.name in artifacts:
            b = float(artifacts[p.name])
            ci = b if intervals else float("nan")
            rows.append((_method(p, method), p.name, p.bits, ALL, "artifact_bytes", b, ci, ci))
        if not p.deployed:
            continue
        mine = agreement[agreement.model == p.name]
        for metric, name in (("agreement", "agreement_fp32"), ("agreement_twin", "agreement_twin")):
            for r in mine[mine.metric == metric].itertuples():
                row = (r.group, name, r.value, r.ci_low, r.ci_high)
                rows.append((_method(p, method), p.name, p.bits, *row))
    return pd.DataFrame(rows, columns=COLUMNS)


def _group_names(
    given: Sequence[str] | None, declared: list[str] | None, g: np.ndarray, where: str
) -> list[str]:
    names = list(given) if given is not None else declared
    k = int(g.max()) + 1 if len(g) else 0
    if names is None:
        return [str(a) for a in range(k)]
    if k > len(names):
        raise DataError(
            f"{where} has group code {k - 1} but {len(names)} group names {list(names)}"
        )
    return [str(n) for n in names]


def _chance_level(y: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> str | None:
    """A warning when fp32 is no better than always answering the most frequent class: the
    model's outputs then likely do not mean what the data's codes mean."""
    counts = np.bincount(y, minlength=len(classes))
    if len(y) == 0 or np.count_nonzero(counts) < 2:
        return None
    accuracy, majority = float(np.mean(predicted == y)), counts.max() / len(y)
    if accuracy > majority:
        return None
    coding = ", ".join(f"{i}={name}" for i, name in enumerate(classes))
    return (
        f"WARNING: fp32 accuracy {100 * accuracy:.1f}% is at or below the majority-class rate "
        f"{100 * majority:.1f}% (always answering {classes[int(counts.argmax())]!r}): the model's "
        "outputs likely do not mean what the data's codes mean. Check the class order (the data "
        f"codes {coding}; state the model's with --classes / class_order) and the preprocessing "
        "(--mean/--std, image size, channels)"
    )
