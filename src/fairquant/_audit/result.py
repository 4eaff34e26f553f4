"""What an audit returns (:class:`AuditResult`) and what it records (``audit.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fairquant._io import atomic_write
from fairquant.errors import DataError
from fairquant.metrics.frame import ALL, FairnessFrame
from fairquant.metrics.samples import PerSample
from fairquant.schema import AUDIT_JSON, RESULTS_CSV

#: The record of what was audited, beside ``results.csv``, and its schema id.
AUDIT_SCHEMA = "fairquant.audit/1"
#: Metrics only a deployed precision has: agreement of its predictions (%) with fp32's and with
#: its simulated twin's (when the twin is audited too), and the artifact's size on disk.
DEPLOYED_METRICS = ("agreement_fp32", "agreement_twin", "artifact_bytes")


@dataclass
class AuditResult:
    """Per-group and overall metrics of a model at several precisions.

    ``table`` is long and tidy, one row per (method, precision, group, metric): metrics ``n``,
    ``accuracy``, ``loss``, ``excess_loss`` (G(a)), ``accuracy_drop`` (fp32 accuracy minus this
    precision's, in points) per group and for ``all``, and ``phi`` and ``size_bytes`` (packed
    model size) for ``all``; then the further metrics of
    :class:`~fairquant.metrics.frame.FairnessFrame` (exemplars, accuracy gap, worst group, CEV,
    SDE, binary-target fairness), each with its bootstrap interval. A deployed precision
    (``torch:int8``, ``ort:*``, ``torchao:*``) has no ``size_bytes`` but the metrics of
    :data:`DEPLOYED_METRICS`. ``precisions`` holds :class:`Precision` and deployed precisions
    (both have ``name`` and ``bits``); ``record`` is what ``audit.json`` holds.
    """

    table: pd.DataFrame
    group_names: list[str]
    precisions: list[Any]
    notes: list[str] = field(default_factory=list)
    #: All metrics with their bootstrap replicates: differences, ratios, paired comparisons.
    frame: FairnessFrame | None = None
    #: Per-sample predictions and losses of every precision (paired tests, verdicts).
    samples: PerSample | None = None
    #: What was audited (model source, data, preprocessing, precisions, seeds): ``audit.json``.
    record: dict[str, Any] = field(default_factory=dict)

    def by_group(self, metric: str = "accuracy") -> pd.DataFrame:
        """A groups x precisions table of one metric (the papers' Table 1 layout)."""
        rows = self.table[(self.table.metric == metric) & (self.table.group != ALL)]
        wide = rows.pivot_table(index="group", columns="precision", values="value", sort=False)
        names = [p.name for p in self.precisions]
        return wide.reindex(index=[g for g in self.group_names if g in wide.index], columns=names)

    def overall(self) -> pd.DataFrame:
        """Precisions x overall metrics (n, accuracy, loss, excess_loss, accuracy_drop, phi,
        size_bytes)."""
        rows = self.table[self.table.group == ALL]
        wide = rows.pivot_table(index="precision", columns="metric", values="value", sort=False)
        return wide.reindex([p.name for p in self.precisions])

    def phi(self) -> pd.Series:
        """φ(D) per precision."""
        return self.overall()["phi"]

    def to_csv(self, path: str | Path) -> Path:
        """Write :attr:`table` atomically as CSV (the ``results.csv`` schema)."""
        return atomic_write(path, lambda tmp: self.table.to_csv(tmp, index=False))

    def write_record(self, path: str | Path, *, run: dict[str, Any] | None = None) -> Path:
        """Write :attr:`record` atomically as JSON (``audit.json``), with the ``run`` (its id and
        command line, :class:`fairquant._io.RunFolder`) that wrote it when given."""
        record = self.record if run is None else {**self.record, "run": run}
        text = json.dumps(record, indent=2, allow_nan=False) + "\n"
        return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def write(self, folder: str | Path, *, run: dict[str, Any] | None = None) -> list[Path]:
        """Write ``results.csv`` and ``audit.json`` (with ``run``) into ``folder``."""
        folder = Path(folder)
        return [self.to_csv(folder / RESULTS_CSV), self.write_record(folder / AUDIT_JSON, run=run)]


def read_audit_json(path: str | Path) -> dict[str, Any]:
    """The record an audit wrote (``audit.json``, or the folder holding it), schema checked."""
    path = Path(path)
    if path.is_dir():
        path = path / AUDIT_JSON
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; expected the audit.json an audit wrote") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(record, dict) or record.get("schema") != AUDIT_SCHEMA:
        found = record.get("schema") if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{path} has schema {found!r}; expected {AUDIT_SCHEMA!r}")
    return record
