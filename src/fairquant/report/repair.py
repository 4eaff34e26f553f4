"""A repair's folder: the deployable model in its toolchain's format, its test verdict and the
table of every candidate tried (:func:`fairquant.mitigate.repair.repair`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fairquant._io import atomic_write
from fairquant.errors import ConfigError
from fairquant.mitigate.repair import RepairResult
from fairquant.report.verdict import VERDICT_JSON, VERDICT_JUNIT, write_junit, write_verdict_json

__all__ = ["check_folder", "write_repair"]


def check_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path, if it is new or empty (checked before a repair runs, and again when
    it is written)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"output folder {str(folder)!r} exists and is not empty")
    return folder


def write_repair(result: RepairResult, folder: str | os.PathLike) -> list[Path]:
    """Write the chosen artifact (``model.onnx`` for ``ort:``, ``model.xml`` + ``model.bin`` for
    ``openvino:``), ``verdict.json``, ``verdict.junit.xml`` and ``candidates.csv`` into ``folder``
    (new or empty), all at once: built beside it and renamed into place, so the folder appears
    complete or not at all. Returns its files."""
    folder = check_folder(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        source = result.chosen.deployed.artifact
        parts = [source, *([source.with_suffix(".bin")] if source.suffix == ".xml" else [])]
        for part in parts:
            shutil.copyfile(part, tmp / f"model{part.suffix}")
        write_verdict_json(result.verdict, tmp / VERDICT_JSON)
        write_junit(result.verdict, tmp / VERDICT_JUNIT)
        table = result.table()
        atomic_write(tmp / "candidates.csv", lambda p: table.to_csv(p, index=False))
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
