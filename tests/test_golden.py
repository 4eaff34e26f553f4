"""The quickstart's numbers are a golden copy: a refactor that changes them fails here.

`tests/golden/quickstart_results.csv` is `fairquant quickstart --bootstrap 0` (deterministic: seeded
training, no bootstrap) on 2 threads: another thread count sums in another order, and 30 epochs
of training turn that rounding into other weights, so the test runs on 2 threads whatever the
environment says. Keys and metric names must match exactly; values to float rounding, so that
a different summation order (thread count) cannot fail it while any real change of a prediction or
a loss does. Regenerate it only for an intended change, and say why in the commit:

    fairquant quickstart --out /tmp/qs --bootstrap 0 -q
    cp /tmp/qs/results.csv tests/golden/quickstart_results.csv
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from typer.testing import CliRunner

from fairquant.cli import app

GOLDEN = Path(__file__).parent / "golden" / "quickstart_results.csv"


def test_quickstart_results_equal_the_golden_copy(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = CliRunner().invoke(
            app, ["quickstart", "--out", str(tmp_path), "--bootstrap", "0", "-q"]
        )
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    got = pd.read_csv(tmp_path / "results.csv", dtype={"precision": str, "group": str})
    want = pd.read_csv(GOLDEN, dtype={"precision": str, "group": str})
    keys = ["method", "precision", "bits", "group", "metric"]
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got[keys], want[keys])
    for column in ("value", "ci_low", "ci_high"):
        assert np.allclose(got[column], want[column], rtol=1e-6, atol=1e-9, equal_nan=True), column
