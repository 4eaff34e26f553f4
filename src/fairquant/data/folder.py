"""The user's own images: a CSV of ``path, label[, group][, split]`` beside the images, or an
image-folder layout (``<class>/<file>`` or ``train|test/<class>/<file>``).

In a CSV, ``path`` is relative to the CSV's folder and every column other than ``path`` and
``split`` is an attribute (coded by its sorted distinct values, numbers as numbers), so ``label``
and ``group`` are the defaults but any column can be the target or the group. Without ``split``
the samples are split seeded and stratified by ``test_size``.
"""

from __future__ import annotations

import warnings
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from fairquant.data.base import DataSpec
from fairquant.data.catalog import Attribute, Catalog
from fairquant.data.files import FileTree, file_fingerprint
from fairquant.data.images import decode_files
from fairquant.data.source import ImageSource
from fairquant.data.tabular import read_csv
from fairquant.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test")
DEFAULT_CSV = "labels.csv"
EXPECTED = "a CSV file with columns path,label[,group][,split], or a folder holding one"


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def image_folder_layout(tree: FileTree) -> tuple[list[str], list[str], list[str | None]]:
    """Keys, class folders and splits of ``[train|test/]<class>/<image>`` files in ``tree``.

    Files that are not images are skipped with one warning counting them; an image at another
    depth is an error (it would otherwise be dropped).
    """
    keys: list[str] = []
    classes: list[str] = []
    splits: list[str | None] = []
    other = []
    for name in tree.names():
        if not is_image(name):
            other.append(name)
            continue
        parts = PurePosixPath(name).parts
        if len(parts) == 3 and parts[0] in SPLITS:
            split, label = parts[0], parts[1]
        elif len(parts) == 2:
            split, label = None, parts[0]
        else:
            raise DataError(
                f"{tree}: image {name} is not in a <class>/ or train|test/<class>/ folder"
            )
        keys.append(name)
        classes.append(label)
        splits.append(split)
    if other:
        warnings.warn(
            f"{tree}: skipped {len(other)} file(s) that are not images "
            f"({', '.join(other[:5])}{' ...' if len(other) > 5 else ''})",
            stacklevel=3,
        )
    if not keys:
        raise DataError(f"{tree}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    if None in splits and any(s is not None for s in splits):
        raise DataError(f"{tree}: some images are under train/ or test/ and some are not")
    return keys, classes, splits


class ImageFolder(ImageSource):
    name = "folder"
    expected_root = EXPECTED
    description = "your own images: a CSV (path,label[,group][,split]) or <class>/ folders"
    default_target = "label"
    attribute_help = "label, group, and any other CSV column except path and split"
    options: ClassVar[dict[str, str]] = {
        "csv": f"CSV file name inside root (default {DEFAULT_CSV})"
    }

    def _csv(self, spec: DataSpec) -> Path | None:
        root = self.root(spec)
        if root.is_file() and root.suffix.lower() == ".csv":
            return root
        if root.is_dir() and (root / spec.options.get("csv", DEFAULT_CSV)).is_file():
            return root / spec.options.get("csv", DEFAULT_CSV)
        if "csv" in spec.options:
            raise DataError(f"{root} holds no CSV named {spec.options['csv']!r}")
        return None

    def scan(self, spec: DataSpec) -> Catalog:
        csv = self._csv(spec)
        if csv is None:
            tree = FileTree(self.root(spec))
            keys, classes, splits = image_folder_layout(tree)
            split = None if splits[0] is None else np.asarray(splits)
            return Catalog(keys, {"label": Attribute.from_values(classes)}, split, source=str(tree))
        frame = read_csv(csv, ["path", "label"])
        first: dict[str, int] = {}
        for i, path in enumerate(frame["path"]):
            if not path or not (csv.parent / path).is_file():
                raise DataError(f"{csv} line {i + 2}: image {path!r} does not exist")
            if path in first:
                raise DataError(
                    f"{csv} line {i + 2}: image {path!r} is listed again (first on line "
                    f"{first[path] + 2}); expected each image once"
                )
            first[path] = i
        split = None
        if "split" in frame:
            bad = ~frame["split"].isin(SPLITS)
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(
                    f"{csv} line {i + 2}: split is {frame['split'].iloc[i]!r}; "
                    "expected train or test"
                )
            split = frame["split"].to_numpy()
        attributes = {}
        for column in frame.columns:
            if column in ("path", "split"):
                continue
            values = frame[column]
            empty = values == ""
            if empty.any():
                i = int(np.flatnonzero(empty.to_numpy())[0])
                raise DataError(f"{csv} line {i + 2}: column {column!r} is empty")
            attributes[column] = Attribute.from_values(values.to_numpy())
        return Catalog(list(frame["path"]), attributes, split, source=str(csv))

    def group_default(self, catalog: Catalog) -> str | None:
        return "group" if "group" in catalog.attributes else None

    def decode(self, spec: DataSpec, catalog: Catalog, rows: np.ndarray) -> Tensor:
        csv = self._csv(spec)
        tree = FileTree(csv.parent if csv is not None else self.root(spec))
        names = [catalog.keys[i] for i in rows]
        crop = bool(self.option(spec, "center_crop"))
        return decode_files(
            tree, names, channels=self.channels(spec), size=spec.image_size, center_crop=crop
        )

    def fingerprint(self, spec: DataSpec) -> Any:
        csv = self._csv(spec)
        if csv is None:
            return FileTree(self.root(spec)).fingerprint()
        return [file_fingerprint(csv), FileTree(csv.parent).fingerprint()]
