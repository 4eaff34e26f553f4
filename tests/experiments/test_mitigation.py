"""End to end: `fairquant mitigate` / compare_mitigations on digits, 2 seeds, a tiny model."""

from dataclasses import replace

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fairquant.cli import app
from fairquant.data import default_digits_spec
from fairquant.errors import ConfigError
from fairquant.experiments import load_config
from fairquant.experiments.findings import findings
from fairquant.experiments.mitigation import (
    RESULT_COLUMNS,
    compare_mitigations,
    comparison_table,
    mitigation_config,
    pareto_points,
)
from fairquant.models import ModelSpec
from fairquant.quant.qat import DEFAULT_QAT_CONFIG
from fairquant.report.rundir import read_results
from fairquant.train import TrainConfig, load_checkpoint

KEY = ["dataset", "model", "mitigation", "seed", "method", "precision", "group", "metric"]


@pytest.fixture
def small_digits():
    return replace(
        default_digits_spec(seed=0), image_size=12, options={"limit": {"train": 200, "test": 120}}
    )


def test_compare_mitigations_writes_the_run_directory_and_resumes(
    tmp_path, small_digits, one_thread
):
    out = tmp_path / "run"
    kwargs = dict(
        mitigations="none,fairqat,balanced-calib",
        precisions="fp32,int4",
        methods=("ptq", "qat"),
        seeds=(0, 1),
        qat=replace(DEFAULT_QAT_CONFIG, epochs=1),
    )
    spec, train = ModelSpec("cnn", 2), TrainConfig(epochs=1, batch_size=32)
    result = compare_mitigations(small_digits, spec, train, out, **kwargs)
    assert (result.run.cells, result.run.ran, result.run.trained) == (6, 6, 4)
    results = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    assert list(results.columns) == RESULT_COLUMNS
    assert not results.duplicated(KEY).any()
    cells = results[["mitigation", "seed", "method", "precision"]].drop_duplicates()
    # per seed: fp32 once per mitigation; PTQ at int4 (FairQAT: int4-fl8) and the default
    # activation-quantized int8-a8, int4-a8 (FairQAT: int4-fl8-a8); QAT at int4 except for
    # balanced-calib (= none's QAT)
    assert len(cells) == 2 * (3 + 3 * 3 + 2)
    assert set(cells[cells.mitigation == "fairqat"].precision) == {
        "fp32", "int4-fl8", "int8-a8", "int4-fl8-a8"
    }  # fmt: skip
    assert not ((results.mitigation == "balanced-calib") & (results.method == "qat")).any()
    # balanced calibration reuses the unmitigated model: weight-only PTQ equals none's exactly
    acc = results[(results.metric == "accuracy") & (results.precision == "int4")]
    acc = acc[acc.method == "ptq"].pivot_table(
        index=["seed", "group"], columns="mitigation", values="value"
    )
    assert (acc["none"] == acc["balanced-calib"]).all()
    # one checkpoint per training recipe and seed: balanced-calib shares none's
    assert len(list((out / "cells").glob("*/model.pt"))) == 4
    config = load_config(out / "config.yaml")
    assert config.seeds == [0, 1] and config.mitigations == ["none", "fairqat", "balanced-calib"]
    assert [m.precisions for m in config.methods] == [
        ["fp32", "int4", "int8-a8", "int4-a8"], ["fp32", "int4"]
    ]  # fmt: skip
    assert any("balanced-calib with qat is none with qat" in n for n in result.notes)

    table = comparison_table(result, "ptq", "int4")
    assert list(table.index) == ["none", "fairqat", "balanced-calib"]
    assert table.loc["fairqat", ("precision", "")] == "int4-fl8"
    groups = [str(d) for d in range(10)]
    assert [q for q in dict.fromkeys(table.columns.get_level_values(0))] == [
        "precision", *groups, "overall", "phi", "worst_group_accuracy"
    ]  # fmt: skip
    assert table[("overall", "ci_low")].le(table[("overall", "value")]).all()
    tests = pd.read_csv(out / "tests.csv")
    against_none = tests[tests.comparison.str.endswith(" vs none")]
    assert set(against_none.mitigation) == {"fairqat", "balanced-calib"}
    assert "int4-fl8" in set(against_none.precision)  # FairQAT lined up with int4
    assert not ((tests.metric == "phi") & (tests.precision == "fp32")).any()
    assert (tests.n_seeds == 2).all() and tests.p_value.between(0, 1).all()
    assert (tests.alternative == "two-sided").all() and tests.p_holm.ge(tests.p_value).all()
    points = pareto_points(result)
    assert len(points) == len(cells.drop(columns="seed").drop_duplicates())
    assert points.pareto.any()

    # a rerun skips every finished cell and trained model, and adds nothing twice
    again = compare_mitigations(small_digits, spec, train, out, **kwargs)
    assert (again.run.ran, again.run.trained) == (0, 0)
    assert pd.read_csv(out / "results.csv").shape == results.shape
    # other training settings are other cells: trained anew, and the table holds only them
    longer = compare_mitigations(small_digits, spec, replace(train, epochs=2), out, **kwargs)
    assert (longer.run.ran, longer.run.trained) == (6, 4)
    assert len(list((out / "cells").glob("*/model.pt"))) == 8


