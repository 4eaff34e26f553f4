"""A dataset's labels without its pixels: one row per sample, attributes as integer codes.

Loaders first build a :class:`Catalog` (parsing file names, label files or CSV columns, which is
fast) and decode pixels only for the samples a run needs; counting never decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
        """Code raw values by their sorted distinct values (or by ``names`` when given)."""
        values = np.asarray(values)
        if names is None:
            distinct = np.unique(values)
            return cls(
                np.searchsorted(distinct, values).astype(np.int64), [str(v) for v in distinct]
            )
        return cls(values.astype(np.int64), list(names))


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
