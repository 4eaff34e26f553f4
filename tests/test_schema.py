"""The results schema: one definition of the columns, and cell labels that read back."""

import pytest

from fairquant.schema import (
    CELL_KEYS,
    COLUMNS,
    RESULT_COLUMNS,
    CellKey,
    cell_label,
    parse_cell_label,
)


@pytest.mark.parametrize(
    "key",
    [
        CellKey("digits", "resnet18", "none", 0),
        CellKey("utkface-imbalanced", "vit_small", "re+balanced-calib", 12),
        CellKey("a_b", "m-_1", "x_1", -1),
        CellKey("cifar10", "cnn", "weighted:1,2,3", 3),
        CellKey("d", "m", "focal:2.5", 7),
    ],
)
def test_cell_label_round_trip(key):
    label = cell_label(*key)
    assert parse_cell_label(label) == key
    assert cell_label(*parse_cell_label(label)) == label


@pytest.mark.parametrize(
    "stem", ["curvature", "a__b__seed1", "a__b__c__seedx", "a__b__c__d__seed1"]
)
def test_other_stems_are_not_cell_labels(stem):
    assert parse_cell_label(stem) is None


@pytest.mark.parametrize(
    "parts", [("a__b", "m", "none"), ("d", "", "none"), ("d", "m", "x__y"), ("d", "m_", "none")]
)
def test_a_label_part_that_would_not_read_back_is_refused(parts):
    with pytest.raises(ValueError, match="key"):
        cell_label(*parts, 0)


def test_run_columns_are_the_cell_keys_then_the_audit_columns():
    assert [*CELL_KEYS, *COLUMNS] == RESULT_COLUMNS
    assert list(CellKey._fields) == CELL_KEYS
