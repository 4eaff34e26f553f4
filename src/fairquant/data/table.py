"""A table of numeric feature columns with a label and a group column: CSV or Parquet.

The dataset ``table`` (``DataSpec(name="table", root="data.csv", target="label",
group="group")``): each row is a sample; ``target`` and ``group`` name columns (``label`` and
``group`` by default; a group may combine columns, ``"sex*race"``); the features are every other
numeric column (option ``features`` names them instead). A ``split`` column (``train``/``test``)
is used as the split, else the rows are split seeded and stratified as every dataset is
(:func:`fairquant.data.split.plan_splits`, options ``split``, ``limit``, ...). Features are
standardized by the training split's mean and std (option ``standardize=false`` keeps the raw
values, for a model trained on them). A column with no number in it (names, notes) is not a
feature. Nothing is dropped: an empty, non-numeric or infinite feature value is an error naming its
row, column and value, unless option ``drop_bad_rows`` leaves such rows out (a warning counts
them).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fairquant._extras import require
from fairquant.data.base import DataSpec, GroupedDataset
from fairquant.data.catalog import COMBINE, Attribute, Catalog
from fairquant.data.files import require_root
from fairquant.data.split import plan_splits
from fairquant.data.tabular import read_csv
from fairquant.errors import ConfigError, DataError

NAME = "table"
EXPECTED = "a CSV (.csv) or Parquet (.parquet) file with feature, label and group columns"
OPTIONS = {
    "features": "the feature columns, in the model's order (default: every other numeric column)",
    "standardize": "z-score features by the training split's mean and std, default true",
    "split": "'own' (the table's split column, where it has one) or 'random' (seeded, stratified)",
    "limit": 'a seeded random subset: at most N samples per split, or {"train": N, "test": M}',
    "drop_bad_rows": "leave out rows with an empty, non-numeric or infinite feature value (a "
    "warning counts them), default false: such a cell is an error",
}


def read_table(path: Path, required: list[str]) -> pd.DataFrame:
    """The table at ``path`` (CSV or Parquet) with its ``required`` columns checked."""
    if path.suffix.lower() == ".parquet":
        require("pyarrow", what=f"reading {path}")  # pandas reads Parquet through it
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read Parquet file {path}: {e}") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise DataError(
                f"{path} lacks column(s) {missing}; expected columns {required}, "
                f"found {list(frame.columns)}"
            )
        if frame.empty:
            raise DataError(f"{path} has columns but no rows")
        return frame
    if path.suffix.lower() != ".csv":
        raise ConfigError(f"dataset {NAME!r}: root {path} is not {EXPECTED}")
    frame = read_csv(path, required)
    # read_csv keeps text (no value is guessed); numbers are parsed per column below
    return frame


def _parse(values: pd.Series) -> np.ndarray:
    """``values`` as float64, NaN where a cell is empty, not a number or not finite."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        values = values.astype(str).str.strip()
    parsed = np.array(pd.to_numeric(values, errors="coerce"), dtype=np.float64)  # a copy
    parsed[~np.isfinite(parsed)] = np.nan
    return parsed


def _has_numbers(values: pd.Series) -> bool:
    """Whether a column holds any number: a column of text only (names, notes) is no feature."""
    return bool(np.isfinite(_parse(values)).any())


