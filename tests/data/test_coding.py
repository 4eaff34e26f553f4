"""How labels become codes: numeric labels in numeric order, a model's own class order, the
coding a dataset reports, duplicated rows, small groups and the datasets the docs list."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fairquant.cli import app
from fairquant.data import DATASETS, DataSpec, load_dataset
from fairquant.data.base import MIN_TEST_SAMPLES, small_cells
from fairquant.data.catalog import Attribute
from fairquant.errors import ConfigError, DataError

pytestmark = pytest.mark.filterwarnings("ignore:cannot stratify the split by target x group")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "datasets.md"


def write_numbered(root: Path, classes=range(11), per_class=4, csv=False) -> None:
    """``per_class`` 6x6 images of each class ``c`` with gray value ``20 * c``."""
    rows = ["path,label"]
    for c in classes:
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("L", (6, 6), 20 * c).save(root / str(c) / f"{i}.png")
            rows.append(f"{c}/{i}.png,{c}")
    if csv:
        (root / "labels.csv").write_text("\n".join(rows) + "\n")


def _label_of_each_code(data) -> dict[str, int]:
    """The gray value of each class name's images (20 * the number the folder is named)."""
    std, mean = (torch.tensor(v).view(1, -1, 1, 1) for v in (data.std, data.mean))
    x = torch.cat([data.train.x, data.test.x]) * std + mean
    y = torch.cat([data.train.y, data.test.y])
    return {data.classes[c]: round(float(x[y == c].mean()) * 255 / 20) for c in y.unique()}


@pytest.mark.parametrize("csv", [False, True])
def test_numeric_labels_are_coded_in_numeric_order(tmp_path, csv):
    write_numbered(tmp_path, csv=csv)
    data = load_dataset(DataSpec("folder", root=str(tmp_path), test_size=0.5))
    assert data.classes == [str(c) for c in range(11)]
    assert _label_of_each_code(data) == {str(c): c for c in range(11)}


def test_attribute_order_numbers_as_numbers_and_text_as_text():
    numbers = Attribute.from_values(np.array(["10", "2", "1", "2", "-3", "0.5"]))
    assert numbers.names == ["-3", "0.5", "1", "2", "10"]
    assert numbers.codes.tolist() == [4, 3, 2, 3, 0, 1]
    mixed = Attribute.from_values(np.array(["10", "2", "b"]))  # not all numbers: text order
    assert mixed.names == ["10", "2", "b"]
    padded = Attribute.from_values(np.array(["07", "7", "10"]))  # two spellings stay two values
    assert padded.names == ["07", "7", "10"]


def test_class_order_recodes_the_targets_exactly(tmp_path):
    write_numbered(tmp_path, classes=(1, 2, 3))
    data = load_dataset(DataSpec("folder", root=str(tmp_path), test_size=0.34))
    ordered = data.with_class_order(["3", "1", "2"])
    assert ordered.classes == ["3", "1", "2"]
    assert _label_of_each_code(ordered) == {"3": 3, "1": 1, "2": 2}
    assert torch.equal(ordered.train.g, data.train.g)  # groups are untouched (here A = Y)
    order = r"class order \(--classes\)"
    with pytest.raises(ConfigError, match=rf"{order} names '4', which the data lacks"):
        data.with_class_order(["3", "1", "2", "4"])
    with pytest.raises(ConfigError, match=rf"the data's class '2' is not in the {order} 3,1"):
        data.with_class_order(["3", "1"])
    with pytest.raises(ConfigError, match=rf"{order} names '1' twice"):
        data.with_class_order(["3", "1", "1", "2"])


def test_coding_lists_each_code_and_its_name(tmp_path):
    write_numbered(tmp_path, classes=(1, 2))
    data = load_dataset(DataSpec("folder", root=str(tmp_path), test_size=0.5))
    assert data.coding() == {
        "target": "label",
        "classes": {"0": "1", "1": "2"},
        "group": "label",
        "groups": {"0": "1", "1": "2"},
    }


def test_duplicated_csv_row_is_named_as_a_duplicate(tmp_path):
    write_numbered(tmp_path, classes=(1, 2), csv=True)
    csv = tmp_path / "labels.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([*lines, lines[2]]) + "\n")
    with pytest.raises(DataError) as err:
        load_dataset(DataSpec("folder", root=str(tmp_path), test_size=0.5))
    message = str(err.value)
    assert "not found" not in message
    assert re.search(r"line 10: image '1/1\.png' is listed again \(first on line 3\)", message)


def test_small_groups_and_classes_follow_one_rule():
    y = torch.tensor([0] * 30 + [1] * (MIN_TEST_SAMPLES - 1))
    g = torch.tensor([0] * 50 + [1] * 9)
    lines = small_cells(y, g, ["cat", "dog"], ["a", "b", "c"])  # 'c' is empty: noted elsewhere
    assert lines == [
        f"classes with fewer than {MIN_TEST_SAMPLES} test samples (docs/datasets.md): "
        f"'dog' ({MIN_TEST_SAMPLES - 1}); one sample moves an accuracy by up to "
        f"{100 / (MIN_TEST_SAMPLES - 1):.1f} points; read their numbers with their intervals",
        f"groups with fewer than {MIN_TEST_SAMPLES} test samples (docs/datasets.md): 'b' (9); "
        "one sample moves an accuracy by up to 11.1 points; read their numbers with their "
        "intervals",
    ]
    # the group is the target (A = Y): one line; a class without test samples is named too
    (line,) = small_cells(y, y, ["cat", "dog", "eel"], ["cat", "dog", "eel"])
    assert line.startswith("classes (the groups too) with fewer than")
    assert f"'dog' ({MIN_TEST_SAMPLES - 1}), 'eel' (0)" in line
    assert small_cells(torch.zeros(40), torch.zeros(40), ["cat"], ["a"]) == []
    assert f"fewer than {MIN_TEST_SAMPLES} test samples" in DOCS.read_text()


def _documented() -> list[str]:
    return re.findall(r"^\| `(\w+)` \|", DOCS.read_text(), flags=re.M)


def test_every_documented_dataset_is_registered_and_listed():
    documented = _documented()
    assert {"digits", "utkface", "folder", "table"} <= set(documented)
    assert set(documented) == set(DATASETS)
    listing = CliRunner().invoke(app, ["datasets"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0, listing.output
    listed = re.findall(r"^│ (\w+)", listing.output, flags=re.M)
    assert set(documented) <= set(listed), listing.output


def test_cli_datasets_shows_the_coding(tmp_path):
    write_numbered(tmp_path, classes=(1, 2, 10))
    result = CliRunner().invoke(
        app, ["datasets", "--dataset", "folder", "--root", str(tmp_path)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "classes (label): 0=1, 1=2, 2=10" in result.output
    assert "groups (label): 0=1, 1=2, 2=10" in result.output
    rows = tmp_path / "t.csv"
    lines = "".join(f"{i},{i % 2},{'ab'[i % 3 == 0]}\n" for i in range(30))
    rows.write_text("f,label,group\n" + lines)
    table = CliRunner().invoke(
        app, ["datasets", "--dataset", "table", "--root", str(rows)], env={"COLUMNS": "200"}
    )
    assert table.exit_code == 0, table.output
    assert "classes (label): 0=0, 1=1" in table.output
    assert "groups (group): 0=a, 1=b" in table.output
