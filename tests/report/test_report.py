"""`fairquant report`: a run directory in, one self-contained HTML page and its tables out."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fairquant._audit import audit_model
from fairquant._explain import explain_model
from fairquant.cli import app
from fairquant.data import default_digits_spec, load_dataset
from fairquant.errors import ConfigError
from fairquant.experiments.findings import SEED_TESTED, findings
from fairquant.metrics.policy import ALPHA, holm
from fairquant.metrics.uncertainty import across_seeds, paired_seed_test
from fairquant.mitigate import resample_indices
from fairquant.models import ModelSpec
from fairquant.quant import parse_precisions
from fairquant.report.html import write_report
from fairquant.report.rundir import RESULT_COLUMNS, read_results
from fairquant.train import TrainConfig, fit

SECTIONS = ["findings", "setup", "accuracy", "phi", "explain", "mitigation", "methods"]
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run directory: digits at 8x8, a 2-channel CNN trained 2 epochs with seeds 0 and 1,
    with and without oversampling (mitigation ``over``), PTQ at int8 and int4 with 100-replicate
    bootstrap intervals, and the curvature factor table of one cell in ``explain/``."""
    folder = tmp_path_factory.mktemp("run")
    data = load_dataset(dataclasses.replace(default_digits_spec(seed=0), image_size=8))
    precisions = parse_precisions("int8,int4")
    tables = []
    for mitigation in ("none", "over"):
        for seed in (0, 1):
            train = data.train
            if mitigation == "over":
                train = train.subset(resample_indices(train.y, "over", seed=seed))
            model, _ = fit(
                dataclasses.replace(data, train=train),
                ModelSpec("cnn", 2),
                TrainConfig(epochs=2, seed=seed),
                show_progress=False,
            )
            audit = audit_model(
                model,
                data.test,
                data.group_names,
                precisions,
                show_progress=False,
                n_bootstrap=100,
                random_state=seed,
            )
            cell = dict(dataset="digits", model="cnn", mitigation=mitigation, seed=seed)
            tables.append(audit.table.assign(**cell))
            if mitigation == "none" and seed == 0:
                explained = explain_model(
                    model,
                    data.test,
                    data.group_names,
                    parse_precisions("int4"),
                    train_counts=data.counts()["train"],
                    samples_per_group=4,
                    max_probes=10,
                    eig_max_iter=5,
                    show_progress=False,
                )
                (folder / "explain").mkdir()
                explained.factors.to_csv(
                    folder / "explain/digits__cnn__none__seed0.csv", index=False
                )
                keyed = explained.factors.assign(**cell)  # all cells' factors, as `run` writes
                keyed.to_csv(folder / "explain/curvature.csv", index=False)
    pd.concat(tables)[RESULT_COLUMNS].to_csv(folder / "results.csv", index=False)
    (folder / "run.json").write_text('{"mitigations": ["none", "over"], "seeds": [0, 1]}\n')
    write_report(folder)
    return folder


def _phi(results: pd.DataFrame, **where) -> pd.Series:
    rows = results[(results.metric == "phi") & (results.group == "all")]
    for k, v in where.items():
        rows = rows[rows[k] == v]
    return rows.value