def test_bad_settings_are_refused_before_anything_runs(tmp_path, small_digits):
    spec, train = ModelSpec("cnn", 2), TrainConfig(epochs=1)
    with pytest.raises(ConfigError, match="QAT takes integer weight-only precisions"):
        compare_mitigations(small_digits, spec, train, tmp_path, precisions="fp32,int8-a8")
    with pytest.raises(ConfigError, match="act_precisions are the activation-quantized"):
        compare_mitigations(small_digits, spec, train, tmp_path, act_precisions="int4")
    with pytest.raises(ConfigError, match="methods must be some of"):
        compare_mitigations(small_digits, spec, train, tmp_path, methods=["gptq"])
    qat = replace(DEFAULT_QAT_CONFIG, optimizer="adamw", momentum=0.5, seed=0)
    config = mitigation_config(small_digits, spec, train, qat=qat, methods=["qat"])
    assert config.methods[0].qat_config(0) == qat  # every QAT setting survives the config
    with pytest.raises(ConfigError, match="seeds repeat"):
        compare_mitigations(small_digits, spec, train, tmp_path, seeds=[0, 0])
    assert not any(tmp_path.iterdir())


def test_mitigate_command_prints_tables_tests_and_writes_the_figure(tmp_path):
    out = tmp_path / "cli"
    args = ["mitigate", "--out", str(out), "--mitigations", "none,re-fixed:5", "--model", "cnn"]
    args += ["--width", "2", "--epochs", "1", "--seeds", "0,1", "--precisions", "fp32,int4"]
    args += ["--methods", "ptq", "--image-size", "12", "-o", 'limit={"train":150,"test":100}']
    args += ["-q"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "PTQ int4: mean ± 95% interval across 2 seed(s)" in res.output
    assert "re-fixed:5" in res.output and "Paired tests" in res.output
    # `report` states the same comparisons with the same p-values as `mitigate`
    tests = pd.read_csv(out / "tests.csv")
    report = CliRunner().invoke(app, ["report", str(out), "--format", "html"])
    assert report.exit_code == 0, report.output
    html = (out / "report.html").read_text()
    stated = findings(read_results(out / "results.csv")[0])
    assert list(stated.comparison) == list(tests.comparison)
    assert stated.p_value.to_numpy() == pytest.approx(tests.p_value.to_numpy(), rel=1e-12)
    assert stated.p_holm.to_numpy() == pytest.approx(tests.p_holm.to_numpy(), rel=1e-12)
    row = tests[(tests.comparison == "re-fixed:5 vs none") & (tests.metric == "accuracy")]
    row = row[row.precision == "int4"].iloc[0]
    assert f"{row.p_value:.3g}" in res.output and f"unadjusted {row.p_value:.3g}" in html
    assert f"{row.p_holm:.3g}" in res.output
    assert (out / "pareto.png").stat().st_size > 10_000
    results = pd.read_csv(out / "results.csv")
    assert set(results.mitigation) == {"none", "re-fixed:5"} and set(results.seed) == {0, 1}
    assert set(results.method) == {"none", "ptq"} and not results.duplicated(KEY).any()
    bad = CliRunner().invoke(app, ["mitigate", "--out", str(out), "--mitigations", "smote"])
    assert bad.exit_code != 0 and "unknown mitigation 'smote'" in bad.output


def test_a_vit_is_sized_to_the_data_and_its_checkpoint_rebuilds(tmp_path):
    spec = replace(default_digits_spec(), image_size=16)
    compare_mitigations(
        spec,
        ModelSpec("vit_small", 16, depth=1, patch_size=4),
        TrainConfig(epochs=1, batch_size=30),
        tmp_path / "run",
        mitigations="none",
        precisions="fp32,int8",
        methods=["ptq"],
        seeds=[0],
    )
    (path,) = (tmp_path / "run" / "cells").glob("*/model.pt")
    ckpt = load_checkpoint(path)
    assert ckpt.model_spec.image_size == 16
    assert ckpt.model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
