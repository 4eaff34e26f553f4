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


STUB = """#!/usr/bin/env bash
# A stand-in interpreter: the requirements import fails until pip has run; pip is logged.
if [[ "$1" == "-m" && "$2" == "pip" ]]; then echo "$*" >> "$LOG"; touch "$LOG.installed"; exit 0; fi
if [[ "$1" == "-c" && "$2" == import* ]]; then [[ -e "$LOG.installed" ]]; exit $?; fi
echo "step ran: $*" >> "$LOG"; exit 1
"""


@pytest.mark.parametrize("dry", [["--dry-run"], []])
def test_gpu_script_installs_the_bench_extra_before_its_first_step(tmp_path, dry):
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    log = tmp_path / "log"
    env = {**os.environ, "PYTHON": str(stub), "LOG": str(log)}
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), *dry, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    out = done.stdout
    assert out.index("== [0/5] requirements") < out.index("== [1/5] environment"), out
    lines = log.read_text().splitlines()
    assert lines[0] == "-m pip install -q -e .[bench]"  # before any step ran
    assert lines[1].startswith("step ran: -")  # then step 1 (the stub fails it)
    assert done.returncode != 0


def test_gpu_script_stops_at_the_requirements_when_they_cannot_be_installed(tmp_path):
    stub = tmp_path / "python"
    stub.write_text("#!/usr/bin/env bash\nexit 1\n")  # imports and pip both fail
    stub.chmod(0o755)
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(stub)},
        timeout=60,
    )
    assert done.returncode == 2 and "== [1/5]" not in done.stdout
    assert "pip install -e '.[bench]'" in done.stderr
