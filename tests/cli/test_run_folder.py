"""One run per output folder: checks before compute, staging, run ids, busy folders, signals.

A run folder holds one complete run of a command or the previous one untouched: every file the
run wrote is listed, with its SHA-256, in ``run.json``, and ``audit.json``, ``verdict.json`` and
the JUnit report carry the same run id and command line. The fault test kills audits (SIGTERM and
SIGKILL) at several delays and checks, after each kill and after a last complete audit, that the
folder holds exactly one complete run that ``fairquant report`` reads, and that no temporary
folder is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairquant.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A 2-channel CNN trained one epoch on 8x8 digits (seconds)."""
    ck = tmp_path_factory.mktemp("runfolder") / "m.pt"
    args = ["--model", "cnn", "--width", "2", "--epochs", "1", "--image-size", "8", "--quiet"]
    r = runner.invoke(app, ["train", "--out", str(ck), *args])
    assert r.exit_code == 0, r.output
    return ck


def audit(checkpoint: Path, out: Path, *options: str):
    args = ["audit", "--checkpoint", str(checkpoint), "--out", str(out), "--quiet"]
    return runner.invoke(app, [*args, "--bootstrap", "0", *options])


def one_complete_run(folder: Path) -> dict:
    """The folder's ``run.json`` after checking that it describes exactly what the folder holds:
    every file listed with its hash, nothing else, and the same run id in every file."""
    manifest = json.loads((folder / "run.json").read_text())
    assert manifest["schema"] == "fairquant.run/1"
    files = manifest["files"]
    held = sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != "run.json"
    )
    assert held == sorted(files), (held, files)
    for name, digest in files.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    run = {"id": manifest["id"], "command": manifest["command"]}
    record = json.loads((folder / "audit.json").read_text())
    assert record["run"] == run
    if "verdict.json" in files:
        assert json.loads((folder / "verdict.json").read_text())["run"] == run
        suites = ET.parse(folder / "verdict.junit.xml").getroot()
        for suite in suites:
            props = {p.get("name"): p.get("value") for p in suite.iter("property")}
            assert props["fairquant.run_id"] == run["id"]
            assert json.loads(props["fairquant.command"]) == run["command"]
    assert ("--max-drop" in run["command"]) == ("verdict.json" in files)
    from fairquant.report.rundir import load_run

    precisions = set(load_run(folder).results.precision)  # what `fairquant report` reads
    assert precisions == set(record["precisions"])
    return manifest


def leftovers(folder: Path) -> list[str]:
    """Staging folders, locks or scratch beside ``folder`` (anything but the folder itself)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


def test_a_rerun_replaces_the_whole_run(checkpoint, tmp_path):
    out = tmp_path / "out"
    first = audit(checkpoint, out, "--precisions", "fp32,int8", "--max-drop", "50")
    assert first.exit_code == 0, first.output
    a = one_complete_run(out)
    assert (out / "verdict.json").is_file()
    second = audit(checkpoint, out, "--precisions", "fp32,int4")  # no --max-drop: no verdict
    assert second.exit_code == 0, second.output
    b = one_complete_run(out)
    assert not (out / "verdict.json").exists() and not (out / "verdict.junit.xml").exists()
    assert a["id"] != b["id"] and leftovers(out) == []


def test_run_id_and_command_in_every_file(checkpoint, tmp_path):
    out = tmp_path / "out"
    r = audit(checkpoint, out, "--precisions", "fp32,int8", "--max-drop", "50")
    assert r.exit_code == 0, r.output
    manifest = one_complete_run(out)
    assert {"results.csv", "audit.json", "verdict.json", "verdict.junit.xml"} <= set(
        manifest["files"]
    )
    assert manifest["command"][:2] == ["fairquant", "audit"] or "audit" in manifest["command"]


def test_a_rerun_keeps_files_no_run_wrote(checkpoint, tmp_path):
    """The default folder of an audit is the checkpoint's: its other files are never touched."""
    folder = tmp_path / "shared"
    folder.mkdir()
    ck = folder / "m.pt"
    ck.write_bytes(checkpoint.read_bytes())
    (folder / "notes.txt").write_text("mine\n")
    (folder / "verdict.json").write_text("{}\n")  # an earlier fairquant's verdict: replaced
    (folder / "report.html").write_text("<p>of an earlier run</p>\n")  # stale: removed
    r = runner.invoke(
        app, ["audit", "--checkpoint", str(ck), "-q", "--bootstrap", "0", "--precisions", "int8"]
    )
    assert r.exit_code == 0, r.output
    assert (folder / "notes.txt").read_text() == "mine\n" and ck.is_file()
    assert not (folder / "verdict.json").exists() and not (folder / "report.html").exists()
    manifest = json.loads((folder / "run.json").read_text())
    assert "m.pt" not in manifest["files"] and "notes.txt" not in manifest["files"]
    assert leftovers(folder) == []


def _only_line(r) -> str:
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


