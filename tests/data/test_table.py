"""The ``table`` dataset: numeric features with a label and a group column (CSV or Parquet)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

from fairquant.data import DataSpec, load_dataset
from fairquant.errors import ConfigError, DataError


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.normal(40, 10, n).round(1),
            "income": rng.normal(3.0, 1.0, n).round(3),
            "label": np.arange(n) % 2,
            "group": np.where(np.arange(n) % 4 < 2, "f", "m"),
            "note": ["text"] * n,  # not numeric: not a feature
        }
    )


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "people.csv"
    _frame().to_csv(path, index=False)
    return path


def test_csv_features_label_and_group(csv):
    data = load_dataset(DataSpec("table", root=str(csv), seed=0))
    assert data.classes == ["0", "1"]
    assert data.group_names == ["f", "m"]
    assert data.train.x.shape == (32, 2) and data.test.x.shape == (8, 2)
    # standardized by the training split (each feature mean 0, std 1 there)
    torch.testing.assert_close(data.train.x.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    frame = _frame()
    raw = data.test.x * torch.tensor(data.std) + torch.tensor(data.mean)
    ages = frame["age"].to_numpy()[None]
    assert np.isclose(raw[:, :1].numpy(), ages, atol=1e-3).any(1).all()  # rows of the table


def test_split_column_and_raw_features(tmp_path):
    frame = _frame(12)
    frame["split"] = ["train"] * 8 + ["test"] * 4
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    data = load_dataset(
        DataSpec("table", root=str(path), options={"standardize": False, "features": ["income"]})
    )
    assert len(data.train) == 8 and len(data.test) == 4
    np.testing.assert_allclose(data.test.x[:, 0].numpy(), frame["income"][8:].to_numpy(), 1e-6)


def test_target_and_group_columns_by_name(csv):
    data = load_dataset(DataSpec("table", root=str(csv), target="group", group="label"))
    assert data.classes == ["f", "m"] and data.group_names == ["0", "1"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"target": "outcome"}, r"lacks column\(s\) \['outcome'\]"),
        ({"group": "sex"}, r"lacks column\(s\) \['sex'\]"),
    ],
)
def test_missing_label_or_group_column(csv, spec, message):
    with pytest.raises(DataError, match=message) as err:
        load_dataset(DataSpec("table", root=str(csv), **spec))
    assert str(csv) in str(err.value)


def test_a_group_column_with_one_group(tmp_path):
    frame = _frame()
    frame["group"] = "f"
    path = tmp_path / "one.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"group column 'group' has one value only \('f'\)"):
        load_dataset(DataSpec("table", root=str(path)))


def test_bad_feature_value_names_its_row(tmp_path):
    frame = _frame().astype({"income": object})
    frame.loc[5, "income"] = "n/a"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"row 6: feature column 'income' is 'n/a'"):
        load_dataset(DataSpec("table", root=str(path), options={"features": ["age", "income"]}))
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['colour'\]"):
        load_dataset(DataSpec("table", root=str(path), options={"colour": 1}))


def test_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "people.parquet"
    _frame().to_parquet(path)
    data = load_dataset(DataSpec("table", root=str(path)))
    assert data.train.x.shape[1] == 2 and data.group_names == ["f", "m"]


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "people.parquet"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError, match=r"pip install 'fairquant\[parquet\]'"):
        load_dataset(DataSpec("table", root=str(path)))


@pytest.mark.parametrize("cell", ["", "n/a", "inf"])
def test_one_bad_cell_is_an_error_not_a_dropped_column(tmp_path, cell):
    frame = _frame().astype({"income": object})
    frame.loc[5, "income"] = cell
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as err:  # no features named: the column must not vanish
        load_dataset(DataSpec("table", root=str(path)))
    assert f"row 6: feature column 'income' is {cell!r}" in str(err.value)
    assert "drop_bad_rows" in str(err.value)


def test_bad_rows_are_dropped_only_when_asked_and_counted(tmp_path):
    frame = _frame().astype({"income": object, "age": object})
    frame.loc[5, "income"] = ""
    frame.loc[7, "age"] = "?"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.warns(UserWarning, match=r"dropped 2 of 40 rows .*rows 6, 8"):
        data = load_dataset(
            DataSpec("table", root=str(path), options={"drop_bad_rows": True}, test_size=0.25)
        )
    assert len(data.train) + len(data.test) == 38
    assert data.train.x.shape[1] == 2 and data.features == ["age", "income"]


def test_a_column_without_numbers_is_not_a_feature_and_features_are_recorded(csv):
    from fairquant import audit

    data = load_dataset(DataSpec("table", root=str(csv)))
    assert data.features == ["age", "income"]  # 'note' holds no number
    assert data.coding()["classes"] == {"0": "0", "1": "1"}
    torch.manual_seed(0)
    result = audit(torch.nn.Linear(2, 2), data, precisions="fp32", n_bootstrap=0)
    assert result.record["data"]["features"] == ["age", "income"]
    assert result.record["data"]["coding"]["groups"] == {"0": "f", "1": "m"}
