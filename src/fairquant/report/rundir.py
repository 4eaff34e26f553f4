"""Read a run directory: ``results.csv``, the setup file and the optional ``explain/`` tables.

A run directory (written by ``fairquant run``, ``fairquant mitigate`` or ``fairquant audit
--out``) holds ``results.csv``, one long table with the audit columns
(:data:`fairquant.schema.COLUMNS`) and the cell keys ``dataset, model, mitigation, seed``;
``config.yaml`` or ``run.json`` (the setup, shown as written); and optionally ``explain/`` with
one factor table per cell, ``<dataset>__<model>__<mitigation>__seed<k>.csv`` (the ``factors``
of :class:`fairquant.ExplainResult`), and further CSV tables such as ``curvature.csv``; and
optionally ``notes.csv``, the audits' notes per cell (``fairquant run``).
An audit's ``results.csv`` has no cell keys: each missing key is taken as single-valued.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fairquant._audit import AUDIT_JSON, read_audit_json
from fairquant.errors import ConfigError
from fairquant.experiments.runner import NOTES, NOTES_COLUMNS
from fairquant.schema import (
    CELL_KEYS,
    COLUMNS,
    RESULT_COLUMNS,
    VALUE_COLUMNS,
    parse_cell_label,
)

#: The setup files shown as written, in the order looked for.
SETUP_FILES = ("config.yaml", "config.yml", "run.json")
_NUMERIC = ["seed", "bits", *VALUE_COLUMNS]
_TEXT = [c for c in RESULT_COLUMNS if c not in _NUMERIC]


@dataclass
class RunDir:
    """What a report is made of.

    ``results``: :data:`RESULT_COLUMNS`, every key filled (``defaults`` names the keys that
    ``results.csv`` lacked and the value each was given). ``setup``: ``{file name: text}``.
    ``factors``: ``{(dataset, model, mitigation, seed): factor table}``. ``tables``: other CSV
    tables of ``explain/`` by file stem. ``notes``: each distinct note of ``notes.csv`` once,
    with the cells that have it when not every cell does.
    """

    path: Path
    results: pd.DataFrame
    setup: dict[str, str] = field(default_factory=dict)
    factors: dict[tuple[str, str, str, int], pd.DataFrame] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    defaults: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_results(
    path: str | Path, *, name: str | None = None, model: str | None = None
) -> tuple[pd.DataFrame, dict]:
    """``results.csv`` checked and with every cell key filled: ``(table, defaults used)``.

    A missing key column gets one value: ``dataset`` ``name`` (default: the run directory's
    name), ``model`` ``model`` (default ``"model"``), ``mitigation`` ``"none"``, ``seed`` ``0``.
    Unknown columns, missing audit columns, an empty table, a non-numeric or missing value and a
    duplicated row are refused with a :class:`ConfigError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path} not found: a run directory holds the results.csv written by `fairquant "
            "run`, `fairquant mitigate` or `fairquant audit --out DIR`"
        )
    try:  # strings as written: a group called "NA" stays "NA"
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{path} is empty: expected the columns {RESULT_COLUMNS}") from None
    unknown = [c for c in raw.columns if c not in RESULT_COLUMNS]
    if unknown:
        raise ConfigError(
            f"{path}: unknown columns {unknown}; expected the columns {RESULT_COLUMNS} "
            f"(the cell keys {CELL_KEYS} may be absent)"
        )
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise ConfigError(f"{path}: missing columns {missing}; expected {RESULT_COLUMNS}")
    if raw.empty:
        raise ConfigError(f"{path} has a header but no rows: nothing to report")
    defaults = {
        "dataset": name or path.parent.resolve().name,
        "model": model or "model",
        "mitigation": "none",
        "seed": "0",
    }
    defaults = {k: v for k, v in defaults.items() if k not in raw.columns}
    table = raw.assign(**defaults)[RESULT_COLUMNS].copy()
    for column in _NUMERIC:
        text = table[column].str.strip()
        number = pd.to_numeric(text.where(text != ""), errors="coerce")
        bad = number.isna() & (text != "")
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise ConfigError(
                f"{path}: column {column!r} must be numeric; row {row + 2} has "
                f"{table[column].iloc[row]!r}"
            )
        if column in ("seed", "bits", "value") and number.isna().any():
            row = int(number.isna().to_numpy().nonzero()[0][0])
            raise ConfigError(f"{path}: column {column!r} is empty on row {row + 2}")
        table[column] = number
    table["seed"] = table.seed.astype(int)
    table["bits"] = table.bits.astype(int)
    for column in _TEXT:
        table[column] = table[column].astype(str)
    keys = [c for c in RESULT_COLUMNS if c not in ("bits", *VALUE_COLUMNS)]
    dup = table.duplicated(keys)
    if dup.any():
        row = table[dup].iloc[0]
        raise ConfigError(
            f"{path}: {int(dup.sum())} duplicated rows, e.g. "
            f"{ {k: row[k] for k in keys} }; each (cell, method, precision, group, metric) "
            "must appear once"
        )
    return table, {k: (int(v) if k == "seed" else v) for k, v in defaults.items()}