def _features(
    frame: pd.DataFrame, features: list[str], path: Path, drop: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The feature matrix and the rows kept: a cell that is not a finite number is an error
    naming its row, column and value, or with ``drop`` its row is left out (a warning counts
    them)."""
    x = np.stack([_parse(frame[c]) for c in features], axis=1)
    bad = np.isnan(x).any(axis=1)
    if bad.any() and not drop:
        row = int(np.flatnonzero(bad)[0])
        column = features[int(np.flatnonzero(np.isnan(x[row]))[0])]
        raise DataError(
            f"{path} row {row + 1}: feature column {column!r} is {frame[column].iloc[row]!r}; "
            "expected a finite number (nothing is dropped: fix the cell, name the features "
            "with option features, or drop such rows with option drop_bad_rows=true)"
        )
    keep = np.flatnonzero(~bad)
    if bad.any():
        if not len(keep):
            raise DataError(f"{path}: every row has a bad feature value; nothing is left")
        rows = [str(r + 1) for r in np.flatnonzero(bad)]
        warnings.warn(
            f"{path}: dropped {len(rows)} of {len(frame)} rows with an empty, non-numeric or "
            f"infinite feature value (option drop_bad_rows): rows {', '.join(rows[:10])}"
            + (" ..." if len(rows) > 10 else ""),
            stacklevel=3,
        )
    return x[keep].astype(np.float32), keep


def _attribute(frame: pd.DataFrame, column: str, path: Path) -> Attribute:
    values = frame[column]
    text = values.astype(str).str.strip()
    empty = values.isna().to_numpy() | (text == "").to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DataError(f"{path} row {frame.index[row] + 1}: column {column!r} is empty")
    # numbers sort as numbers (2 before 10), as in every dataset
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    return Attribute.from_values(values.to_numpy() if numeric else text.to_numpy())


def load_table(spec: DataSpec) -> GroupedDataset:
    """The :class:`GroupedDataset` of the table ``spec.root`` (see the module docstring)."""
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for dataset {NAME!r}; expected: {', '.join(OPTIONS)}"
        )
    path = require_root(spec.root, NAME, EXPECTED)
    target, group = spec.target or "label", spec.group or "group"
    named = [p.strip() for p in f"{target}{COMBINE}{group}".split(COMBINE)]
    needed = list(dict.fromkeys(named))
    frame = read_table(path, needed).reset_index(drop=True)  # row i + 1 is the table's row i
    features = spec.options.get("features")
    drop = spec.options.get("drop_bad_rows", False)
    if not isinstance(drop, bool):
        raise ConfigError(f"option drop_bad_rows={drop!r}: expected true or false")
    if features is None:
        skip = {*needed, "split"}
        features = [c for c in frame.columns if c not in skip and _has_numbers(frame[c])]
        if not features:
            raise DataError(f"{path} has no numeric feature columns besides {needed}")
    elif not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ConfigError(f"option features={features!r}: expected a list of column names")
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks feature column(s) {missing}; found {list(frame.columns)}")
    overlap = sorted(set(features) & set(needed))
    if overlap:
        raise ConfigError(f"column(s) {overlap} cannot be both a feature and the target or group")
    x, keep = _features(frame, features, path, drop)
    if len(keep) < len(frame):
        frame = frame.iloc[keep]  # keeps each row's index, so errors below name its row

    split = None
    if "split" in frame.columns:
        split = frame["split"].astype(str).str.strip().to_numpy()
        bad = ~np.isin(split, ["train", "test"])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path} row {frame.index[row] + 1}: split is {split[row]!r}; expected train or "
                "test"
            )
    catalog = Catalog(
        keys=[f"row {i + 1}" for i in keep],
        attributes={c: _attribute(frame, c, path) for c in needed},
        split=split,
        source=str(path),
    )
    plan = plan_splits(spec, catalog, default_target=target, default_group=group)
    if len(plan.g.names) < 2:
        raise DataError(
            f"{path}: group column {group!r} has one value only ({plan.g.names[0]!r}); an audit "
            "compares groups, so it needs at least two"
        )
    xt = torch.from_numpy(x)
    train_x, test_x = xt[plan.train], xt[plan.test]
    mean, std = (0.0,) * x.shape[1], (1.0,) * x.shape[1]
    if spec.options.get("standardize", True):
        m, s = train_x.mean(0), train_x.std(0).nan_to_num(1.0).clamp_min(1e-8)
        train_x, test_x = (train_x - m) / s, (test_x - m) / s
        mean, std = tuple(m.tolist()), tuple(s.tolist())
    return plan.dataset(spec, train_x, test_x, mean=mean, std=std, features=list(features))
