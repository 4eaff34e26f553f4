"""CelebA (Liu et al., 2015): 202,599 aligned faces with 40 binary attributes.

The root is a folder with ``list_attr_celeba.txt`` (a count line, a line of 40 attribute names,
then ``<file> <+1|-1 x 40>`` per image), ``img_align_celeba/`` and optionally
``list_eval_partition.txt`` (``<file> <0|1|2>``: train, validation, test). The split is the
partition's, with validation merged into training; without the partition file the images are
split seeded and stratified. Any attribute can be the target, and any attribute or combination
(``"Male*Young"``, the default group, as in the five-architecture study) the group; each value is
named ``not_<attribute>`` (-1) or ``<attribute>`` (+1). Images are centre-cropped to a square
before resizing (option ``center_crop``, default true).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from fairquant.data.base import DataSpec
from fairquant.data.catalog import Attribute, Catalog
from fairquant.data.files import FileTree, file_fingerprint
from fairquant.data.images import decode_files
from fairquant.data.source import ImageSource
from fairquant.errors import DataError

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGES = "img_align_celeba"
PARTITIONS = np.array(["train", "train", "test"])  # 0 train, 1 validation (merged), 2 test
EXPECTED = f"a folder with {ATTR_FILE}, {IMAGES}/ and optionally {PARTITION_FILE}"


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """File names, attribute names and a (N, A) array of 0/1 from ``list_attr_celeba.txt``."""
    lines = _lines(path)
    if len(lines) < 3:
        raise DataError(f"{path}: expected a count line, a header of attribute names, then rows")
    names = lines[1].split()
    files, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if len(fields) != len(names) + 1 or any(v not in ("1", "-1") for v in fields[1:]):
            raise DataError(
                f"{path} line {number}: expected a file name and {len(names)} values of 1 or -1"
            )
        files.append(fields[0])
        rows.append([v == "1" for v in fields[1:]])
    if lines[0].strip().isdigit() and int(lines[0]) != len(files):
        raise DataError(
            f"{path}: the first line says {lines[0].strip()} images; found {len(files)}"
        )
    return files, names, np.asarray(rows, dtype=np.int64)


class CelebA(ImageSource):
    name = "celeba"
    expected_root = EXPECTED
    description = "CelebA: list_attr_celeba.txt (+ list_eval_partition.txt) with img_align_celeba/"
    flip_ok = True
    default_target = "Smiling"
    attribute_help = "any of the 40 attributes (Male, Young, Smiling, ...) or a*b combinations"
    default_group = "Male*Young"
    option_defaults: ClassVar[dict[str, Any]] = {"center_crop": True}

    def root(self, spec: DataSpec) -> Path:
        root = super().root(spec)
        if not (root / ATTR_FILE).is_file():
            raise DataError(f"{root} has no {ATTR_FILE}; expected {EXPECTED}")
        if not (root / IMAGES).is_dir():
            raise DataError(f"{root} has no {IMAGES}/ folder; expected {EXPECTED}")
        return root

    def scan(self, spec: DataSpec) -> Catalog:
        root = self.root(spec)
        files, names, values = read_attributes(root / ATTR_FILE)
        split = None
        if (root / PARTITION_FILE).is_file():
            partition = {}
            for number, line in enumerate(_lines(root / PARTITION_FILE), start=1):
                fields = line.split()
                if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                    raise DataError(
                        f"{root / PARTITION_FILE} line {number}: expected '<file> <0|1|2>'"
                    )
                partition[fields[0]] = int(fields[1])
            missing = [f for f in files if f not in partition]
            if missing:
                raise DataError(f"{root / PARTITION_FILE} has no partition for {missing[:5]}")
            split = PARTITIONS[[partition[f] for f in files]]
        attributes = {
            name: Attribute(values[:, i], [f"not_{name}", name]) for i, name in enumerate(names)
        }
        return Catalog([f"{IMAGES}/{f}" for f in files], attributes, split, source=str(root))

    def decode(self, spec: DataSpec, catalog: Catalog, rows: np.ndarray) -> Tensor:
        names = [catalog.keys[i] for i in rows]
        crop = bool(self.option(spec, "center_crop"))
        return decode_files(
            FileTree(self.root(spec)),
            names,
            channels=self.channels(spec),
            size=spec.image_size,
            center_crop=crop,
        )

    def fingerprint(self, spec: DataSpec) -> Any:
        root = self.root(spec)
        files = [root / ATTR_FILE, root / PARTITION_FILE]
        return [file_fingerprint(f) for f in files if f.is_file()] + [
            FileTree(root / IMAGES).fingerprint()
        ]