def _read_factors(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={"precision": str, "group": str}, keep_default_na=False)
    for column in table.columns.drop(["precision", "group"], errors="ignore"):
        text = table[column].astype(str).str.strip()
        number = pd.to_numeric(text.where(text != ""), errors="coerce")
        if (number.isna() & (text != "")).any():
            raise ConfigError(f"{path}: column {column!r} must be numeric")
        table[column] = number
    needed = {"precision", "group", "grad_norm", "trace", "lambda_max", "accuracy"}
    if not needed <= set(table.columns):
        raise ConfigError(
            f"{path}: a factor table needs the columns {sorted(needed)}; missing "
            f"{sorted(needed - set(table.columns))} (write it with ExplainResult.factors)"
        )
    if table.empty:
        raise ConfigError(f"{path} has no rows")
    return table


def _audited(record: dict) -> tuple[str | None, str | None]:
    """(dataset, model) names of an ``audit.json`` record: the data spec's name and the model
    source as spelled on the command line (a file by its name, not its whole path)."""
    spec = (record.get("data") or {}).get("spec") or {}
    source = record.get("model") or {}
    name = source.get("name")
    if name and source.get("kind") in ("checkpoint", "onnx"):
        name = Path(name).name
    kind = source.get("kind")
    model = None
    if name and kind:  # torchvision and timm names are recorded spelled: torchvision:resnet18
        model = name if name.startswith(f"{kind}:") else f"{kind}:{name}"
    return spec.get("name"), model


def load_run(path: str | Path) -> RunDir:
    """Read the run directory ``path`` (module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"run directory {path} does not exist or is not a folder")
    setup = {n: (path / n).read_text() for n in SETUP_FILES if (path / n).is_file()}
    dataset = model = None
    if (path / AUDIT_JSON).is_file():  # an audit folder: name its dataset and model from it
        record = read_audit_json(path / AUDIT_JSON)
        setup[AUDIT_JSON] = (path / AUDIT_JSON).read_text()
        dataset, model = _audited(record)
    results, defaults = read_results(path / "results.csv", name=dataset, model=model)
    factors, tables = {}, {}
    explain = path / "explain"
    if explain.is_dir():
        for file in sorted(explain.glob("*.csv")):
            key = parse_cell_label(file.stem)
            if key is not None:
                factors[key] = _read_factors(file)
            else:
                tables[file.stem] = pd.read_csv(file)
        others = sorted(p.name for p in explain.iterdir() if p.suffix != ".csv")
        if others:
            warnings.warn(
                f"{explain}: not reported (only CSV tables are): {', '.join(others)}",
                stacklevel=2,
            )
    notes = read_notes(path / NOTES, results) if (path / NOTES).is_file() else []
    return RunDir(path, results, setup, factors, tables, defaults, notes)


def read_notes(path: Path, results: pd.DataFrame) -> list[str]:
    """Each distinct note of the ``notes.csv`` at ``path`` once, in order, followed by the cells
    that have it (``digits · cnn · none · seed 1``) unless every cell of ``results`` does."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(table.columns) != NOTES_COLUMNS:
        raise ConfigError(
            f"{path}: expected the columns {NOTES_COLUMNS}; got {list(table.columns)}"
        )
    cells = len(results[CELL_KEYS].drop_duplicates())
    out = []
    for note, part in table.groupby("note", sort=False):
        labels = [
            f"{d} · {m} · {g} · seed {s}" for d, m, g, s in part[CELL_KEYS].itertuples(index=False)
        ]
        out.append(str(note) if len(labels) == cells else f"{note} ({'; '.join(labels)})")
    return out
