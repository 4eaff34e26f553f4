"""A table of numeric feature columns with a label and a group column: CSV or Parquet.

The dataset ``table`` (``DataSpec(name="table", root="data.csv", target="label",
group="group")``): each row is a sample; ``target`` and ``group`` name columns (``label`` and
``group`` by default; a group may combine columns, ``"sex*race"``); the features are every other
numeric column (option ``features`` names them instead). A ``split`` column (``train``/``test``)
is used as the split, else the rows are split seeded and stratified as every dataset is
(:func:`fairquant.data.split.plan_splits`, options ``split``, ``limit``, ...). Features are
standardized by the training split's mean and std (option ``standardize=false`` keeps the raw
values, for a model trained on them). Nothing is dropped: a missing or non-numeric feature value
is an error naming its row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fairquant.data.base import DataSpec, GroupedDataset, Split
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
}
#: Install hint for Parquet files.
PARQUET_EXTRA = "pip install 'fairquant[parquet]'"


def read_table(path: Path, required: list[str]) -> pd.DataFrame:
    """The table at ``path`` (CSV or Parquet) with its ``required`` columns checked."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401  (pandas reads Parquet through it)
        except ImportError:
            raise ConfigError(
                f"reading {path} needs pyarrow; install it with: {PARQUET_EXTRA}"
            ) from None
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


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = frame[column]
    if not pd.api.types.is_numeric_dtype(values):
        values = values.astype(str).str.strip()
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna().to_numpy() | ~np.isfinite(parsed.to_numpy(dtype=np.float64, na_value=0.0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path} row {row + 1}: feature column {column!r} is {values.iloc[row]!r}; "
            "expected a finite number (nothing is dropped: fix or remove the row)"
        )
    return parsed.to_numpy(dtype=np.float32)


def _is_numeric(values: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return True
    parsed = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    return bool(parsed.notna().all())


def _attribute(frame: pd.DataFrame, column: str, path: Path) -> Attribute:
    values = frame[column]
    text = values.astype(str).str.strip()
    empty = values.isna().to_numpy() | (text == "").to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DataError(f"{path} row {row + 1}: column {column!r} is empty")
    if _is_numeric(values):  # numbers sort as numbers (2 before 10)
        numbers = pd.to_numeric(text).to_numpy()
        distinct = np.unique(numbers)
        names = [str(int(v)) if float(v).is_integer() else str(v) for v in distinct]
        return Attribute(np.searchsorted(distinct, numbers).astype(np.int64), names)
    return Attribute.from_values(text.to_numpy())


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
    frame = read_table(path, needed)
    features = spec.options.get("features")
    if features is None:
        skip = {*needed, "split"}
        features = [c for c in frame.columns if c not in skip and _is_numeric(frame[c])]
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
    x = np.stack([_numeric(frame, c, path) for c in features], axis=1)

    split = None
    if "split" in frame.columns:
        split = frame["split"].astype(str).str.strip().to_numpy()
        bad = ~np.isin(split, ["train", "test"])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path} row {row + 1}: split is {split[row]!r}; expected train or test"
            )
    catalog = Catalog(
        keys=[f"row {i + 1}" for i in range(len(frame))],
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

    def tensor(codes: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64))

    return GroupedDataset(
        spec=spec,
        train=Split(train_x, tensor(plan.y.codes[plan.train]), tensor(plan.g.codes[plan.train])),
        test=Split(test_x, tensor(plan.y.codes[plan.test]), tensor(plan.g.codes[plan.test])),
        classes=list(plan.y.names),
        group_names=list(plan.g.names),
        target=plan.target,
        group=plan.group,
        mean=mean,
        std=std,
    )
