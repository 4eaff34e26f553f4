"""FER2013 (Goodfellow et al., 2013): 35,887 48x48 grayscale faces, 7 emotions.

Two formats: the original ``fer2013.csv`` (columns ``emotion, pixels, Usage``; emotion 0 angry,
1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral) and the image-folder layout
``train|test/<emotion>/<Usage>_<n>.jpg`` (a folder or ``fer2013_images.tar.gz``), where the Usage
comes from the file-name prefix. The split is the dataset's: Training for training, PublicTest
and PrivateTest together for test, as in Liu et al. (2025). Attributes: ``emotion`` (default
target and group) and ``usage``.
"""

from __future__ import annotations

import warnings
from pathlib import PurePosixPath

import numpy as np

from fairquant.data.base import DataSpec
from fairquant.data.catalog import Attribute, Catalog
from fairquant.data.files import FileTree
from fairquant.data.folder import is_image
from fairquant.data.source import PixelTableOrFiles
from fairquant.data.tabular import int_column, read_csv
from fairquant.errors import DataError

EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
USAGES = ["Training", "PublicTest", "PrivateTest"]
SPLIT_OF_USAGE = np.array(["train", "test", "test"])
CSV_COLUMNS = ("emotion", "pixels", "Usage")
EXPECTED = "fer2013.csv, or the train/ and test/ image folders (or fer2013_images.tar.gz)"


class FER2013(PixelTableOrFiles):
    name = "fer2013"
    expected_root = EXPECTED
    description = "FER2013 emotions: fer2013.csv or train|test/<emotion>/ image folders"
    flip_ok = True
    default_target = "emotion"
    attribute_help = "emotion, usage"
    csv_columns = CSV_COLUMNS

    def scan(self, spec: DataSpec) -> Catalog:
        root = self.root(spec)
        if self.root_is_csv(spec):
            frame = read_csv(root, CSV_COLUMNS, usecols=["emotion", "Usage"])
            emotion = int_column(frame, "emotion", root, allowed=range(len(EMOTIONS)))
            usage = frame["Usage"].str.strip()
            bad = ~usage.isin(USAGES)
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(
                    f"{root} line {i + 2}: Usage is {usage.iloc[i]!r}; expected one of {USAGES}"
                )
            usage_codes = usage.map(USAGES.index).to_numpy().astype(np.int64)
            keys = [f"line {i + 2}" for i in range(len(frame))]
        else:
            keys, emotion_list, usage_list, other = [], [], [], []
            for name in FileTree(root).names():
                parts = PurePosixPath(name).parts
                if not is_image(name):
                    other.append(name)
                    continue
                prefix = parts[-1].split("_")[0]
                if len(parts) < 2 or parts[-2] not in EMOTIONS or prefix not in USAGES:
                    raise DataError(
                        f"{root}: image {name} is not <emotion>/<Usage>_<n>.jpg with an emotion "
                        f"in {EMOTIONS} and a Usage in {USAGES}"
                    )
                keys.append(name)
                emotion_list.append(EMOTIONS.index(parts[-2]))
                usage_list.append(USAGES.index(prefix))
            if other:
                warnings.warn(
                    f"{root}: skipped {len(other)} file(s) that are not images ({other[:5]})",
                    stacklevel=3,
                )
            emotion = np.asarray(emotion_list, dtype=np.int64)
            usage_codes = np.asarray(usage_list, dtype=np.int64)
        return Catalog(
            keys=keys,
            attributes={
                "emotion": Attribute(emotion, EMOTIONS),
                "usage": Attribute(usage_codes, USAGES),
            },
            split=SPLIT_OF_USAGE[usage_codes],
            source=str(root),
        )

    def file_channels(self, spec: DataSpec) -> int:
        return 1  # FER2013 is gray