def test_html_has_every_section_and_figure_and_the_csv_numbers(run_dir):
    html = (run_dir / "report.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    # 2 per-group accuracy figures (none, over), 1 Pareto, 2 explain figures, all decodable
    images = IMG.findall(html)
    assert len(images) == html.count("<img") == 5
    for data in images:
        pixels = mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400 and pixels.std() > 0.02
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "<link" not in html and "url(" not in html
    results = pd.read_csv(run_dir / "results.csv", dtype={"group": str})
    mean = _phi(results, mitigation="over", precision="int4").mean()
    assert f"{mean:.3f}" in html
    acc = results[(results.metric == "accuracy") & (results.group == "3")]
    assert f"{acc[(acc.mitigation == 'none') & (acc.precision == 'int8')].value.mean():.1f}" in html
    assert '"mitigations": ["none", "over"]' in html.replace("&#34;", '"')  # run.json shown
    assert "2 seeds" in html and "paired t-test" in html and "Holm" in html
    n = len(pd.read_csv(run_dir / "explain/curvature.csv"))
    assert f"explain/curvature.csv holds the {n} rows of the factor tables above" in html


def test_markdown_and_latex_tables_beside_it(run_dir):
    md = (run_dir / "report.md").read_text()
    tex = (run_dir / "report.tex").read_text()
    results = pd.read_csv(run_dir / "results.csv", dtype={"group": str})
    summary = across_seeds(results)
    row = summary[
        (summary.metric == "phi")
        & (summary.mitigation == "none")
        & (summary.precision == "int8")
        & (summary.group == "all")
    ].iloc[0]
    cell = f"{row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
    assert row.interval == "seeds" and row.n_seeds == 2
    phi_md = md.split("## φ(D) by precision")[1].split("##")[0]
    assert "| dataset | model | mitigation | method | seeds |" in phi_md
    assert cell in phi_md
    assert "## Mitigations: digits · cnn" in md and "## Curvature factors" in md
    assert tex.count("\\begin{table}") == tex.count("\\end{table}") >= 5
    assert "\\label{tab:phi}" in tex and "\\toprule" in tex and "$\\phi$(D)" in tex
    assert cell in tex


def test_findings_use_the_paired_test_across_seeds(run_dir):
    results, _ = read_results(run_dir / "results.csv")
    table = findings(results)
    assert set(table.comparison) == {"ptq vs fp32", "lower precision (ptq)", "over vs none"}
    row = table[(table.comparison == "lower precision (ptq)") & (table.mitigation == "over")]
    test = paired_seed_test(
        results[results.mitigation == "over"],
        "phi",
        baseline={"method": "ptq", "precision": "int8"},
        candidate={"method": "ptq", "precision": "int4"},
    )
    assert row.p_value.item() == pytest.approx(test.p_value)
    assert row.p_sign_flip.item() == pytest.approx(test.p_sign_flip)
    assert row.n_seeds.item() == 2 and row.test.item() == SEED_TESTED
    assert (table.alternative == "two-sided").all()
    # Holm over every tested comparison of the run directory
    assert (table.test == SEED_TESTED).all()
    assert table.p_holm.to_numpy() == pytest.approx(holm(table.p_value.to_numpy()))
    assert (table.significant == (table.p_holm < ALPHA)).all()
    assert f"Holm over the {len(table)} tested comparisons of this run" in row.text.item()


def test_one_seed_compares_intervals_and_claims_nothing(run_dir, tmp_path):
    results = pd.read_csv(run_dir / "results.csv", dtype={"group": str})
    one = results[results.seed == 0]
    table = findings(read_results(_write(tmp_path, one))[0])
    assert (table.test == "bootstrap intervals compared (no test)").all()
    assert not table.significant.any() and table.p_value.isna().all()
    assert set(table.verdict) <= {"intervals overlap", "intervals apart (no test)"}
    summary = across_seeds(read_results(tmp_path / "results.csv")[0])
    assert set(summary.interval) == {"bootstrap"} and (summary.n_seeds == 1).all()
    paths = write_report(tmp_path, formats=["html"])
    html = paths[0].read_text()
    assert "One seed: no paired test is possible" in html and "significant</span>" not in html


def test_an_audit_output_folder_is_a_run_with_one_cell(run_dir, tmp_path):
    """`fairquant audit --out` writes results.csv without the cell keys."""
    results = pd.read_csv(run_dir / "results.csv", dtype={"group": str})
    audit = results[(results.seed == 1) & (results.mitigation == "none")]
    folder = tmp_path / "my-audit"
    _write(folder, audit.drop(columns=["dataset", "model", "mitigation", "seed"]))
    r = CliRunner().invoke(app, ["report", str(folder), "--format", "html,md"])
    assert r.exit_code == 0, r.output
    assert {p.name for p in folder.iterdir()} == {"results.csv", "report.html", "report.md"}
    html = (folder / "report.html").read_text()
    assert "dataset (not in results.csv)" in html and "taken as &#39;my-audit&#39;" in html
    assert 'id="mitigation"' not in html and 'href="#mitigation"' not in html  # one mitigation
    assert html.count("<img") == 1
    table, defaults = read_results(folder / "results.csv")
    assert defaults == {"dataset": "my-audit", "model": "model", "mitigation": "none", "seed": 0}
    assert len(table) == len(audit)


def test_an_audit_folder_is_named_by_its_audit_json(tmp_path):
    """`fairquant audit --out` writes audit.json; the report names dataset and model from it and
    shows the record in its setup section."""
    out = tmp_path / "audit-out"
    r = CliRunner().invoke(
        app,
        [
            "quickstart",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--width",
            "4",
            "--precisions",
            "fp32,int4",
            "--bootstrap",
            "0",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["report", str(out), "--format", "html"])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    assert "taken as &#39;digits&#39;" in html and "checkpoint:checkpoint.pt" in html
    assert "fairquant.audit/1" in html  # audit.json shown as written


def _write(folder: Path, table: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "results.csv", index=False)
    return folder / "results.csv"


def test_bad_run_directories_are_refused_clearly(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        write_report(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"results\.csv not found"):
        write_report(tmp_path)
    results = pd.read_csv(run_dir / "results.csv", dtype={"group": str})
    bad = {
        "unknown columns \\['gpu'\\]": results.assign(gpu=1),
        "has a header but no rows": results.iloc[:0],
        "missing columns \\['ci_high'\\]": results.drop(columns="ci_high"),
        "column 'value' must be numeric; row 2": results.astype({"value": str}).assign(
            value=lambda t: ["n/a", *t.value[1:]]
        ),
        "duplicated rows": pd.concat([results, results.iloc[:3]]),
    }
    for message, table in bad.items():
        _write(tmp_path, table)
        with pytest.raises(ConfigError, match=message):
            write_report(tmp_path)
    (tmp_path / "results.csv").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        write_report(tmp_path)
    with pytest.raises(ConfigError, match="subset of"):
        write_report(run_dir, formats=["pdf"])
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "is empty" in r.output


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (apt-get install chromium) on this machine",
)
def test_headless_chromium_renders_it_without_errors(run_dir, tmp_path):
    """No console error, every image decoded by the browser, a screenshot that is not blank.

    The report has no script; a test-only copy gets one that logs how many images loaded."""
    html = (run_dir / "report.html").read_text()
    probe = (
        '<script>window.addEventListener("load", () => { const i = [...document.images]; '
        'console.log("fairquant-images " + i.length + " " + '
        "i.filter(x => x.complete && x.naturalWidth > 0).length); });</script>"
    )
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console, done.stderr[-2000:]
    errors = [line for line in console if "fairquant-images" not in line]
    assert not errors and not any("Uncaught" in line for line in done.stderr.splitlines())
    loaded = re.search(r'"fairquant-images (\d+) (\d+)"', "\n".join(console))
    assert loaded and loaded[1] == loaded[2] == str(html.count("<img"))
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels[..., :3].std() > 0.05  # not blank: text, tables and figures
    assert (pixels[..., :3].mean(axis=2) < 0.5).mean() > 0.01  # dark ink on the page
    np.testing.assert_array_less(0, pixels[..., :3].reshape(-1, 3).std(axis=0))


@pytest.fixture(scope="module")
def deployed_audit(tmp_path_factory) -> Path:
    """An audit folder as `fairquant audit --model torchvision:... --out` writes it: a model
    fairquant did not train, audited at int8 and PyTorch's deployed torch:int8."""
    import torch

    from fairquant._audit import audit
    from fairquant.models import SmallCNN
    from fairquant.models.load import LoadedModel, ModelSource

    folder = tmp_path_factory.mktemp("deployed-audit")
    data = load_dataset(dataclasses.replace(default_digits_spec(seed=0), image_size=8))
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, num_classes=10).eval()
    torch.save(model.state_dict(), folder / "weights.pt")
    loaded = LoadedModel(model, ModelSource("torchvision", "squeezenet1_1", str(folder / "w.pt")))
    (folder / "w.pt").write_bytes((folder / "weights.pt").read_bytes())
    result = audit(loaded, data, precisions="int8,torch:int8", n_bootstrap=100, calib_size=64)
    result.to_csv(folder / "results.csv")
    result.write_record(folder / "audit.json")
    return folder


def test_a_deployed_precision_is_not_counted_as_ptq(deployed_audit):
    results = pd.read_csv(deployed_audit / "results.csv")
    methods = results.drop_duplicates("precision").set_index("precision").method.to_dict()
    assert methods == {"fp32": "none", "int8": "ptq", "torch:int8": "torch"}
    write_report(deployed_audit, formats=["html", "md"])
    html = (deployed_audit / "report.html").read_text()
    assert "ptq torch:int8" not in html and "lower precision (ptq)" not in html
    assert "precisions (torch)" in html


def test_an_old_audit_folder_with_ptq_deployed_rows_is_read_as_the_toolchain(
    deployed_audit, tmp_path
):
    results = pd.read_csv(deployed_audit / "results.csv", dtype={"group": str})
    results.loc[results.precision == "torch:int8", "method"] = "ptq"  # as written before
    _write(tmp_path, results)
    shutil.copy(deployed_audit / "audit.json", tmp_path / "audit.json")
    write_report(tmp_path, formats=["html"])
    html = (tmp_path / "report.html").read_text()
    assert "ptq torch:int8" not in html and "precisions (torch)" in html


def test_an_audit_report_names_the_model_once_and_speaks_of_no_seeds(deployed_audit):
    write_report(deployed_audit, formats=["html", "md"])
    html = (deployed_audit / "report.html").read_text()
    md = (deployed_audit / "report.md").read_text()
    assert "torchvision:torchvision:" not in html + md
    assert "torchvision:squeezenet1_1" in html and "torchvision:squeezenet1_1" in md
    text = re.sub(r"<pre>.*?</pre>", "", html, flags=re.S)  # audit.json as written aside
    assert "seed" not in text.lower(), re.findall(r"[^.<>]*seed[^.<>]*", text, flags=re.I)
    assert "seed" not in md.lower()
    assert "One audited model" in html