def test_unknown_group_refused_before_anything_is_written(checkpoint, tmp_path):
    out = tmp_path / "out"
    r = audit(checkpoint, out, "--precisions", "int8", "--max-drop", "2", "--max-drop", "nine=1")
    assert r.exit_code == 2
    assert "'nine'" in _only_line(r)
    assert not out.exists() and leftovers(out) == []


def test_unknown_group_refused_before_quickstart_trains(tmp_path):
    out = tmp_path / "qs"
    start = time.perf_counter()
    r = runner.invoke(app, ["quickstart", "--out", str(out), "-q", "--max-drop", "nine=1"])
    assert r.exit_code == 2 and "'nine'" in _only_line(r)
    assert time.perf_counter() - start < 20  # refused before 30 epochs of training
    assert not out.exists() and leftovers(out) == []


def test_bad_precision_refused_before_quickstart_trains(tmp_path):
    out = tmp_path / "qs"
    r = runner.invoke(app, ["quickstart", "--out", str(out), "-q", "--precisions", "int8,int99"])
    assert r.exit_code == 2 and "int99" in _only_line(r)
    assert not out.exists()


def test_a_toolchain_that_cannot_run_here_is_refused_before_quickstart_trains(tmp_path):
    import torch

    from fairquant.errors import ConfigError
    from fairquant.quant.torchao import TorchaoConfig, quantize_torchao

    pytest.importorskip("torchao")
    try:
        layer = torch.nn.Sequential(torch.nn.Linear(256, 8))
        quantize_torchao(TorchaoConfig("int4wo", 32), layer, torch.zeros(1, 256))
    except ConfigError:
        pass
    else:
        pytest.skip("torchao's int4 runs on this machine")
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "-q", "--precisions", "int8,torchao:int4wo-g32"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "torchao:int4wo" in _only_line(r)  # nothing trained first
    assert not out.exists()


def test_out_that_is_a_file_is_refused_before_the_audit(checkpoint, tmp_path):
    out = tmp_path / "results"
    out.write_text("not a folder\n")
    r = audit(checkpoint, out, "--precisions", "int8")
    assert r.exit_code == 2
    line = _only_line(r)
    assert "--out" in line and repr(str(out)) in line and "folder" in line
    assert out.read_text() == "not a folder\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_out_is_refused_before_the_audit(checkpoint, tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        r = audit(checkpoint, parent / "out", "--precisions", "int8")
    finally:
        parent.chmod(0o700)
    assert r.exit_code == 2
    line = _only_line(r)
    assert "--out" in line and repr(str(parent / "out")) in line and "writable" in line


def test_a_busy_folder_is_refused(checkpoint, tmp_path):
    """A folder another live run is writing (its lock held) is refused with one line."""
    from fairquant._io import run_folder

    out = tmp_path / "out"
    with run_folder(out, command=["test"]):
        r = audit(checkpoint, out, "--precisions", "int8")
        assert r.exit_code == 2
        line = _only_line(r)
        assert "--out" in line and "being written" in line and f"pid {os.getpid()}" in line
    assert one_complete_run_files(out) == set()


@pytest.mark.parametrize("command", ["explain", "mitigate"])
def test_commands_that_add_to_a_folder_refuse_a_busy_one(checkpoint, tmp_path, command):
    """`explain` writes beside an audit and `mitigate` resumes a run directory: they do not
    replace the folder, but a live run into it is refused before anything is computed."""
    from fairquant._io import locked_folder

    out = tmp_path / "out"
    args = {"explain": ["--checkpoint", str(checkpoint)], "mitigate": ["--epochs", "1"]}[command]
    with locked_folder(out):
        r = runner.invoke(app, [command, *args, "--out", str(out), "-q"])
    assert r.exit_code == 2 and "being written" in _only_line(r)
    (tmp_path / "file").write_text("x\n")
    r = runner.invoke(app, [command, *args, "--out", str(tmp_path / "file"), "-q"])
    assert r.exit_code == 2 and "is a file" in _only_line(r)


def one_complete_run_files(folder: Path) -> set[str]:
    return set(json.loads((folder / "run.json").read_text())["files"])


# ---- killed runs ----------------------------------------------------------------------------

#: Runs `fairquant audit` in a fresh process with pauses injected by this test (never by the
#: package): after each precision's evaluation and after each file written it prints a mark
#: (``FQ-STEP name``) and sleeps, so a kill sent on a mark lands at that point of the run:
#: computing (a deployed artifact in its temporary folder), or with some files written.
WRAPPER = """
import os, sys, time
pause = float(os.environ["FQ_TEST_PAUSE"])
import fairquant._audit.run as A
import fairquant.report.verdict as V
def paused(f):
    def g(*a, **k):
        r = f(*a, **k)
        print("FQ-STEP", f.__name__, flush=True)
        time.sleep(pause)
        return r
    return g
A._evaluate = paused(A._evaluate)
A.AuditResult.to_csv = paused(A.AuditResult.to_csv)
A.AuditResult.write_record = paused(A.AuditResult.write_record)
V.write_verdict_json = paused(V.write_verdict_json)
V.write_junit = paused(V.write_junit)
from fairquant.cli import main
sys.argv[0] = "fairquant"
main()
"""


