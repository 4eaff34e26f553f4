"""UTKFace: the real release (counts, a decoded subset, the cache) and an age_gender.csv from it."""

import io
import tarfile
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fairquant.data import DataSpec, get_source, load_dataset
from fairquant.data.utkface import parse_file_name
from fairquant.errors import ConfigError, DataError

MALFORMED = {
    "39_1_20170116174525125.jpg.chip.jpg",
    "61_1_20170109142408075.jpg.chip.jpg",
    "61_1_20170109150557335.jpg.chip.jpg",
}


@pytest.fixture
def utk(shared_data):
    path = shared_data / "UTKFace.tar.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def first_images(archive, n):
    """The first ``n`` (name, PIL image) of a tar archive whose names parse, read in order."""
    out = []
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            if member.isfile() and parse_file_name(member.name):
                out.append((member.name, Image.open(io.BytesIO(tar.extractfile(member).read()))))
                if len(out) == n:
                    break
    return out


def test_utkface_release_counts_and_one_warning(utk):
    source = get_source("utkface")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        catalog = source.scan(DataSpec(name="utkface", root=str(utk)))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 3 file(s)" in message and all(name in message for name in MALFORMED)
    assert len(catalog) == 23_705
    race = np.bincount(catalog.attribute("ethnicity")[1].codes).tolist()
    assert race == [10_078, 4_526, 3_434, 3_975, 1_692]
    assert np.bincount(catalog.attributes["gender"].codes).tolist() == [12_391, 11_314]
    assert np.bincount(catalog.attributes["age_bucket"].codes).tolist() == [4233, 12240, 4544, 2688]
    assert catalog.attributes["age_bucket"].names == ["<18", "18-39", "40-59", "60+"]
    # every gender x race cell has at least 760 images
    _, cells = catalog.attribute("gender*race")
    assert len(cells.names) == 10 and np.bincount(cells.codes).min() >= 760
    # the papers' 80/20 split: 18,964 / 4,741, stratified, seeded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = source.counts(DataSpec(name="utkface", root=str(utk)))
    per_split = counts.groupby("split").n.sum()
    assert per_split["train"] == 18_964 and per_split["test"] == 4_741
    assert (counts.target == counts.group).all()


def test_utkface_decoded_subset_is_cached_and_standardized(utk, fq_cache, monkeypatch):
    spec = DataSpec(
        name="utkface",
        root=str(utk),
        target="gender",
        group="gender*age_bucket",
        image_size=32,
        options={"limit": 40, "grayscale": True, "age_buckets": [30]},
    )
    with pytest.warns(UserWarning, match="skipped 3"):
        ds = load_dataset(spec)
    assert ds.train.x.shape == (40, 1, 32, 32) and ds.test.x.shape == (40, 1, 32, 32)
    assert ds.classes == ["male", "female"] and ds.target == "gender"
    assert ds.group == "gender*age_bucket"
    assert ds.group_names == ["male/<30", "male/30+", "female/<30", "female/30+"]
    assert torch.equal(ds.train.g // 2, ds.train.y)  # the group's first part is the target
    assert abs(ds.train.x.mean().item()) < 1e-4 and abs(ds.train.x.std().item() - 1) < 1e-2
    assert {p.name.split("-")[0] for p in fq_cache.iterdir()} == {"names", "utkface"}
    # the second load decodes nothing: it reads the cache
    monkeypatch.setattr(
        type(get_source("utkface")), "decode", lambda *a: pytest.fail("decoded again")
    )
    with pytest.warns(UserWarning):
        again = load_dataset(spec)
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.g, ds.test.g)


@pytest.mark.filterwarnings("ignore:cannot stratify the split by target x group")
def test_age_gender_csv_built_from_real_images(utk, tmp_path):
    images = first_images(utk, 30)
    rows = []
    for name, im in images:
        age, gender, race = parse_file_name(name)
        gray = np.asarray(im.convert("L").resize((48, 48)), dtype=np.uint8)
        pixels = " ".join(map(str, gray.flatten()))
        rows.append(
            {"age": age, "ethnicity": race, "gender": gender, "img_name": name, "pixels": pixels}
        )
    csv = tmp_path / "age_gender.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    spec = DataSpec(
        name="utkface", root=str(csv), target="gender", group="age_bucket", test_size=0.5
    )
    catalog = get_source("utkface").scan(spec)
    assert catalog.attributes["gender"].codes.tolist() == [r["gender"] for r in rows]
    ds = load_dataset(spec)
    assert len(ds.train) + len(ds.test) == 30 and ds.in_channels == 1 and ds.image_size == (48, 48)
    # the decoded pixels are those written, up to the recorded normalization
    restored = ds.train.x * ds.std[0] + ds.mean[0]
    first = np.asarray([r["pixels"].split() for r in rows], dtype=np.float32) / 255
    assert any(np.allclose(restored[0].flatten().numpy(), f, atol=1e-5) for f in first)

    bad = pd.DataFrame(rows)
    bad.loc[4, "pixels"] = " ".join(["7"] * 2303)
    bad.to_csv(csv, index=False)
    with pytest.raises(
        DataError, match=r"age_gender.csv line 6: pixels has 2303 values; expected 2304"
    ):
        load_dataset(spec)
    pd.DataFrame(rows).drop(columns="ethnicity").to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['ethnicity'\]"):
        load_dataset(spec)


def test_utkface_bad_input(tmp_path):
    with pytest.raises(DataError, match="does not exist; expected the UTKFace image folder"):
        load_dataset(DataSpec(name="utkface", root=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="no samples found"):
        load_dataset(DataSpec(name="utkface", root=str(tmp_path)))
    for i, race in enumerate([0, 0, 1, 1, 2]):
        Image.new("RGB", (8, 8), (i, 2 * i, 3 * i)).save(
            tmp_path / f"3{i}_1_{race}_2017.jpg.chip.jpg"
        )
    (tmp_path / "25_0_2_2017.jpg.chip.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"cannot decode image 25_0_2_2017\.jpg\.chip\.jpg"):
        load_dataset(DataSpec(name="utkface", root=str(tmp_path), test_size=0.5))
    with pytest.raises(
        ConfigError, match=r"unknown attribute 'colour'.*age, age_bucket, ethnicity"
    ):
        load_dataset(DataSpec(name="utkface", root=str(tmp_path), group="gender*colour"))
    with pytest.raises(ConfigError, match="age_buckets"):
        load_dataset(
            DataSpec(name="utkface", root=str(tmp_path), options={"age_buckets": [40, 18]})
        )
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['bogus'\]"):
        load_dataset(DataSpec(name="utkface", root=str(tmp_path), options={"bogus": 1}))
