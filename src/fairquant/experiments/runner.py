"""Run an experiment's grid into a run directory, resumably.

The run directory (the contract shared with ``fairquant report``):

- ``config.yaml``: the validated experiment, every default filled in;
- ``cells/<cell key>/``: each cell's ``cell.json``, checkpoint and finished tables
  (:mod:`fairquant.experiments.cells`);
- ``results.csv``: the finished cells' rows, in grid order, columns
  :data:`~fairquant.schema.RESULT_COLUMNS`;
- ``notes.csv``: the audits' notes (what each toolchain quantized and kept in float, ...), one
  row per cell and note, with the cell keys (:data:`NOTES_COLUMNS`), when there are any;
- ``explain/<dataset>__<model>__<mitigation>__seed<k>.csv`` (each cell's factor table) and
  ``explain/curvature.csv`` (all of them, with the key columns) when explain is on.

A cell counts as finished once its results table is in its folder; a rerun skips it. Tables are
written atomically and ``results.csv`` is rebuilt from the finished cells after each one, so a
crash loses at most the cells in flight and never leaves a partial or duplicated row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from fairquant._io import atomic_write
from fairquant._progress import progress_bar
from fairquant.errors import ConfigError
from fairquant.experiments.backends import BACKENDS, run_local, run_processes, run_ray
from fairquant.experiments.cells import Cell, CellOutput, expand, run_cell
from fairquant.experiments.config import ExperimentConfig
from fairquant.schema import CELL_KEYS, RESULT_COLUMNS

RESULTS = "results.csv"
CONFIG = "config.yaml"
NOTES = "notes.csv"
NOTES_COLUMNS = [*CELL_KEYS, "note"]


@dataclass
class RunSummary:
    """How many cells the grid has, how many ran now, how many were already done."""

    cells: int
    ran: int
    skipped: int
    trained: int
    seconds: float
    results: Path


def cell_folder(run_dir: Path, cell: Cell) -> Path:
    return run_dir / "cells" / cell.key


def results_path(run_dir: Path, cell: Cell) -> Path:
    return cell_folder(run_dir, cell) / f"results-{cell.eval_key}.csv"


def factors_path(run_dir: Path, cell: Cell) -> Path:
    return cell_folder(run_dir, cell) / f"explain-{cell.eval_key}.csv"


def notes_path(run_dir: Path, cell: Cell) -> Path:
    return cell_folder(run_dir, cell) / f"notes-{cell.eval_key}.json"


def is_finished(run_dir: Path, cell: Cell) -> bool:
    return results_path(run_dir, cell).exists()


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def store(run_dir: Path, cell: Cell, output: CellOutput) -> None:
    """Write a finished cell's tables; the results table last, as the mark that it is done."""
    if output.factors is not None:
        _write_csv(factors_path(run_dir, cell), output.factors)
    text = json.dumps(output.notes, indent=1)
    atomic_write(notes_path(run_dir, cell), lambda tmp: tmp.write_text(text + "\n"))
    _write_csv(results_path(run_dir, cell), output.results)


def collect(run_dir: Path, cells: list[Cell]) -> pd.DataFrame:
    """The finished cells' rows, in grid order, rebuilt into ``results.csv`` atomically; their
    notes into ``notes.csv`` and their explain tables into ``explain/``."""
    finished = [c for c in cells if is_finished(run_dir, c)]
    frames = [
        pd.read_csv(results_path(run_dir, c), keep_default_na=False, na_values=[""])
        for c in finished
    ]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RESULT_COLUMNS)
    _write_csv(run_dir / RESULTS, table)
    notes = [
        (*c.keys.values(), note)
        for c in finished
        if notes_path(run_dir, c).exists()
        for note in json.loads(notes_path(run_dir, c).read_text())
    ]
    if notes:
        _write_csv(run_dir / NOTES, pd.DataFrame(notes, columns=NOTES_COLUMNS))
    explained = [c for c in finished if factors_path(run_dir, c).exists()]
    if explained:
        factors = []
        for c in explained:
            f = pd.read_csv(factors_path(run_dir, c))
            _write_csv(run_dir / "explain" / f"{c.label}.csv", f.drop(columns=CELL_KEYS))
            factors.append(f)
        _write_csv(run_dir / "explain" / "curvature.csv", pd.concat(factors, ignore_index=True))
    return table


def write_config(run_dir: Path, config: ExperimentConfig) -> Path:
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    return atomic_write(run_dir / CONFIG, lambda tmp: tmp.write_text(text))


def run_experiment(
    config: ExperimentConfig,
    run_dir: str | Path,
    *,
    backend: str = BACKENDS[0],
    workers: int | None = None,
    address: str | None = None,
    show_progress: bool = True,
    cell_fn: Callable[[Cell, str], CellOutput] = run_cell,
) -> RunSummary:
    """Run every unfinished cell of ``config`` with ``backend`` and rebuild ``results.csv``.

    ``workers``: processes of the ``process`` backend (default 2) or CPUs of a local Ray
    (default: all). ``cell_fn`` runs one cell (tests count or interrupt cells through it).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of: {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1; got {workers}")
    if address is not None and backend != "ray":
        raise ConfigError("--address joins a Ray cluster: use it with --backend ray")
    start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    cells = expand(config)
    pending = [c for c in cells if not is_finished(run_dir, c)]
    tasks = []
    for cell in pending:
        folder = cell_folder(run_dir, cell)
        folder.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"keys": cell.keys, **cell.canonical()}, indent=1, sort_keys=True)
        atomic_write(folder / "cell.json", lambda tmp, m=meta: tmp.write_text(m))
        tasks.append((cell, str(folder)))
    trained = 0
    with progress_bar("cells", len(tasks), enabled=show_progress) as advance:

        def done(task: tuple[Cell, str], output: CellOutput) -> None:
            nonlocal trained
            cell = task[0]
            store(run_dir, cell, output)
            collect(run_dir, cells)
            trained += output.trained
            advance(1, status=cell.label)

        if backend == "local":
            run_local(cell_fn, tasks, done)
        elif backend == "process":
            run_processes(cell_fn, tasks, done, workers=workers or 2)
        else:
            run_ray(
                cell_fn,
                tasks,
                done,
                workers=workers,
                address=address,
                num_cpus=config.resources.num_cpus,
                num_gpus=config.resources.num_gpus,
            )
    collect(run_dir, cells)
    return RunSummary(
        cells=len(cells),
        ran=len(tasks),
        skipped=len(cells) - len(tasks),
        trained=trained,
        seconds=time.perf_counter() - start,
        results=run_dir / RESULTS,
    )
