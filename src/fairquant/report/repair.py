"""A repair's folder: the deployable model in its toolchain's format, its test verdict and the
table of every candidate tried (:func:`fairquant.mitigate.repair.repair`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fairquant._io import atomic_write
from fairquant.errors import ConfigError
from fairquant.mitigate.repair import RepairResult, RepairUnreachable
from fairquant.report.verdict import VERDICT_JSON, VERDICT_JUNIT, write_junit, write_verdict_json

__all__ = ["CANDIDATES", "RANKING", "check_folder", "write_candidates", "write_repair"]

#: The table of every candidate tried.
CANDIDATES = "candidates.csv"
#: The float tier's ranking of the layers, when that tier ran.
RANKING = "ranking.csv"


def check_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path, if it is new or empty (checked before a repair runs, and again when
    it is written)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"output folder {str(folder)!r} exists and is not empty")
    return folder


def write_repair(result: RepairResult, folder: str | os.PathLike) -> list[Path]:
    """Write the chosen artifact (``model.onnx`` for ``ort:``, ``model.xml`` + ``model.bin`` for
    ``openvino:``), ``verdict.json``, ``verdict.junit.xml``, ``candidates.csv`` and, when layers
    were ranked, ``ranking.csv`` into ``folder`` (new or empty), all at once: built beside it and
    renamed into place, so the folder appears complete or not at all. Returns its files."""

    def write(tmp: Path) -> None:
        source = result.chosen.deployed.artifact
        parts = [source, *([source.with_suffix(".bin")] if source.suffix == ".xml" else [])]
        for part in parts:
            shutil.copyfile(part, tmp / f"model{part.suffix}")
        write_verdict_json(result.verdict, tmp / VERDICT_JSON)
        write_junit(result.verdict, tmp / VERDICT_JUNIT)
        _write_table(result.table(), tmp)
        if result.ranking is not None:
            atomic_write(tmp / RANKING, lambda p: result.ranking.to_csv(p, index=False))

    return _write_folder(folder, write)


def write_candidates(error: RepairUnreachable, folder: str | os.PathLike) -> Path:
    """When no candidate is within tolerance: ``folder`` (new or empty) holds ``candidates.csv``
    alone, every candidate tried, and no model (none passes, so none is there to ship) and no
    verdict. Returns the table's path."""
    return _write_folder(folder, lambda tmp: _write_table(error.candidates, tmp))[0]


def _write_table(table: pd.DataFrame, folder: Path) -> None:
    atomic_write(folder / CANDIDATES, lambda p: table.to_csv(p, index=False))


def _write_folder(folder: str | os.PathLike, write: Callable[[Path], None]) -> list[Path]:
    """Run ``write`` on a fresh folder beside ``folder`` and rename it into place."""
    folder = check_folder(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(folder.iterdir())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
