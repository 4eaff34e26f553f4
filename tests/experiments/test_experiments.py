"""Experiments: config validation, grid expansion, cache keys, resume, backends, presets, CLI."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import fairquant
from fairquant.cli import app
from fairquant.errors import ConfigError
from fairquant.experiments import load_config, parse_config, run_experiment
from fairquant.experiments.cells import expand, run_cell
from fairquant.experiments.presets import load_preset, preset_names
from fairquant.schema import CELL_KEYS, RESULT_COLUMNS

#: Two cells of the embedded digits that train and audit in about a second each.
TINY = {
    "name": "tiny",
    "datasets": [{"name": "digits"}],
    "models": [{"name": "cnn", "width": 4}],
    "training": {"epochs": 1},
    "methods": ["ptq", {"name": "qat", "epochs": 1, "precisions": ["int4"]}],
    "precisions": ["int8", "int4"],
    "seeds": [0, 1],
    "bootstrap": 100,
}
ROW_KEY = [*CELL_KEYS, "method", "precision", "group", "metric"]


def _error(document) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(document)
    return str(info.value)


def test_errors_name_the_key_its_path_and_the_allowed_values():
    bad = {
        **TINY,
        "datasets": [{"name": "digits"}, {"name": "digits", "image_size": 2, "colour": True}],
        "methods": ["ptq", {"name": "gptq"}],
        "precisions": ["int8", "int99"],
        "models": [{"name": "cnnx"}],
    }
    message = _error(bad)
    assert "4 problems" in message
    assert "datasets[1].colour: unknown key; allowed keys here: name, root, target" in message
    assert "methods[1].name: Input should be 'ptq' or 'qat'" in message
    assert "precisions[1]: precision 'int99'" in message
    assert "models[0].name: unknown model 'cnnx'; expected one of: cnn" in message
    # a dataclass's own checks name the key of the mapping that builds it
    assert "training: epochs must be at least 1" in _error({**TINY, "training": {"epochs": 0}})
    image = {**TINY, "datasets": [{"name": "digits", "image_size": 2}]}
    assert "datasets[0]: image_size must be at least 4 pixels; got 2" in _error(image)
    assert "models[0]: model width must be a positive integer" in _error(
        {**TINY, "models": [{"name": "cnn", "width": 0}]}
    )
    assert "explain.max_probes: Input should be greater than or equal to 10" in _error(
        {**TINY, "explain": {"max_probes": 3}}
    )
    assert "datasets: the key 'a__b' contains '__'" in _error(
        {**TINY, "datasets": [{"name": "digits", "label": "a__b"}]}
    )
    assert "bootstrap: n_bootstrap=20" in _error({**TINY, "bootstrap": 20})
    assert "mitigations[0]: unknown mitigation 'magic'" in _error(
        {**TINY, "mitigations": ["magic"]}
    )
    assert "seeds repeat ['1']" in _error({**TINY, "seeds": [1, 1]})
    assert "give each a distinct `label`" in _error({**TINY, "datasets": [{"name": "digits"}] * 2})
    with pytest.raises(ConfigError, match="no scale 'gpu'"):
        parse_config(TINY, scale="gpu")


def test_load_config_reads_yaml_safely(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("!!python/object/apply:os.system ['echo owned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text(yaml.safe_dump({**TINY, "data_root": "data"}))
    assert Path(load_config(path).data_root) == tmp_path / "data"
    with pytest.raises(ConfigError, match="cannot read experiment file"):
        load_config(tmp_path / "absent.yaml")


def test_grid_expands_in_order_with_scales_and_dataset_defaults():
    document = {
        **TINY,
        "datasets": [{"name": "digits"}, {"name": "digits", "imbalance": [1] * 10}],
        "dataset_defaults": {"image_size": 8, "options": {"limit": 100}},
        "mitigations": ["none"],
        "scales": {"big": {"seeds": [0, 1, 2], "training": {"lr": 0.1}}},
    }
    config = parse_config(document, scale="big")
    cells = expand(config)
    assert [c.label for c in cells[:4]] == [
        "digits__cnn__none__seed0",
        "digits__cnn__none__seed1",
        "digits__cnn__none__seed2",
        "digits-imbalanced__cnn__none__seed0",
    ]
    assert len(cells) == 6
    assert config.training.epochs == 1 and config.training.lr == 0.1  # merged, not replaced
    assert all(d.image_size == 8 and d.options == {"limit": 100} for d in config.datasets)


def test_cache_keys_are_stable_and_separate_training_from_evaluation():
    a = expand(parse_config(TINY))
    b = expand(parse_config(json.loads(json.dumps(TINY, sort_keys=True))))
    assert [c.key for c in a] == [c.key for c in b]
    assert len({c.key for c in a}) == len(a)  # seeds differ
    more = expand(parse_config({**TINY, "precisions": ["int8", "int4", "int2"]}))
    assert [c.key for c in more] == [c.key for c in a]  # same trained models...
    assert more[0].eval_key != a[0].eval_key  # ...audited afresh
    longer = expand(parse_config({**TINY, "training": {"epochs": 2}}))
    assert longer[0].key != a[0].key
    mitigated = expand(parse_config({**TINY, "mitigations": ["none", "balanced-calib", "gt"]}))
    none, calib, gt = (mitigated[i] for i in (0, 2, 4))
    assert none.key == calib.key != gt.key  # balanced-calib trains like none: one checkpoint
    assert len({none.eval_key, calib.eval_key}) == 2


CRASH = """
import os, sys, json
from fairquant.experiments import parse_config, run_experiment
from fairquant.experiments.cells import run_cell
calls = []
def crash_on_second(cell, folder):
    calls.append(cell)
    if len(calls) == 2:
        os._exit(3)  # like a SIGKILL: no cleanup, no exception handling
    return run_cell(cell, folder)
