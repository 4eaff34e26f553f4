"""The results schema: the columns of ``results.csv`` and the cell label, defined once.

An audit writes one long table, one row per number (:data:`COLUMNS`; :data:`NUMBER_KEYS`
identify a number, :data:`VALUE_COLUMNS` hold it). A run directory (``fairquant run``,
``fairquant mitigate``) puts the cell keys :data:`CELL_KEYS` in front (:data:`RESULT_COLUMNS`),
and names each cell's files by its label, ``<dataset>__<model>__<mitigation>__seed<k>``
(:func:`cell_label`, read back by :func:`parse_cell_label`).

A leaf module: the audit (:mod:`fairquant._audit`), the statistics
(:mod:`fairquant.metrics.uncertainty`), the experiments and the report all import it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "AUDIT_JSON",
    "CELL_KEYS",
    "COLUMNS",
    "FIGURE",
    "NUMBER_KEYS",
    "RESULTS_CSV",
    "RESULT_COLUMNS",
    "SEPARATOR",
    "VALUE_COLUMNS",
    "CellKey",
    "cell_label",
    "label_problem",
    "parse_cell_label",
]

#: The columns that identify one number of an audit table.
NUMBER_KEYS = ["method", "precision", "bits", "group", "metric"]
#: The number and its interval (``ci_low``/``ci_high`` empty when the audit ran without bootstrap).
VALUE_COLUMNS = ["value", "ci_low", "ci_high"]
#: Every column of an audit's ``results.csv`` (and of ``AuditResult.table``), in order.
COLUMNS = [*NUMBER_KEYS, *VALUE_COLUMNS]
#: The key columns of a run directory's ``results.csv``, before the audit's columns.
CELL_KEYS = ["dataset", "model", "mitigation", "seed"]
#: Every column of a run directory's ``results.csv``, in order.
RESULT_COLUMNS = [*CELL_KEYS, *COLUMNS]

#: The files of an audit's folder: its table, its record and its figure of per-group accuracy.
RESULTS_CSV, AUDIT_JSON, FIGURE = "results.csv", "audit.json", "group_accuracy.png"

#: What joins the parts of a cell label.
SEPARATOR = "__"
_LABEL = re.compile(
    rf"^(?P<dataset>.+?){SEPARATOR}(?P<model>.+?){SEPARATOR}(?P<mitigation>.+?)"
    rf"{SEPARATOR}seed(?P<seed>-?\d+)$"
)


class CellKey(NamedTuple):
    """The values of :data:`CELL_KEYS` of one cell."""

    dataset: str
    model: str
    mitigation: str
    seed: int


def label_problem(part: str) -> str | None:
    """Why ``part`` (a dataset, model or mitigation key) cannot be a part of a cell label, or
    ``None`` when it can: it must be non-empty, must not contain :data:`SEPARATOR` and must not
    begin or end with ``_`` (the label would not read back unambiguously)."""
    if not part:
        return "is empty"
    if SEPARATOR in part or part.startswith("_") or part.endswith("_"):
        return (
            f"contains {SEPARATOR!r} or begins or ends with '_': cell file names join the "
            f"dataset, model and mitigation with {SEPARATOR!r}"
        )
    return None


def cell_label(dataset: str, model: str, mitigation: str, seed: int) -> str:
    """``<dataset>__<model>__<mitigation>__seed<k>``: a cell's name in file names.

    >>> cell_label("digits", "resnet18", "none", 0)
    'digits__resnet18__none__seed0'
    """
    for name, part in (("dataset", dataset), ("model", model), ("mitigation", mitigation)):
        problem = label_problem(part)
        if problem:
            raise ValueError(f"{name} key {part!r} {problem}")
    return SEPARATOR.join([dataset, model, mitigation, f"seed{int(seed)}"])


def parse_cell_label(label: str) -> CellKey | None:
    """The cell key :func:`cell_label` wrote into ``label``, or ``None`` when ``label`` is not a
    cell label (e.g. the stem of another table).

    >>> parse_cell_label("digits__resnet18__none__seed0")
    CellKey(dataset='digits', model='resnet18', mitigation='none', seed=0)
    >>> parse_cell_label("curvature") is None
    True
    """
    match = _LABEL.match(label)
    if match is None or any(SEPARATOR in p for p in match.group("dataset", "model", "mitigation")):
        return None
    return CellKey(match["dataset"], match["model"], match["mitigation"], int(match["seed"]))
