"""The quantization audit: evaluate a model at each precision and compare its groups.

This is the path every fairquant feature builds on: a trained full-precision model and a test split
with group labels go in; quantized copies are evaluated; per-group accuracy, loss, excess loss
``G(a)`` and the disparity ``φ(D)`` come out as one tidy table.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from torch import nn

from fairquant._io import atomic_write
from fairquant._progress import progress_bar
from fairquant.data.base import Split
from fairquant.metrics.functional import excess_loss, group_counts, group_mean, per_sample_loss, phi
from fairquant.models.predict import predict_logits
from fairquant.quant.model import quantize_model
from fairquant.quant.precision import Precision, parse_precision
from fairquant.quant.size import packed_size_bytes

#: Columns of :attr:`AuditResult.table` (and of ``results.csv``).
COLUMNS = ["method", "precision", "bits", "group", "metric", "value"]
#: The group label of rows that describe the whole test split.
ALL = "all"


class EmptyGroupWarning(UserWarning):
    """A group has no test samples, so its metrics are undefined and it is left out of φ(D)."""


@dataclass
class AuditResult:
    """Per-group and overall metrics of a model at several precisions.

    ``table`` is long and tidy, one row per (method, precision, group, metric): metrics ``n``,
    ``accuracy``, ``loss``, ``excess_loss`` (G(a)), ``accuracy_drop`` (fp32 accuracy minus this
    precision's, in points) per group and for ``all``, and ``phi`` and ``size_bytes`` for ``all``.
    """

    table: pd.DataFrame
    group_names: list[str]
    precisions: list[Precision]
    notes: list[str] = field(default_factory=list)

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


def audit_model(
    model: nn.Module,
    test: Split,
    group_names: list[str],
    precisions: list[Precision],
    *,
    method: str = "ptq",
    quantize: Callable[[nn.Module, Precision], nn.Module] = quantize_model,
    batch_size: int = 512,
    show_progress: bool = True,
) -> AuditResult:
    """Evaluate ``model`` at fp32 and every precision in ``precisions`` on ``test``.

    ``quantize(model, precision)`` makes each quantized copy: PTQ by default, or e.g.
    :func:`~fairquant.quant.qat.qat_finetune` bound to a training split, with ``method="qat"``.
    fp32 is always evaluated: it is the reference for excess loss and accuracy drop. Its rows have
    method ``none``. Each precision also gets its packed model size (metric ``size_bytes``).
    A group with no test samples is reported (``n = 0``, an :class:`EmptyGroupWarning`, a line
    in ``notes``) and left out of φ(D), never turned into NaN.
    """
    reference = parse_precision("fp32")
    order = [reference, *(p for p in precisions if p != reference)]
    k = len(group_names)
    counts = group_counts(test.g, k)
    notes = [
        f"group {group_names[a]!r} has no test samples: its accuracy, loss and excess loss are "
        "undefined and it is left out of phi"
        for a in range(k)
        if counts[a] == 0
    ]
    for note in notes:
        warnings.warn(note, EmptyGroupWarning, stacklevel=2)
    present = counts > 0
    if not present.any():
        raise ValueError("the test split has no samples in any group")

    rows: list[tuple] = []
    ref_loss = ref_acc = None
    with progress_bar("evaluate", len(order), enabled=show_progress) as advance:
        for precision in order:
            advance(0, status=precision.name)
            make = quantize_model if precision.is_reference else quantize
            logits = predict_logits(make(model, precision), test.x, batch_size=batch_size)
            loss = per_sample_loss(logits, test.y)
            correct = (logits.argmax(1) == test.y).double()
            acc = 100.0 * group_mean(correct, test.g, k)
            mean_loss = group_mean(loss, test.g, k)
            all_acc, all_loss = 100.0 * correct.mean().item(), loss.double().mean().item()
            if ref_loss is None:
                ref_loss, ref_acc, ref_all = mean_loss, acc, (all_acc, all_loss)
            g = excess_loss(mean_loss, ref_loss)
            m = "none" if precision.is_reference else method
            key = (m, precision.name, precision.bits)
            for a in range(k):
                rows.append((*key, group_names[a], "n", float(counts[a])))
                if present[a]:
                    rows += [
                        (*key, group_names[a], "accuracy", acc[a].item()),
                        (*key, group_names[a], "loss", mean_loss[a].item()),
                        (*key, group_names[a], "excess_loss", g[a].item()),
                        (*key, group_names[a], "accuracy_drop", (ref_acc[a] - acc[a]).item()),
                    ]
            rows += [
                (*key, ALL, "n", float(len(test))),
                (*key, ALL, "accuracy", all_acc),
                (*key, ALL, "loss", all_loss),
                (*key, ALL, "excess_loss", all_loss - ref_all[1]),
                (*key, ALL, "accuracy_drop", ref_all[0] - all_acc),
                (*key, ALL, "phi", phi(g[present])),
                (*key, ALL, "size_bytes", float(packed_size_bytes(model, precision))),
            ]
            advance(1)
    table = pd.DataFrame(rows, columns=COLUMNS)
    return AuditResult(table=table, group_names=list(group_names), precisions=order, notes=notes)
