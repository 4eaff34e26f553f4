"""MNIST (LeCun et al., 1998) from its idx files, gzipped or not.

The root is a folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``; ``.idx`` in
place of ``-idx`` is accepted too). The split is the dataset's 60,000 / 10,000; with only one pair
present, set option ``split='random'`` to split it seeded and stratified. Attribute: ``digit``.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fairquant.data.base import DataSpec
from fairquant.data.catalog import Attribute, Catalog
from fairquant.data.files import file_fingerprint
from fairquant.data.source import ImageSource
from fairquant.errors import DataError

PREFIXES = {"train": "train", "test": "t10k"}
EXPECTED = "a folder with MNIST's idx files (train-/t10k-images-idx3-ubyte[.gz], ...-labels-...)"


def find_idx(root: Path, prefix: str, kind: str) -> Path | None:
    """The idx file for ``prefix`` (train/t10k) and ``kind`` (images/labels), if present."""
    dims = {"images": "idx3", "labels": "idx1"}[kind]
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            path = root / f"{prefix}-{kind}{sep}{dims}-ubyte{suffix}"
            if path.is_file():
                return path
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx array of unsigned bytes (magic 0x0000080N, big-endian dimensions)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(data) < 4 + 4 * ndim or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise DataError(f"{path} is not an idx file of unsigned bytes with {ndim} dimension(s)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} holds {body.size} bytes of data; its header says {shape}")
    return body.reshape(shape)


class MNIST(ImageSource):
    name = "mnist"
    expected_root = EXPECTED
    description = "MNIST digits from the idx files (gzipped or not)"
    flip_ok = False  # a mirrored digit is another shape (or none)
    default_target = "digit"
    attribute_help = "digit"

    def _files(self, spec: DataSpec) -> dict[str, tuple[Path, Path]]:
        root = self.root(spec)
        if not root.is_dir():
            raise DataError(f"{root} is not a folder; expected {EXPECTED}")
        files = {}
        for split, prefix in PREFIXES.items():
            images, labels = find_idx(root, prefix, "images"), find_idx(root, prefix, "labels")
            if (images is None) != (labels is None):
                raise DataError(f"{root}: {prefix} images and labels must both be present")
            if images is not None and labels is not None:
                files[split] = (images, labels)
        if not files:
            raise DataError(f"{root} holds no MNIST idx files; expected {EXPECTED}")
        return files

    def scan(self, spec: DataSpec) -> Catalog:
        keys, labels, splits = [], [], []
        for split, (_, label_file) in self._files(spec).items():
            y = read_idx(label_file, 1)
            if y.size and y.max() > 9:
                raise DataError(f"{label_file}: label {int(y.max())} is not a digit 0-9")
            keys += [f"{split}/{i}" for i in range(len(y))]
            labels.append(y.astype(np.int64))
            splits += [split] * len(y)
        return Catalog(
            keys,
            {"digit": Attribute(np.concatenate(labels), [str(d) for d in range(10)])},
            np.asarray(splits),
            source=str(spec.root),
        )

    def decode(self, spec: DataSpec, catalog: Catalog, rows: np.ndarray) -> Tensor:
        parts = []
        for _split, (image_file, label_file) in self._files(spec).items():
            x = read_idx(image_file, 3)
            if len(x) != len(read_idx(label_file, 1)):
                n = len(read_idx(label_file, 1))
                raise DataError(f"{image_file} has {len(x)} images but {label_file} has {n} labels")
            parts.append(x)
        images = torch.from_numpy(np.concatenate(parts)[rows]).unsqueeze(1)
        return images

    def fingerprint(self, spec: DataSpec) -> Any:
        return [[file_fingerprint(p) for p in pair] for pair in self._files(spec).values()]
