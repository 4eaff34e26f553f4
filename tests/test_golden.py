"""The quickstart's numbers are a golden copy: a refactor that changes them fails here.

`tests/golden/quickstart_results.csv` is `fairquant quickstart --bootstrap 0` (deterministic: seeded
training, no bootstrap) on 2 threads with the CPU kernels held to AVX2. Thirty epochs of training
turn any change of summation order into other weights, and both the thread count and the
instruction set choose the order: the same code gave accuracies 100 points apart on one AVX-512
machine with and without the AVX2 cap, and with the cap it reproduced a copy made on an AVX2
machine exactly. So the test runs the command in a fresh process (the kernels are chosen when
torch loads) under `PINNED`, on any x86-64 machine. Keys and metric names must match exactly;
values to float rounding. Regenerate it only for an intended change, and say why in the commit:

    env OMP_NUM_THREADS=2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \\
        MKL_ENABLE_INSTRUCTIONS=AVX2 fairquant quickstart --out /tmp/qs --bootstrap 0 -q
    cp /tmp/qs/results.csv tests/golden/quickstart_results.csv
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

GOLDEN = Path(__file__).parent / "golden" / "quickstart_results.csv"
PINNED = {
    "OMP_NUM_THREADS": "2",
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorised kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # convolutions
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # matrix products
}


@pytest.mark.skipif(
    platform.machine().lower() not in {"x86_64", "amd64"},
    reason="the golden copy was computed with x86-64 AVX2 kernels",
)
def test_quickstart_results_equal_the_golden_copy(tmp_path):
    command = [
        sys.executable,
        "-c",
        "from fairquant.cli import main; main()",
        "quickstart",
        "--out",
        str(tmp_path),
        "--bootstrap",
        "0",
        "-q",
    ]
    done = subprocess.run(
        command, env={**os.environ, **PINNED}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    got = pd.read_csv(tmp_path / "results.csv", dtype={"precision": str, "group": str})
    want = pd.read_csv(GOLDEN, dtype={"precision": str, "group": str})
    keys = ["method", "precision", "bits", "group", "metric"]
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got[keys], want[keys])
    for column in ("value", "ci_low", "ci_high"):
        assert np.allclose(got[column], want[column], rtol=1e-6, atol=1e-9, equal_nan=True), column
