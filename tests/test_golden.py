"""The quickstart's numbers are a golden copy: a refactor that changes them fails here.

`tests/golden/quickstart_results*.csv` is `fairquant quickstart --bootstrap 0` (deterministic:
seeded training, no bootstrap) on 2 threads with the CPU kernels held to AVX2. Thirty epochs of
training turn any change of summation order into other weights, and the thread count, the
instruction set and the processor all choose the order: the same code gave accuracies 100 points
apart on one AVX-512 machine with and without the AVX2 cap; with the cap an AMD EPYC reproduced a
copy made on an AVX2 machine exactly, while an Intel Xeon (family 6, model 207) under the same cap
gives other weights, the same for the code before and after a change (measured: byte-identical
files at 253a24f and after issue 25's changes). So the test runs the command in a fresh process
(the kernels are chosen when torch loads) under `PINNED`, and compares with the copy made on this
processor (`quickstart_results.<vendor>-<family>-<model>.csv`), or the default copy where none is.
Keys and metric names must match exactly; values to float rounding. Regenerate a copy only for an
intended change, or add one for a new processor after checking that the code before the change
gives the same file there, and say why in the commit:

    env OMP_NUM_THREADS=2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \\
        MKL_ENABLE_INSTRUCTIONS=AVX2 fairquant quickstart --out /tmp/qs --bootstrap 0 -q
    cp /tmp/qs/results.csv tests/golden/quickstart_results.csv  # or the processor's copy
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

GOLDEN = Path(__file__).parent / "golden"
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
def processor() -> str:
    """``<vendor>-<family>-<model>`` of this machine's CPU (Linux), or ``unknown``."""
    info = {}
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    if not info.get("vendor_id"):
        return "unknown"
    return "-".join(info.get(k, "?") for k in ("vendor_id", "cpu family", "model"))


def golden_copy() -> Path:
    """This processor's golden copy where one was made, else the default one."""
    own = GOLDEN / f"quickstart_results.{processor()}.csv"
    return own if own.is_file() else GOLDEN / "quickstart_results.csv"


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
    want = pd.read_csv(golden_copy(), dtype={"precision": str, "group": str})
    keys = ["method", "precision", "bits", "group", "metric"]
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got[keys], want[keys])
    for column in ("value", "ci_low", "ci_high"):
        assert np.allclose(got[column], want[column], rtol=1e-6, atol=1e-9, equal_nan=True), column
