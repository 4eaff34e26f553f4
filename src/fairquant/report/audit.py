"""An audit's folder: ``results.csv``, ``audit.json``, the figure, and with a tolerance the
verdict (``verdict.json``, ``verdict.junit.xml``): what ``fairquant audit`` writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairquant.metrics.verdict import Tolerance, Verdict
from fairquant.report.figures import plot_group_accuracy
from fairquant.report.verdict import write_verdict
from fairquant.schema import FIGURE


@dataclass(frozen=True)
class WrittenAudit:
    """What :func:`write_audit` wrote: the tables (``files``), the figure, and the verdict."""

    files: list[Path]
    figure: Path
    verdict: Verdict | None


def write_audit(
    result: Any,
    folder: str | Path,
    *,
    tolerance: Tolerance | None = None,
    n_bootstrap: int = 1000,
    title: str = "",
    train_counts: list[int] | None = None,
    run: dict[str, Any] | None = None,
) -> WrittenAudit:
    """Write an :class:`~fairquant.AuditResult` into ``folder`` (results.csv, audit.json and the
    figure, each naming the ``run`` that wrote it where the format allows), and, with a
    ``tolerance``, judge it and write the verdict files."""
    folder = Path(folder)
    files = result.write(folder, run=run)
    figure = plot_group_accuracy(
        result, folder / FIGURE, train_counts=train_counts, title=title
    )
    judged = None
    if tolerance is not None:
        judged, written = write_verdict(
            result, tolerance, folder, n_bootstrap=n_bootstrap, run=run
        )
        files += written
    return WrittenAudit(files, figure, judged)