def _start(checkpoint: Path, out: Path, tmp: Path, options: list[str]) -> subprocess.Popen:
    env = {**os.environ, "FQ_TEST_PAUSE": "0.5", "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    args = ["audit", "--checkpoint", str(checkpoint), "--out", str(out), "-q", "--bootstrap", "0"]
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *args, *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _kill_on(proc: subprocess.Popen, step: str, count: int, sig: signal.Signals) -> str:
    """Send ``sig`` when the run prints its ``count``-th mark ``step``; its whole output."""
    assert proc.stdout is not None
    seen, lines = 0, []
    for line in proc.stdout:
        lines.append(line)
        seen += line.split() == ["FQ-STEP", step]
        if seen == count:
            proc.send_signal(sig)
            break
    return "".join(lines) + proc.communicate(timeout=120)[0]


#: Two audits that differ in every file: precisions, and whether a verdict is written. The
#: third precision is deployed: its artifact is saved in a temporary folder.
RUNS = (
    ["--precisions", "fp32,int8,torch:int8", "--max-drop", "50"],
    ["--precisions", "fp32,int4,torch:int8"],
)
#: Where the runs are killed: (signal, mark, its count, the run's options).
KILLS = (
    (signal.SIGTERM, "_evaluate", 3, RUNS[1]),  # computing: torch:int8 evaluated
    (signal.SIGTERM, "write_record", 1, RUNS[0]),  # results.csv and audit.json staged
    (signal.SIGKILL, "to_csv", 1, RUNS[1]),  # results.csv staged
    (signal.SIGKILL, "write_junit", 1, RUNS[0]),  # every file staged, not yet moved
)


def test_killed_audits_leave_one_complete_run(checkpoint, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "runs" / "out"
    first = audit(checkpoint, out, *RUNS[0])
    assert first.exit_code == 0, first.output
    ids = [one_complete_run(out)["id"]]
    for sig, step, count, options in KILLS:
        proc = _start(checkpoint, out, tmp, options)
        output = _kill_on(proc, step, count, sig)
        what = f"{sig.name} after {step} #{count}: exit {proc.returncode}\n{output}"
        assert one_complete_run(out)["id"] == ids[0], what  # the previous run, untouched
        if sig == signal.SIGTERM:  # cleaned up on the way out
            assert proc.returncode == 128 + sig, what
            assert leftovers(out) == [] and sorted(os.listdir(tmp)) == [], what
        else:
            assert proc.returncode == -sig and leftovers(out), what  # its staging folder
    last = audit(checkpoint, out, *RUNS[1])  # a complete audit after the kills
    assert last.exit_code == 0, last.output
    assert one_complete_run(out)["id"] not in ids
    assert leftovers(out) == [] and sorted(os.listdir(tmp)) == []


@pytest.mark.parametrize("command", ["train", "allocate"])
def test_an_output_file_that_is_a_folder_is_refused_before_compute(checkpoint, tmp_path, command):
    """`train` and `allocate` write one file (atomically): a folder there is refused first."""
    args = {
        "train": ["--model", "cnn", "--width", "2", "--epochs", "1", "--image-size", "8", "-q"],
        "allocate": ["--checkpoint", str(checkpoint), "--budget", "4bits"],
    }[command]
    r = runner.invoke(app, [command, *args, "--out", str(tmp_path)])
    assert r.exit_code == 2
    line = _only_line(r)
    assert "--out" in line and repr(str(tmp_path)) in line and "is a folder" in line


def test_a_folder_whose_parent_cannot_be_written_is_staged_inside_it(tmp_path, monkeypatch):
    """A home folder, say: the lock and staging folder go inside it, files move one by one."""
    import fairquant._io as io

    out = tmp_path / "home"
    out.mkdir()
    (out / "mine.txt").write_text("mine\n")
    access = os.access
    monkeypatch.setattr(io.os, "access", lambda p, mode: Path(p) != tmp_path and access(p, mode))
    for text in ("first\n", "second\n"):
        with io.run_folder(out, command=["test"]) as run:
            assert run.stage.parent == out and (out / ".fairquant-lock").is_file()
            (run.stage / "results.csv").write_text(text)
        assert (out / "results.csv").read_text() == text
        assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "results.csv", "run.json"]
    assert one_complete_run_files(out) == {"results.csv"}


def test_a_tolerance_with_nothing_to_judge_is_refused_before_quickstart_trains(tmp_path):
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "-q", "--precisions", "fp32", "--max-drop", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--precisions 'fp32' lists none" in _only_line(r)
    assert not out.exists()


def test_quickstart_of_fp32_alone_trains_and_judges_nothing(tmp_path):
    # it used to train, write the checkpoint and then end with "nothing to judge" (exit 2)
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "-q", "--precisions", "fp32"]
    r = runner.invoke(app, [*args, "--epochs", "1", "--width", "2", "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    assert (out / "checkpoint.pt").is_file() and (out / "results.csv").is_file()
    assert not (out / "verdict.json").exists()
