"""The repair study's two benches run end to end on a tiny checkpoint (the commands of
docs/findings/repair.md, on small data): NNCF's accuracy control three ways beside
``fairquant.repair``, and the exhaustive search restricted to one configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("nncf")
pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from fairquant.cli import app

    path = tmp_path_factory.mktemp("bench") / "m.pt"
    args = ["train", "--out", str(path), "--model", "cnn", "--width", "2", "--epochs", "1"]
    r = CliRunner().invoke(app, [*args, "--image-size", "8", "--val-size", "0.2", "--quiet"])
    assert r.exit_code == 0, r.output
    return path


def _run(script: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_repair_bench_writes_nncf_and_fairquant_rows(checkpoint, tmp_path):
    out = tmp_path / "r.csv"
    _run("repair.py", "--checkpoint", str(checkpoint), "--max-drop", "99", "--out", str(out))
    table = pd.read_csv(out).set_index("method")
    for metric in ("overall accuracy", "worst-group accuracy", "per-group drop"):
        assert table.loc[f"NNCF accuracy control ({metric})"].val_within
    chosen = table[table.index.str.startswith("fairquant repair (chosen)")]
    assert len(chosen) == 2 and chosen.val_within.all()  # openvino:int8 and ort:int8


def test_exhaustive_bench_compares_with_every_candidate(checkpoint, tmp_path):
    out = tmp_path / "e.csv"
    options = ["--configs", "ort:int8", "--calibration-sets", "random", "--max-drop", "99"]
    _run("repair_exhaustive.py", "--checkpoint", str(checkpoint), "--precision", "ort:int8",
         *options, "--out", str(out))  # fmt: skip
    table = pd.read_csv(out)
    measured, chosen = table.iloc[:-1], table.iloc[-1]
    assert len(measured) == 2**5 - 1 and measured.within.all()  # 5 layers, all subsets but one
    assert chosen.calibration_set == "fairquant repair (chosen)"
    assert chosen.size_bytes <= 1.1 * measured.size_bytes.min()
