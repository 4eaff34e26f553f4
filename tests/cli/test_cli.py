"""The command line end to end, on a tiny budget."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fairquant.cli import app
from fairquant.models import ModelSpec
from fairquant.train import load_checkpoint

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def tiny_checkpoint(folder: Path) -> Path:
    """`fairquant train` on 8x8 digits with a 2-channel CNN for one epoch."""
    ck = folder / "m.pt"
    args = ["--model", "cnn", "--width", "2", "--epochs", "1", "--image-size", "8", "--quiet"]
    assert invoke("train", "--out", str(ck), *args).exit_code == 0
    # the spec records an image size only for architectures that take one (a ViT's), as
    # `mitigate` and `run` record it (models.registry.sized_for)
    assert load_checkpoint(ck).model_spec == ModelSpec("cnn", 2)
    return ck


def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    r = invoke(
        "quickstart",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--width",
        "4",
        "--precisions",
        "fp32,fp16,int8,int4,int2",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    assert "phi(D)" in r.output and "int4" in r.output
    assert 0 <= r.output.index("Verdict") < r.output.index("phi(D)")  # default tolerance, first
    assert {p.name for p in out.iterdir()} == {
        "run.json",
        "checkpoint.pt",
        "results.csv",
        "group_accuracy.png",
        "audit.json",
        "verdict.json",
        "verdict.junit.xml",
    }
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns)[:6] == ["method", "precision", "bits", "group", "metric", "value"]
    assert set(table.precision) == {"fp32", "fp16", "int8", "int4", "int2"}
    assert set(table.group) == {*map(str, range(10)), "all"}
    phi = table[(table.metric == "phi") & (table.group == "all")]
    assert len(phi) == 5 and (phi.value >= 0).all()
    assert not table.value.isna().any()
    assert (out / "group_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "audit.json").read_text())  # written in staging, named in place
    assert record["model"]["name"] == str(out / "checkpoint.pt")
    assert record["run"]["id"] == json.loads((out / "run.json").read_text())["id"]


def test_train_then_audit(tmp_path):
    ck = tmp_path / "m.pt"
    r = invoke(
        "train",
        "--out",
        str(ck),
        "--dataset",
        "digits",
        "--imbalance",
        "paper",
        "--model",
        "cnn",
        "--width",
        "4",
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    r = invoke("audit", "--checkpoint", str(ck), "--precisions", "fp32,int8,int3", "--quiet")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "results.csv")
    assert set(table.precision) == {"fp32", "int8", "int3"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--out", "x.pt", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["train", "--out", "x.pt", "--model", "vgg99"], "unknown model 'vgg99'"),
        (["train", "--out", "x.pt", "--imbalance", "a,b"], "--imbalance 'a,b'"),
        (["train", "--out", "x.pt", "-o", "bad"], "--option 'bad': expected KEY=VALUE"),
        (["datasets", "--dataset", "digits", "-o", "=1"], "--option '=1': expected KEY=VALUE"),
        (["mitigate", "--out", "o", "--imbalance", "zz"], "--imbalance 'zz': expected 'paper'"),
        (["audit", "--checkpoint", "missing.pt"], "missing.pt does not exist"),
    ],
)
def test_clear_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert message in " ".join(r.output.split())
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["train", "--out", "x.pt"], "--seed"),  # train's --seed seeds the split too
        (["mitigate", "--out", "o"], "--data-seed"),
        (["datasets", "--dataset", "digits"], "--data-seed"),
    ],
)
def test_a_library_error_names_the_commands_flag(tmp_path, monkeypatch, args, flag):
    """An error naming a data option's library parameter shows the command's own flag."""
    from fairquant.data import DataSpec
    from fairquant.errors import ConfigError

    def refuse(options):
        raise ConfigError(f"seed {options.seed}: expected an odd split seed", parameter="seed")

    monkeypatch.setattr(DataSpec, "from_options", refuse)
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and f"error: {flag} 0: expected an odd split seed" in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("precision", ["int1", "int17"])
def test_bits_outside_range(tmp_path, precision):
    ck = tiny_checkpoint(tmp_path)
    r = runner.invoke(app, ["audit", "--checkpoint", str(ck), "--precisions", precision])
    assert r.exit_code == 2 and "integer bits must lie in 2..16" in r.output


def test_foreign_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    r = runner.invoke(app, ["audit", "--checkpoint", str(path)])
    assert r.exit_code == 2 and "not a fairquant checkpoint" in " ".join(r.output.split())


def test_audit_with_qat_and_mixed_precision(tmp_path):
    ck = tiny_checkpoint(tmp_path)
    r = invoke(
        "audit",
        "--checkpoint",
        str(ck),
        "--precisions",
        "int8,int4-fl8",
        "--method",
        "qat",
        "--qat-epochs",
        "1",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "results.csv")
    assert set(table[table.precision != "fp32"].method) == {"qat"}
    r = runner.invoke(
        app, ["audit", "--checkpoint", str(ck), "--precisions", "fp16", "--method", "qat"]
    )
    assert r.exit_code == 2 and "integer weight-only precisions" in " ".join(r.output.split())


def test_allocate_then_audit_the_spec(tmp_path):
    ck = tiny_checkpoint(tmp_path)
    spec = tmp_path / "alloc.json"
    r = invoke(
        "allocate",
        "--checkpoint",
        str(ck),
        "--out",
        str(spec),
        "--budget",
        "4bits",
        "--objective",
        "loss",
        "--samples",
        "4",
        "--bits",
        "2,4,8",
    )
    assert r.exit_code == 0, r.output
    r = invoke("audit", "--checkpoint", str(ck), "--precisions", f"int4,@{spec}", "--quiet")
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "results.csv")
    assert set(table.precision) == {"fp32", "int4", "alloc"}


def test_a_checkpoint_whose_data_changed_is_refused_by_every_command(tmp_path):
    ck = tiny_checkpoint(tmp_path)
    payload = torch.load(ck, weights_only=True)
    payload["dataset"]["classes"] = payload["dataset"]["classes"][::-1]  # same groups
    torch.save(payload, ck)
    for args in (
        ["audit", "--checkpoint", str(ck), "--precisions", "int8"],
        ["explain", "--checkpoint", str(ck)],
        ["allocate", "--checkpoint", str(ck), "--out", str(tmp_path / "a.json")],
    ):
        r = runner.invoke(app, [*args, "--quiet"] if args[0] == "audit" else args)
        assert r.exit_code == 2, (args, r.output)
        assert "no longer matches it: classes" in " ".join(r.output.split()), args


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--out", "x.pt", "--optimizer", "adam"], "'adam' is not one of"),
        (
            ["allocate", "--checkpoint", "m.pt", "--out", "a.json", "--objective", "mean"],
            "'mean' is not one",
        ),
        (["run", "preset:liu2025", "--backend", "slurm"], "'slurm' is not one of"),
        (["mitigate", "--out", "o", "--seeds", "0,x"], "--seeds '0,x': expected comma-separated"),
    ],
)
def test_choices_are_checked_by_the_parser(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# Startup: a help screen loads no deep-learning framework

HEAVY = ("torch", "sklearn")
HELP_PROBE = """
import sys
from typer.testing import CliRunner
from fairquant.cli import app
from typer.main import get_command
heavy = set(sys.argv[1:])
for args in [["--help"], *([name, "--help"] for name in get_command(app).commands)]:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
    print(" ".join(args), "|", " ".join(sorted(heavy & set(sys.modules))))
