"""UTKFace (Zhang et al., 2017): faces labelled with age, gender and race in their file names.

Two formats: the release's image folder (``<age>_<gender>_<race>_<datetime>.jpg.chip.jpg``, as a
folder or the downloaded ``UTKFace.tar.gz``) and the 48x48 grayscale ``age_gender.csv`` (columns
``age, ethnicity, gender, img_name, pixels``). Codes follow the release: gender 0 male, 1 female;
race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others. Attributes: ``age``, ``gender``, ``race``
(alias ``ethnicity``) and ``age_bucket`` (option ``age_buckets``: ascending edges, default
``[18, 40, 60]`` -> under 18, 18-39, 40-59, 60+). The default target and group are ethnicity,
split 80/20 seeded and stratified, as in Liu et al. (2025) and Bellam & Kim.

The release has 3 file names without a race field; they are skipped with one warning naming them.
"""

from __future__ import annotations

import itertools
import re
import warnings
from pathlib import PurePosixPath
from typing import Any, ClassVar

import numpy as np

from fairquant.data.base import DataSpec
from fairquant.data.catalog import Attribute, Catalog
from fairquant.data.files import FileTree
from fairquant.data.source import PixelTableOrFiles
from fairquant.data.tabular import int_column, read_csv
from fairquant.errors import ConfigError

RACES = ["White", "Black", "Asian", "Indian", "Others"]
GENDERS = ["male", "female"]
DEFAULT_AGE_BUCKETS = (18, 40, 60)
CSV_COLUMNS = ("age", "ethnicity", "gender", "img_name", "pixels")
EXPECTED = "the UTKFace image folder, UTKFace.tar.gz, or age_gender.csv"
#: ``<age>_<gender>_<race>_<anything without an underscore>``
_NAME = re.compile(r"(\d+)_(\d+)_(\d+)_[^_]*")


def parse_file_name(name: str) -> tuple[int, int, int] | None:
    """``(age, gender, race)`` from a UTKFace file name, or None when it does not follow the scheme.

    >>> parse_file_name("UTKFace/41_0_3_20170119171541497.jpg.chip.jpg")
    (41, 0, 3)
    >>> parse_file_name("61_1_20170109150557335.jpg.chip.jpg") is None
    True
    """
    match = _NAME.fullmatch(name.rpartition("/")[2])
    if match is None:
        return None
    age, gender, race = (int(p) for p in match.groups())
    if gender >= len(GENDERS) or race >= len(RACES):
        return None
    return age, gender, race


def age_buckets(ages: np.ndarray, edges: Any) -> Attribute:
    """Bucket ages by ascending ``edges``: ``[18, 40, 60]`` -> ``<18, 18-39, 40-59, 60+``.

    >>> age_buckets(np.array([3, 18, 39, 40, 80]), [18, 40, 60]).names
    ['<18', '18-39', '40-59', '60+']
    """
    if (
        not isinstance(edges, (list, tuple))
        or not edges
        or not all(isinstance(e, int) and not isinstance(e, bool) for e in edges)
        or list(edges) != sorted(set(edges))
    ):
        raise ConfigError(
            f"option age_buckets={edges!r}: expected ascending integers like [18, 40, 60]"
        )
    names = [f"<{edges[0]}"]
    names += [f"{a}-{b - 1}" for a, b in itertools.pairwise(edges)]
    names.append(f"{edges[-1]}+")
    return Attribute(np.searchsorted(np.asarray(edges), ages, side="right").astype(np.int64), names)


class UTKFace(PixelTableOrFiles):
    name = "utkface"
    expected_root = EXPECTED
    description = "UTKFace faces: image folder, UTKFace.tar.gz, or the 48x48 age_gender.csv"
    flip_ok = True
    default_target = "ethnicity"
    attribute_help = "race (alias ethnicity), gender, age, age_bucket; combine as gender*age_bucket"
    csv_columns = CSV_COLUMNS
    options: ClassVar[dict[str, str]] = {
        "age_buckets": "ascending age edges for age_bucket, default [18, 40, 60]",
    }

    def scan(self, spec: DataSpec) -> Catalog:
        root = self.root(spec)
        if self.root_is_csv(spec):
            frame = read_csv(root, CSV_COLUMNS, usecols=CSV_COLUMNS[:4])
            ages = int_column(frame, "age", root)
            gender = int_column(frame, "gender", root, allowed=range(len(GENDERS)))
            race = int_column(frame, "ethnicity", root, allowed=range(len(RACES)))
            keys = [f"line {i + 2}" for i in range(len(frame))]
        else:
            tree = FileTree(root)
            keys, labels, malformed = [], [], []
            for name in tree.names():
                parsed = parse_file_name(name)
                if parsed is None:
                    malformed.append(name)
                else:
                    keys.append(name)
                    labels.append(parsed)
            if malformed:
                shown = ", ".join(repr(PurePosixPath(m).name) for m in malformed[:10])
                warnings.warn(
                    f"{root}: skipped {len(malformed)} file(s) whose names do not follow "
                    f"<age>_<gender>_<race>_<datetime>.jpg: {shown}"
                    + (" ..." if len(malformed) > 10 else ""),
                    stacklevel=3,
                )
            arr = np.asarray(labels, dtype=np.int64).reshape(-1, 3)
            ages, gender, race = arr[:, 0], arr[:, 1], arr[:, 2]
        edges = spec.options.get("age_buckets", list(DEFAULT_AGE_BUCKETS))
        return Catalog(
            keys=keys,
            attributes={
                "age": Attribute.from_values(ages),
                "gender": Attribute(gender, GENDERS),
                "race": Attribute(race, RACES),
                "age_bucket": age_buckets(ages, edges),
            },
            aliases={"ethnicity": "race"},
            source=str(root),
        )
