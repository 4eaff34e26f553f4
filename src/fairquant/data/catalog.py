"""A dataset's labels without its pixels: one row per sample, attributes as integer codes.

Loaders first build a :class:`Catalog` (parsing file names, label files or CSV columns, which is
fast) and decode pixels only for the samples a run needs; counting never decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fairquant.errors import ConfigError, DataError

#: Joins attribute names in a combined group (``"gender*age_bucket"``) and their values.
COMBINE = "*"
VALUE_SEP = "/"


@dataclass(frozen=True)
class Attribute:
    """Integer codes per sample and the name of each code."""

    codes: np.ndarray
    names: list[str]

    def __post_init__(self) -> None:
        if len(self.codes) and (self.codes.min() < 0 or self.codes.max() >= len(self.names)):
            raise DataError(f"attribute codes must lie in 0..{len(self.names) - 1}")

    @classmethod
    def from_values(cls, values: Sequence, names: Sequence[str] | None = None) -> Attribute:
        """Code raw values by their sorted distinct values (or by ``names`` when given).

        Values that are all numbers, as numbers or as text (folder names, CSV cells), are
        ordered as numbers (``2`` before ``10``), integral ones named without a decimal point;
        text is ordered as text. Two spellings of one number (``07``, ``7``) stay two values.
        """
        values = np.asarray(values)
        if names is not None:
            return cls(values.astype(np.int64), list(names))
        distinct = np.unique(values)
        codes = np.searchsorted(distinct, values).astype(np.int64)
        if values.dtype.kind in "iuf":
            return cls(codes, [_number_name(v) for v in distinct])
        numbers = _numbers(distinct)
        if numbers is None:
            return cls(codes, [str(v) for v in distinct])
        order = np.lexsort((np.arange(len(distinct)), numbers))  # by number, then as text
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return cls(rank[codes], [str(distinct[i]) for i in order])


def _numbers(values: np.ndarray) -> np.ndarray | None:
    """``values`` (text) as finite floats, or None when any is not a number."""
    try:
        numbers = np.array([float(str(v).strip()) for v in values], dtype=np.float64)
    except ValueError:
        return None
    return numbers if np.isfinite(numbers).all() else None


def _number_name(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class Catalog:
    """The samples of a dataset: a key each (file or row) and named attributes.

    ``split`` holds ``"train"`` / ``"test"`` per sample when the dataset has its own split, else
    None. ``aliases`` maps alternative attribute names to the stored ones.
    """

    keys: list[str]
    attributes: dict[str, Attribute]
    split: np.ndarray | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.keys:
            raise DataError(f"{self.source}: no samples found")
        for name, attr in self.attributes.items():
            if len(attr.codes) != len(self.keys):
                raise DataError(f"attribute {name!r} has {len(attr.codes)} codes for {len(self)}")

    def __len__(self) -> int:
        return len(self.keys)

    def known(self) -> list[str]:
        return sorted([*self.attributes, *self.aliases])

    def attribute(self, expr: str) -> tuple[str, Attribute]:
        """The attribute ``expr`` names, or the combination ``"a*b"`` of several.

        A combination's codes enumerate every pair of values (``a`` major), named ``"x/y"``.

        Returns the canonical name and the attribute.
        """
        parts = [p.strip() for p in expr.split(COMBINE)]
        resolved = []
        for part in parts:
            name = self.aliases.get(part, part)
            if name not in self.attributes:
                raise ConfigError(
                    f"unknown attribute {part!r} for {self.source}; expected one of: "
                    f"{', '.join(self.known())} (or a combination like 'a{COMBINE}b')"
                )
            resolved.append(name)
        codes = np.zeros(len(self), dtype=np.int64)
        names = [""]
        for name in resolved:
            attr = self.attributes[name]
            codes = codes * len(attr.names) + attr.codes
            names = [f"{a}{VALUE_SEP}{b}" if a else b for a in names for b in attr.names]
        return COMBINE.join(resolved), Attribute(codes, names)