run_experiment(parse_config(json.loads(sys.argv[2])), sys.argv[1], show_progress=False,
               cell_fn=crash_on_second)
"""


def test_a_killed_run_resumes_without_redoing_or_losing_cells(tmp_path, one_thread):
    document = {**TINY, "seeds": [0, 1, 2], "methods": ["ptq"]}
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(fairquant.__file__).parents[1]),
        "OMP_NUM_THREADS": "1",  # tiny models: thread hand-offs would cost more than the work
    }
    run_dir = tmp_path / "run"
    crashed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH), str(run_dir), json.dumps(document)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert crashed.returncode == 3, crashed.stderr
    first = pd.read_csv(run_dir / "results.csv")
    assert first.seed.unique().tolist() == [0]  # one finished cell, no partial second one

    ran = []

    def counting(cell, folder):
        ran.append(cell.seed)
        return run_cell(cell, folder)

    summary = run_experiment(parse_config(document), run_dir, show_progress=False, cell_fn=counting)
    assert sorted(ran) == [1, 2] and summary.skipped == 1 and summary.trained == 2
    table = pd.read_csv(run_dir / "results.csv")
    assert list(table.columns) == RESULT_COLUMNS
    assert not table.duplicated(ROW_KEY).any()
    for cell in expand(parse_config(document)):  # every cell's rows, as it stored them
        stored = pd.read_csv(run_dir / "cells" / cell.key / f"results-{cell.eval_key}.csv")
        rows = table[table.seed == cell.seed].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, stored)
    pd.testing.assert_frame_equal(table[table.seed == 0].reset_index(drop=True), first)
    again = run_experiment(parse_config(document), run_dir, show_progress=False, cell_fn=counting)
    assert again.ran == 0 and len(ran) == 2
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "results.csv"), table)


def test_backends_give_the_same_results_table(tmp_path, one_thread, monkeypatch):
    # workers inherit the environment: each backend must still run a cell on its own CPUs'
    # threads (here 1, as the local run), or float sums and then the losses drift
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    config = parse_config(TINY)
    local = run_experiment(config, tmp_path / "local", show_progress=False)
    expected = pd.read_csv(local.results)
    assert len(expected) and list(expected.columns) == RESULT_COLUMNS
    assert set(expected.method) == {"none", "ptq", "qat"}
    backends = [("process", {"workers": 2})]
    try:
        import ray  # noqa: F401
    except ImportError:
        print("ray is not importable here (pip install 'fairquant[ray]'): ray backend not compared")
    else:
        backends.append(("ray", {"workers": 2}))
    for backend, options in backends:
        summary = run_experiment(
            config, tmp_path / backend, backend=backend, show_progress=False, **options
        )
        assert summary.ran == 2, backend
        pd.testing.assert_frame_equal(pd.read_csv(summary.results), expected, obj=backend)


def test_presets_validate_at_every_scale(tmp_path):
    assert preset_names() == ["bellam-kim", "five-arch", "liu2025"]
    for name in preset_names():
        for scale in ("tiny", "cpu", "gpu"):
            config = load_preset(name, scale=scale, data_root=tmp_path)
            assert Path(config.data_root) == tmp_path
            if scale == "tiny":
                assert config.training.epochs == 1 and len(expand(config)) <= 6
                assert all(d.image_size == 16 for d in config.datasets)


def test_cli_runs_a_config_and_reports_errors(tmp_path, one_thread):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**TINY, "seeds": [0], "methods": ["ptq"]}))
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 cells: 1 run now (1 trained), 0 already done" in result.output
    assert (tmp_path / "r" / "config.yaml").exists()
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "r"), "--quiet"])
    assert "0 run now (0 trained), 1 already done" in result.output
    result = runner.invoke(app, ["run", str(path), "--backend", "spark"])
    assert result.exit_code == 2 and "'spark' is not one of" in " ".join(result.output.split())
    result = runner.invoke(app, ["run", "preset:nope"])
    assert result.exit_code == 2 and "unknown preset 'nope'" in result.output


def test_explain_writes_factor_tables_per_cell(tmp_path, one_thread):
    document = {
        **TINY,
        "seeds": [0],
        "methods": ["ptq"],
        "precisions": ["int4"],
        "explain": {
            "enabled": True,
            "max_probes": 10,
            "sketch": 2,
            "eig_max_iter": 3,
            "samples_per_group": 5,
        },
    }
    run_experiment(parse_config(document), tmp_path, show_progress=False)
    factors = pd.read_csv(tmp_path / "explain" / "digits__cnn__none__seed0.csv")
    assert list(factors.columns[:2]) == ["precision", "group"]
    assert set(factors.precision) == {"fp32", "int4"} and "trace" in factors.columns
    curvature = pd.read_csv(tmp_path / "explain" / "curvature.csv")
    assert list(curvature.columns[:4]) == CELL_KEYS and len(curvature) == len(factors)


def test_the_example_experiment_validates():
    path = Path(__file__).resolve().parents[2] / "examples" / "experiment.yaml"
    full, tiny = load_config(path), load_config(path, scale="tiny")
    assert len(expand(full)) == 2 * 2 * 2 * 3 and len(expand(tiny)) == 2 * 1 * 2 * 1
    assert Path(full.data_root) == path.parent


def test_the_file_takes_its_types_and_defaults_from_the_dataclasses():
    from dataclasses import asdict, fields

    from fairquant._explain import explain_model
    from fairquant.data import DataSpec
    from fairquant.quant.qat import DEFAULT_QAT_CONFIG
    from fairquant.train import TrainConfig

    config = parse_config({**TINY, "training": {}, "methods": ["ptq", "qat"]})
    assert config.training.train_config(seed=3) == TrainConfig(seed=3)
    assert config.methods[1].qat_config(seed=0) == DEFAULT_QAT_CONFIG
    assert config.datasets[0].spec(Path(".")) == DataSpec(name="digits")
    assert [f.name for f in fields(DataSpec)] == list(config.datasets[0].model_dump())[:-1]
    keywords = inspect.signature(explain_model).parameters.values()
    defaults = {p.name: p.default for p in keywords if p.kind == p.KEYWORD_ONLY}
    explain = config.explain.model_dump()
    assert {k: explain[k] for k in explain if k in defaults} == {
        k: defaults[k] for k in explain if k in defaults
    }
    assert len([k for k in explain if k in defaults]) == 6
    # QAT takes every training setting: nothing a TrainConfig holds is lost on the way
    adamw = {**asdict(DEFAULT_QAT_CONFIG), "optimizer": "adamw", "schedule": "step", "seed": 5}
    qat = {"name": "qat", **{k: v for k, v in adamw.items() if k != "seed"}}
    config = parse_config({**TINY, "methods": [qat]})
    assert config.methods[0].qat_config(seed=5) == TrainConfig(**adamw)


def test_qat_settings_at_their_defaults_keep_older_cells_finished():
    """Keys added to a method later enter its evaluation key only when set."""
    cell = expand(parse_config({**TINY, "methods": ["qat"]}))[0]
    assert "optimizer" not in cell.evaluation()["methods"][0]
    # as before the keys existed, but for the augmentation and validation keys of the training
    # recipe: QAT augments by default since they came, so older QAT cells must be re-run
    assert cell.eval_key == "0882178926c01714dfa7"
    other = expand(parse_config({**TINY, "methods": [{"name": "qat", "optimizer": "adamw"}]}))[0]
    assert other.evaluation()["methods"][0]["optimizer"] == "adamw"
    assert other.eval_key != cell.eval_key


def test_a_preset_or_a_file_and_their_default_run_directories(tmp_path):
    from fairquant.experiments.presets import default_run_dir, load_experiment

    preset = load_experiment("preset:liu2025", data_root=tmp_path)
    assert preset == load_preset("liu2025", scale="cpu", data_root=tmp_path)
    assert default_run_dir("preset:liu2025", preset, None) == Path("runs/liu2025-cpu")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "scales": {"gpu": {"seeds": [0]}}}))
    assert default_run_dir(path, load_experiment(path), None) == Path("runs/tiny")
    assert load_experiment(path, scale="gpu").seeds == [0]
    assert default_run_dir(path, load_experiment(path), "gpu") == Path("runs/tiny-gpu")
