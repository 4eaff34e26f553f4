"""FER2013: the real image-folder archive (counts by Usage) and a fer2013.csv built from it."""

import io
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairquant.data import DataSpec, get_source, load_dataset
from fairquant.data.fer2013 import EMOTIONS, USAGES
from fairquant.errors import DataError


@pytest.fixture
def fer(shared_data):
    path = shared_data / "fer2013_images.tar.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def test_fer2013_archive_counts(fer):
    catalog = get_source("fer2013").scan(DataSpec(name="fer2013", root=str(fer)))
    assert len(catalog) == 35_887
    usage = np.bincount(catalog.attributes["usage"].codes).tolist()
    assert dict(zip(USAGES, usage, strict=True)) == {
        "Training": 28_709,
        "PublicTest": 3_589,
        "PrivateTest": 3_589,
    }
    emotion = np.bincount(catalog.attributes["emotion"].codes).tolist()
    assert emotion == [4_953, 547, 5_121, 8_989, 6_077, 4_002, 6_198]
    # Training -> train, PublicTest + PrivateTest -> test
    assert (catalog.split == "train").sum() == 28_709 and (catalog.split == "test").sum() == 7_178


def test_fer2013_csv_built_from_real_images(fer, tmp_path):
    # real pixels and emotions from the archive's first images; their Usage cycles through the
    # three values (the archive lists test/ after 28,709 train/ files: too far to stream in a test)
    rows = []
    with tarfile.open(fer, "r|gz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            emotion = member.name.split("/")[-2]
            im = Image.open(io.BytesIO(tar.extractfile(member).read()))
            pixels = " ".join(map(str, np.asarray(im.convert("L")).flatten()))
            usage = USAGES[len(rows) % 3]
            rows.append({"emotion": EMOTIONS.index(emotion), "pixels": pixels, "Usage": usage})
            if len(rows) == 36:
                break
    csv = tmp_path / "fer2013.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    ds = load_dataset(DataSpec(name="fer2013", root=str(csv)))
    assert len(ds.train) == 12 and len(ds.test) == 24
    assert ds.image_size == (48, 48) and ds.in_channels == 1 and ds.classes == EMOTIONS
    assert ds.train.y.tolist() == [r["emotion"] for r in rows if r["Usage"] == "Training"]

    bad = pd.DataFrame(rows)
    bad.loc[3, "Usage"] = "Validation"
    bad.to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"fer2013.csv line 5: Usage is 'Validation'; expected"):
        load_dataset(DataSpec(name="fer2013", root=str(csv)))
    bad = pd.DataFrame(rows)
    bad.loc[7, "pixels"] = "1 2 3"
    bad.to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"line 9: pixels has 3 values; expected 2304 \(48x48\)"):
        load_dataset(DataSpec(name="fer2013", root=str(csv)))
    pd.DataFrame(rows).drop(columns="Usage").to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['Usage'\]"):
        load_dataset(DataSpec(name="fer2013", root=str(csv)))


def test_fer2013_folder_errors(tmp_path):
    (tmp_path / "train" / "happy").mkdir(parents=True)
    Image.new("L", (48, 48)).save(tmp_path / "train" / "happy" / "Training_1.jpg")
    (tmp_path / "train" / "bored").mkdir()
    Image.new("L", (48, 48)).save(tmp_path / "train" / "bored" / "Training_2.jpg")
    with pytest.raises(DataError, match=r"Training_2.jpg is not <emotion>/<Usage>_<n>.jpg"):
        load_dataset(DataSpec(name="fer2013", root=str(tmp_path)))
    (tmp_path / "train" / "bored" / "Training_2.jpg").unlink()
    with pytest.raises(DataError, match="has no test samples; set option split='random'"):
        load_dataset(DataSpec(name="fer2013", root=str(tmp_path)))
