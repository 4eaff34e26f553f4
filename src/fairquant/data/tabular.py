"""CSV label files and pixel strings (``"0 12 255 ..."``), read with pandas, checked by row."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from fairquant.errors import DataError


def read_csv(
    path: Path, required: Sequence[str], usecols: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read a CSV, requiring ``required`` columns; a missing one is named with those present."""
    try:
        header = pd.read_csv(path, nrows=0).columns.str.strip().tolist()
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read CSV {path}: {e}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {missing}; expected columns {list(required)}, found {header}"
        )
    try:
        frame = pd.read_csv(
            path,
            usecols=lambda c: usecols is None or c.strip() in usecols,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
        )
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read CSV {path}: {e}") from None
    frame.columns = frame.columns.str.strip()
    if frame.empty:
        raise DataError(f"{path} has a header but no rows")
    return frame


def int_column(frame: pd.DataFrame, column: str, path: Path, allowed: Sequence[int] | None = None):
    """A column of integers; a row that is not one (or not in ``allowed``) raises a DataError."""
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce")
    bad = values.isna() | (values != values.round())
    if allowed is not None:
        bad |= ~values.isin(list(allowed))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        expected = f"one of {list(allowed)}" if allowed is not None else "an integer"
        raise DataError(
            f"{path} line {row + 2}: column {column!r} is {frame[column].iloc[row]!r}; "
            f"expected {expected}"
        )
    return values.to_numpy().astype(np.int64)


def parse_pixels(strings: Sequence[str], path: Path, lines: np.ndarray) -> Tensor:
    """Space-separated gray values (a square image each) -> uint8 (N, 1, side, side).

    ``lines`` gives each string's line number in ``path`` for error messages.
    """
    counts = np.fromiter((s.count(" ") + 1 if s.strip() else 0 for s in strings), np.int64)
    expected = int(counts[0]) if len(counts) else 0
    side = round(expected**0.5)
    if side * side != expected or side == 0:
        raise DataError(
            f"{path} line {lines[0]}: pixels has {expected} values; expected a square image "
            "(e.g. 2,304 values for 48x48)"
        )
    wrong = np.flatnonzero(counts != expected)
    if len(wrong):
        i = int(wrong[0])
        raise DataError(
            f"{path} line {lines[i]}: pixels has {counts[i]} values; expected {expected} "
            f"({side}x{side}) like the first row"
        )
    try:  # numpy's C parser; text it cannot read is a ValueError or a DeprecationWarning
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            values = np.fromstring(" ".join(strings), dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning):
        values = np.empty(0, dtype=np.int64)
    if len(values) != expected * len(strings):
        raise DataError(f"{path}: pixels hold something other than space-separated integers")
    out_of_range = np.flatnonzero((values < 0) | (values > 255))
    if len(out_of_range):
        i = int(out_of_range[0]) // expected
        raise DataError(f"{path} line {lines[i]}: a pixel value outside 0..255")
    return torch.from_numpy(values.astype(np.uint8).reshape(len(strings), 1, side, side))