"""


def test_importing_the_cli_loads_neither_torch_nor_sklearn():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fairquant.cli"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()[1:]}
    assert "fairquant.cli" in imported  # the import-time table was read
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


def test_help_of_every_command_loads_neither_torch_nor_sklearn():
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *HEAVY], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    rows = dict(line.split(" | ") for line in done.stdout.splitlines())
    assert {"--help", "audit --help", "train --help", "datasets --help"} <= set(rows)
    assert {args: loaded for args, loaded in rows.items() if loaded.strip()} == {}


# ---------------------------------------------------------------------------------------------
# Messages print the value literally


def test_errors_print_the_value_literally(tmp_path):
    folder = tmp_path / "[data]"
    folder.mkdir()
    r = runner.invoke(app, ["audit", "--checkpoint", str(folder / "m.pt")])
    assert r.exit_code == 2 and f"{folder / 'm.pt'} does not exist" in r.output, r.output
    r = runner.invoke(app, ["audit", "--model", "facts:m", "--dataset", "digits"])
    assert r.exit_code == 2 and "--model facts:m:" in r.output and "Ⓜ" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_warnings_print_literally(capsys):
    import warnings

    from fairquant.cli._app import user_errors

    with user_errors():
        warnings.warn("skipped [data]/a.png :m: :smile:", stacklevel=1)
    assert "warning: skipped [data]/a.png :m: :smile:" in capsys.readouterr().err


class _Unsafe:
    """Pickled by reference: torch.load(weights_only=True) refuses to import it."""


@pytest.mark.parametrize("option", ["--checkpoint", "--weights"])
def test_a_pickle_is_refused_with_the_reason_and_the_safe_alternatives(tmp_path, option):
    path = tmp_path / "model [v1].pt"
    torch.save({"w": torch.zeros(2), "code": _Unsafe()}, path)
    args = ["audit", option, str(path)]
    if option == "--weights":
        args += ["--model", "torchvision:resnet18", "--dataset", "digits"]
    r = runner.invoke(app, args)
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert f"{option} '{path}'" in text  # quoted, brackets kept
    assert "not a plain weights file" in text and "weights_only=True" in text
    assert "_Unsafe" in text  # torch's reason: the global it would have to import
    assert "torch.save(model.state_dict()" in text and "safetensors" in text
    assert "weights_only=False" not in text and "can still be loaded" not in text
    assert "\x1b[" not in r.output  # torch's ANSI bold does not leak


# ---------------------------------------------------------------------------------------------
# An option that does not apply is an error that says why, never silently ignored


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--image-size", "16"], "--image-size"),
        (["--data-seed", "3"], "--data-seed"),
        (["--data-seed", "0"], "--data-seed"),  # given, even at its default
        (["--root", "data"], "--root"),
        (["--target", "digit"], "--target"),
        (["--group", "digit"], "--group"),
        (["--num-classes", "3"], "--num-classes"),
        (["--in-channels", "3"], "--in-channels"),
        (["--grayscale"], "--grayscale"),
        (["-o", "limit=5"], "--option"),
        (["--mean", "0.5", "--std", "0.5"], "--mean, --std"),
    ],
)
def test_data_and_model_options_do_not_apply_to_a_checkpoint(tmp_path, monkeypatch, extra, named):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["audit", "--checkpoint", "m.pt", *extra])
    text = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert f"{named} do" in text and "not apply to --checkpoint" in text, r.output
    assert "rebuilds its own data and model" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["datasets", "--root", "x"], "--root does not apply without --dataset"),
        (
            ["allocate", "--checkpoint", "m.pt", "--out", "a.json", "--criterion", "upper-bound"],
            "--criterion does not apply without --max-drop",
        ),
        (
            ["allocate", "--checkpoint", "m.pt", "--out", "a.json", "--rounds", "3"],
            "--rounds does not apply without --max-drop",
        ),
        (
            ["allocate", "--checkpoint", "m.pt", "--out", "a.json", "--max-drop", "1",
             "--objective", "phi"],
            "--objective does not apply with --max-drop",
        ),
        (
            ["mitigate", "--out", "o", "--report-only", "--epochs", "3"],
            "--epochs does not apply with --report-only",
        ),
        (
            ["train", "--out", "x.pt", "--no-augment", "--crop-padding", "2"],
            "--crop-padding does not apply with --no-augment",
        ),
        (
            ["train", "--out", "x.pt", "--select-metric", "loss"],
            "--select-metric does not apply without --select best or --patience",
        ),
        (
            ["run", "preset:liu2025", "--workers", "2"],
            "--workers does not apply with --backend local",
        ),
    ],
)
def test_options_that_do_not_apply_are_refused(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.pt").exists()


# ---------------------------------------------------------------------------------------------
# The help: every option explained, spellings whole at 80 columns, one meaning per name


def _commands():
    from typer.main import get_command

    return get_command(app).commands


def test_every_option_has_help_text():
    missing = [
        f"{name} {p.opts[0]}"
        for name, command in _commands().items()
        for p in command.params
        if not (getattr(p, "help", None) or "").strip()
    ]
    assert not missing


def test_help_types_read_as_a_person_writes_them():
    unreadable = []
    for name in _commands():
        r = runner.invoke(app, [name, "--help"], env={"COLUMNS": "80"})
        types = ("<str>", "<int>", "<float>", "<path>", "range>", "list[str]", "<bool>")
        options = "\n".join(line for line in r.output.splitlines() if line.startswith("  -"))
        unreadable += [f"{name}: {w}" for w in types if w in options]
    assert not unreadable


def test_precision_spellings_are_whole_in_an_80_column_help():
    r = runner.invoke(app, ["audit", "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert max(map(len, lines)) <= 80
    words = r.output.split()
    for spelling in (
        "ort:int8[-pc][-minmax|-entropy|-percentile][-rr]",
        "ort:int8-dynamic[-pc][-rr]",
        "torchao:int4wo[-g32|-g64|-g128|-g256]",
        "torch:int8[-rr]",
        "-fl<k>",
        "-da<k>",
    ):
        assert spelling in words, spelling


@pytest.mark.parametrize("command", ["audit", "mitigate", "datasets"])
def test_the_split_seed_is_data_seed_in_every_command(command):
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert "--data-seed" in r.output and "train/test split" in " ".join(r.output.split())
