"""bench/gpu.sh --dry-run: the GPU check's every step, at a tiny size on the CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_dry_run(tmp_path):
    pytest.importorskip("curvlinops", reason="the curvature step compares with curvlinops")
    pytest.importorskip("pyhessian", reason="the curvature step compares with PyHessian")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for i, what in enumerate(("environment", "train", "audit", "evaluation", "curvature"), 1):
        assert f"== [{i}/5] {what}" in out
    assert "trained in" in out and "img/s" in out
    for name in ("fp32", "fp16", "bf16", "int8", "int4"):
        assert f"{name:>5} on cpu: accuracy" in out
    assert "curvlinops Hutch++" in out and "PyHessian" in out
    assert "all 5 steps passed" in out
    assert (tmp_path / "audit" / "results.csv").is_file()


def test_gpu_script_refuses_unknown_arguments():
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--fast"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "unknown argument --fast" in done.stderr
