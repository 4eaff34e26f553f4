"""CelebA and the user's own image folder on small fixtures the tests write; the CLI commands."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fairquant.cli import app
from fairquant.data import DataSpec, get_source, load_dataset
from fairquant.errors import ConfigError, DataError

runner = CliRunner()
# 24-image fixtures split 80/20 cannot stratify by 6 target x group cells; tested once below
pytestmark = pytest.mark.filterwarnings("ignore:cannot stratify the split by target x group")


def write_celeba(root, n=16, partition=True):
    """``n`` 18x22 faces with 3 attributes; image i has Male = i odd, Young = i % 4 < 2."""
    (root / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = [str(n), "Male Smiling Young"]
    parts = []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        pixels = rng.integers(0, 256, (22, 18, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img_align_celeba" / name)
        values = [i % 2, (i // 2) % 2, int(i % 4 < 2)]
        lines.append(name + " " + " ".join("1" if v else "-1" for v in values))
        parts.append(f"{name} {[0, 1, 2, 2][i % 4]}")
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition:
        (root / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")


def test_celeba_attributes_partition_and_crop(tmp_path):
    write_celeba(tmp_path)
    spec = DataSpec(name="celeba", root=str(tmp_path), image_size=8)
    ds = load_dataset(spec)
    assert ds.target == "Smiling" and ds.classes == ["not_Smiling", "Smiling"]
    assert ds.group == "Male*Young"
    assert ds.group_names == [
        "not_Male/not_Young",
        "not_Male/Young",
        "Male/not_Young",
        "Male/Young",
    ]
    # partition 0 and 1 (validation, merged) train, 2 test; centre-cropped to 18x18, then 8x8
    assert len(ds.train) == 8 and len(ds.test) == 8 and ds.image_size == (8, 8)
    assert ds.train.g.tolist() == [1, 3] * 4
    other = load_dataset(DataSpec(name="celeba", root=str(tmp_path), target="Male", group="Young"))
    assert other.classes == ["not_Male", "Male"] and other.image_size == (18, 18)
    with pytest.raises(ConfigError, match=r"unknown attribute 'Blond_Hair'.*Male, Smiling, Young"):
        load_dataset(DataSpec(name="celeba", root=str(tmp_path), group="Blond_Hair"))


def test_celeba_without_partition_and_bad_lines(tmp_path):
    write_celeba(tmp_path, n=16, partition=False)
    ds = load_dataset(DataSpec(name="celeba", root=str(tmp_path), test_size=0.5, seed=1))
    assert len(ds.train) == 8 and len(ds.test) == 8
    attr = tmp_path / "list_attr_celeba.txt"
    attr.write_text(attr.read_text().replace("000004.jpg 1", "000004.jpg 0"))
    with pytest.raises(DataError, match=r"list_attr_celeba.txt line 6: expected a file name and 3"):
        load_dataset(DataSpec(name="celeba", root=str(tmp_path)))
    with pytest.raises(DataError, match=r"has no list_attr_celeba\.txt"):
        load_dataset(DataSpec(name="celeba", root=str(tmp_path / "img_align_celeba")))


def write_folder(root, n=24):
    """``n`` 12x12 images, label = i % 3, group = 'a' for i < 16 else 'b', region = i % 2."""
    (root / "img").mkdir(parents=True)
    rows = ["path,label,group,region"]
    for i in range(n):
        Image.new("RGB", (12, 12), (10 * i, 5 * i, 255 - 10 * i)).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{['cat', 'dog', 'fox'][i % 3]},{'a' if i < 16 else 'b'},r{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_folder_csv_attributes_split_and_imbalance(tmp_path):
    write_folder(tmp_path)
    ds = load_dataset(DataSpec(name="folder", root=str(tmp_path), test_size=0.25))
    assert ds.classes == ["cat", "dog", "fox"] and ds.group_names == ["a", "b"]
    assert ds.target == "label" and ds.group == "group"
    assert len(ds.train) == 18 and len(ds.test) == 6 and ds.in_channels == 3
    region = load_dataset(
        DataSpec(name="folder", root=str(tmp_path / "labels.csv"), group="region", test_size=0.5)
    )
    assert region.group_names == ["r0", "r1"]
    imbalanced = load_dataset(
        DataSpec(
            name="folder",
            root=str(tmp_path),
            test_size=0.25,
            imbalance=(4, 2, 1),
            options={"grayscale": True, "group_imbalance": [1, 1]},
        )
    )
    assert torch.bincount(imbalanced.train.y).tolist() == [6, 3, 1]
    assert imbalanced.in_channels == 1
    assert torch.equal(imbalanced.test.y, ds.test.y)  # the test split is left alone
    with pytest.warns(UserWarning, match="stratifying by target only"):
        load_dataset(DataSpec(name="folder", root=str(tmp_path), group="region"))


def test_folder_errors_name_the_row(tmp_path):
    write_folder(tmp_path)
    csv = tmp_path / "labels.csv"
    text = csv.read_text()
    csv.write_text(text.replace("img/5.png", "img/missing.png"))
    with pytest.raises(DataError, match=r"labels.csv line 7: image 'img/missing.png' does not"):
        load_dataset(DataSpec(name="folder", root=str(tmp_path)))
    csv.write_text(text.replace("path,label", "file,label"))
    with pytest.raises(DataError, match=r"lacks column\(s\) \['path'\]"):
        load_dataset(DataSpec(name="folder", root=str(tmp_path)))
    csv.write_text(text)
    (tmp_path / "img" / "7.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"cannot decode image img/7\.png"):
        load_dataset(DataSpec(name="folder", root=str(tmp_path)))
    with pytest.raises(ConfigError, match="group_imbalance has 3 ratios but there are 2 values"):
        load_dataset(
            DataSpec(name="folder", root=str(tmp_path), options={"group_imbalance": [1, 2, 3]})
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no image files"):
        load_dataset(DataSpec(name="folder", root=str(empty)))


def test_image_folder_layout_without_csv(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for label in ("x", "y"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(n):
                Image.new("L", (6, 6), 40 * i).save(tmp_path / split / label / f"{i}.jpg")
    (tmp_path / "README.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        counts = get_source("folder").counts(DataSpec(name="folder", root=str(tmp_path)))
    assert counts.to_dict("list") == {
        "split": ["train", "train", "test", "test"],
        "target": ["x", "y", "x", "y"],
        "group": ["x", "y", "x", "y"],
        "n": [4, 4, 2, 2],
    }


def test_cli_datasets_train_with_options_and_audit(tmp_path):
    listing = runner.invoke(app, ["datasets"])
    assert listing.exit_code == 0
    assert all(name in listing.output for name in ("utkface", "fer2013", "celeba", "folder"))
    write_folder(tmp_path / "data")
    counted = runner.invoke(
        app,
        ["datasets", "--dataset", "folder", "--root", str(tmp_path / "data"), "--group", "region"],
    )
    assert counted.exit_code == 0, counted.output
    assert "cat" in counted.output and "r1" in counted.output and "24" in counted.output
    ckpt = tmp_path / "model.pt"
    trained = runner.invoke(
        app,
        [
            "train", "--out", str(ckpt), "--dataset", "folder", "--root", str(tmp_path / "data"),
            "--image-size", "8", "--grayscale", "--model", "cnn", "--width", "4", "--epochs", "1",
            "--batch-size", "4", "--option", "limit=12", "-o", 'group_imbalance=[2, 1]', "--quiet",
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    audited = runner.invoke(
        app, ["audit", "--checkpoint", str(ckpt), "--precisions", "fp32,int4", "--quiet"]
    )
    assert audited.exit_code == 0, audited.output
    assert "int4" in audited.output and "phi(D)" in audited.output
    for i in range(8):
        (tmp_path / "layout" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), i).save(tmp_path / "layout" / "ab"[i % 2] / f"{i}.png")
    (tmp_path / "layout" / "notes.txt").write_text("")
    warned = runner.invoke(
        app, ["datasets", "--dataset", "folder", "--root", str(tmp_path / "layout")]
    )
    assert warned.exit_code == 0 and "warning: " in warned.output
    assert "skipped 1 file(s) that are not images (notes.txt)" in warned.output
    bad = runner.invoke(app, ["datasets", "--dataset", "folder", "--root", str(tmp_path / "no")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
    bad = runner.invoke(app, ["train", "--out", str(ckpt), "--option", "limit"])
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.output
