"""CIFAR-10 (Krizhevsky, 2009): 60,000 32x32 colour images of 10 classes, 50,000 / 10,000.

Two formats: the python batches (``data_batch_1`` ... ``data_batch_5`` and ``test_batch``, in a
folder such as ``cifar-10-batches-py/`` or the downloaded ``cifar-10-python.tar.gz``) and the
image folder ``train|test/<class>/*.jpg`` (a folder or an archive). Attribute: ``label`` (alias
``class``), named airplane ... truck in the dataset's order.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fairquant.data.base import DataSpec
from fairquant.data.catalog import Attribute, Catalog
from fairquant.data.files import FileTree
from fairquant.data.folder import image_folder_layout
from fairquant.data.images import decode_files
from fairquant.data.source import ImageSource
from fairquant.errors import DataError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.26
    from numpy.core.multiarray import _reconstruct

CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
EXPECTED = "cifar-10-batches-py/ (or cifar-10-python.tar.gz), or train|test/<class>/ images"

# The globals a pickled numpy array needs, and nothing else. CIFAR's batches are pickles, and
# unpickling calls whatever global a file names: a crafted file could run any code. The batches
# hold only dicts, lists, bytes and uint8 arrays, so the unpickler below refuses every global but
# numpy's array reconstruction (which builds an array from a dtype, a shape and bytes) and
# ``_codecs.encode`` (how Python 3 writes bytes at protocol 2; it only encodes a string).
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def read_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels of one python batch, unpickled safely."""
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # unpickling raises many types on damaged input
        raise DataError(f"{where} is not a CIFAR-10 python batch: {e}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{where} is not a CIFAR-10 python batch (no dict inside)")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    try:
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (KeyError, ValueError) as e:
        raise DataError(f"{where}: expected 'data' (N x 3072 bytes) and 'labels'; {e}") from None
    if len(images) != len(labels) or (len(labels) and not 0 <= labels.min() <= labels.max() <= 9):
        raise DataError(f"{where}: {len(images)} images and {len(labels)} labels in 0..9 expected")
    return images, labels


class CIFAR10(ImageSource):
    name = "cifar10"
    expected_root = EXPECTED
    description = "CIFAR-10: the python batches (folder or .tar.gz) or train|test/<class>/ images"
    flip_ok = True
    default_target = "label"
    attribute_help = "label (alias class)"

    def _tree(self, spec: DataSpec) -> FileTree:
        return FileTree(self.root(spec))

    def _batches(self, tree: FileTree) -> dict[str, str] | None:
        """Batch file name -> path in the tree, or None for the image-folder format."""
        found = {PurePosixPath(n).name: n for n in tree.names()}
        wanted = [b for split in BATCHES.values() for b in split]
        if not any(b in found for b in wanted):
            return None
        missing = [b for b in wanted if b not in found]
        if missing:
            raise DataError(f"{tree}: CIFAR-10 batches {missing} are missing")
        return {b: found[b] for b in wanted}

    def _read_batches(self, tree: FileTree, batches: dict[str, str]):
        by_path = {path: name for name, path in batches.items()}
        read = {by_path[path]: read_batch(data, f"{tree}:{path}")
                for path, data in tree.read(by_path)}  # fmt: skip
        return [(split, *read[b]) for split, names in BATCHES.items() for b in names]

    def scan(self, spec: DataSpec) -> Catalog:
        tree = self._tree(spec)
        batches = self._batches(tree)
        if batches is None:
            keys, classes, splits = image_folder_layout(tree)
            unknown = sorted(set(classes) - set(CLASSES))
            if unknown:
                raise DataError(f"{tree}: class folder(s) {unknown} are not CIFAR-10's {CLASSES}")
            codes = np.asarray([CLASSES.index(c) for c in classes], dtype=np.int64)
            split = np.asarray(splits) if splits[0] is not None else None
        else:
            keys, labels, split_list = [], [], []
            for split_name, _, y in self._read_batches(tree, batches):
                keys += [f"{split_name}/{len(keys) + i}" for i in range(len(y))]
                labels.append(y)
                split_list += [split_name] * len(y)
            codes, split = np.concatenate(labels), np.asarray(split_list)
        return Catalog(
            keys, {"label": Attribute(codes, CLASSES)}, split, {"class": "label"}, source=str(tree)
        )

    def decode(self, spec: DataSpec, catalog: Catalog, rows: np.ndarray) -> Tensor:
        tree = self._tree(spec)
        batches = self._batches(tree)
        if batches is None:
            names = [catalog.keys[i] for i in rows]
            return decode_files(tree, names, channels=self.channels(spec), size=spec.image_size)
        images = np.concatenate([x for _, x, _ in self._read_batches(tree, batches)])
        return torch.from_numpy(images[rows])

    def fingerprint(self, spec: DataSpec) -> Any:
        return self._tree(spec).fingerprint()
