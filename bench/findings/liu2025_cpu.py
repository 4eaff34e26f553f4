"""docs/findings/liu2025-cpu.md and the README's section from examples/liu2025-cpu/.

    python bench/findings/liu2025_cpu.py --check   # or --write

Reads the run's ``results.csv`` (per seed, method, precision and group) and ``config.yaml``;
the paired tests are :func:`fairquant.experiments.findings.findings` of ``results.csv``, the
same family ``fairquant report`` prints in ``report.html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import yaml
from _page import Study, interval, main, num, pval, span, table, thousands

from fairquant.experiments import findings
from fairquant.metrics import ALPHA, across_seeds

DATA = "examples/liu2025-cpu"
NAMES = {  # the run's dataset label: (page's name, page's name in the README's table)
    "utkface": ("UTKFace (race, 5 classes)", "UTKFace (race)"),
    "fer2013": ("FER2013 (7 emotions, re-split at random)", "FER2013 (re-split at random)"),
    "cifar10": ("CIFAR-10", "CIFAR-10"),
    "cifar10-imbalanced": (
        "CIFAR-10, long-tailed 16:16:8:8:4:4:2:2:1:1",
        "CIFAR-10 long-tailed",
    ),
    "mnist": ("MNIST", "MNIST"),
    "mnist-imbalanced": ("MNIST, long-tailed 16:16:8:8:4:4:2:2:1:1", "MNIST long-tailed"),
}
SHORT = {
    "utkface": "UTKFace",
    "fer2013": "FER2013",
    "cifar10": "CIFAR-10",
    "cifar10-imbalanced": "CIFAR-10 long-tailed",
    "mnist": "MNIST",
    "mnist-imbalanced": "MNIST long-tailed",
}


def _phi(summary: pd.DataFrame, dataset: str, method: str, precision: str) -> pd.Series:
    sel = summary[
        (summary.dataset == dataset)
        & (summary.method == method)
        & (summary.precision == precision)
        & (summary.metric == "phi")
    ]
    return sel.iloc[0]


def values(root: Path) -> dict[str, str]:
    base = root / DATA
    results = pd.read_csv(base / "results.csv", dtype={"precision": str, "group": str})
    config = yaml.safe_load((base / "config.yaml").read_text())
    datasets = list(dict.fromkeys(results.dataset))
    if set(datasets) != set(NAMES):
        raise ValueError(f"results.csv: datasets {datasets}, the page names {list(NAMES)}")
    summary = across_seeds(results)
    tests = findings(results)
    seeds = results.seed.nunique()
    v: dict[str, str] = {}
    v["n_cells"] = str(len(datasets) * seeds)
    v["n_datasets"] = {6: "six"}.get(len(datasets), str(len(datasets)))
    v["seeds"] = str(seeds)
    v["width"] = str(config["models"][0]["width"])
    sizes = {d["image_size"] for d in config["datasets"]}
    limits = {
        (d["options"]["limit"]["train"], d["options"]["limit"]["test"]) for d in config["datasets"]
    }
    if len(sizes) != 1 or len(limits) != 1:
        raise ValueError(f"config.yaml: image sizes {sizes} or limits {limits} differ")
    v["image_size"] = str(sizes.pop())
    n_train, n_test = limits.pop()
    v["n_train"], v["n_test"] = thousands(n_train), thousands(n_test)
    v["epochs"] = str(config["training"]["epochs"])
    v["qat_epochs"] = str(next(m["epochs"] for m in config["methods"] if m["name"] == "qat"))
    v["bootstrap"] = str(config["bootstrap"])

    # --- every dataset learns
    fp32 = results[(results.precision == "fp32") & (results.method == "none")]
    rows, readme_rows, gaps = [], [], []
    for d in datasets:
        part = fp32[fp32.dataset == d]
        acc = part[(part.metric == "accuracy") & (part.group == "all")].value
        n = part[(part.metric == "n") & (part.group != "all") & (part.seed == part.seed.min())]
        majority = 100 * n.value.max() / n.value.sum()
        # the worst class: the mean over seeds of each seed's worst-group accuracy, named when
        # the same class is the worst in every seed
        worst = part[(part.metric == "worst_group_accuracy") & (part.group == "all")].value
        per_seed = part[(part.metric == "accuracy") & (part.group != "all")]
        names = per_seed.loc[per_seed.groupby("seed").value.idxmin()].group.unique()
        named = f" ({names[0]})" if len(names) == 1 else ""
        gaps.append(acc.mean() - majority)
        rows.append(
            [
                NAMES[d][0],
                f"{num(acc.mean(), 1)} [{num(acc.min(), 1)}, {num(acc.max(), 1)}]",
                num(majority, 1),
                f"{num(worst.mean(), 1)}{named}",
            ]
        )
        readme_rows.append([NAMES[d][1], num(acc.mean(), 1), num(majority, 1)])
    head = ["dataset", "fp32 accuracy (%)", "majority-class rate (%)", "worst class (%)"]
    v["learn_table"] = table(head, rows)
    if min(gaps) <= 0:
        raise ValueError(
            "'every dataset learns' no longer holds: an accuracy is at or below its "
            "majority-class rate"
        )
    v["majority_gap"] = span(gaps, 1)

    # --- what quantization costs
    def acc_mean(d: str, method: str, precision: str) -> float:
        sel = results[
            (results.dataset == d)
            & (results.method == method)
            & (results.precision == precision)
            & (results.metric == "accuracy")
            & (results.group == "all")
        ]
        return sel.value.mean()

    rows = []
    for i, d in enumerate(datasets):
        cells = [SHORT[d]]
        for method, precision in (
            ("ptq", "int8"),
            ("ptq", "int4"),
            ("qat", "int16"),
            ("qat", "int4"),
        ):
            p = _phi(summary, d, method, precision)
            cells.append(interval(p.value, p.ci_low, p.ci_high, 3))
        cells.append(
            " → ".join(
                num(acc_mean(d, m, p), 1)
                for m, p in (("none", "fp32"), ("ptq", "int4"), ("qat", "int4"))
            )
        )
        rows.append(cells)
        readme_rows[i] += [
            num(_phi(summary, d, m, p).value, 3)
            for m, p in (("ptq", "int8"), ("ptq", "int4"), ("qat", "int4"))
        ]
    head = ["dataset", "PTQ int8", "PTQ int4", "QAT int16", "QAT int4"]
    head += ["accuracy fp32 → PTQ int4 → QAT int4"]
    v["phi_table"] = table(head, rows)
    head = ["dataset", "fp32 accuracy (%)", "majority-class rate (%)", "φ(D) PTQ int8"]
    head += ["φ(D) PTQ int4", "φ(D) QAT int4"]
    v["readme_table"] = table(head, readme_rows)

    lower = tests[(tests.comparison == "lower precision (ptq)") & (tests.precision == "int4")]
    if not (lower.baseline == "ptq int8").all():
        raise ValueError("tests: PTQ int4 is not compared with PTQ int8")
    v["int4_grows"] = "on every dataset" if (lower.difference > 0).all() else "not on every dataset"
    v["int4_diff"] = span(lower.difference, 2)
    v["int4_p"] = span(lower.p_value, 3)
    ratio = [
        _phi(summary, d, "ptq", "int4").value / _phi(summary, d, "ptq", "int8").value
        for d in datasets
    ]
    v["int4_ratio"] = span(ratio, 0)
    moves = [abs(acc_mean(d, "ptq", "int4") - acc_mean(d, "none", "fp32")) for d in datasets]
    v["int4_acc_moves"] = span(moves, 1)
    tail = []
    for d in ("mnist", "cifar10"):
        a = _phi(summary, d, "ptq", "int4").value
        b = _phi(summary, f"{d}-imbalanced", "ptq", "int4").value
        tail.append((b / a, f"{SHORT[d]} {num(a, 3)} → {num(b, 3)}"))
    v["tail_factor"] = span([t[0] for t in tail], 1, unit="×")
    v["tail_pairs"] = "; ".join(t[1] for t in tail)

    qat16 = [_phi(summary, d, "qat", "int16").value for d in datasets]
    v["qat16_span"] = span(qat16, 2)
    ptq16 = [_phi(summary, d, "ptq", "int16").value for d in datasets]
    v["ptq16_max"] = num(max(ptq16), 3)
    qat_acc = [abs(acc_mean(d, "qat", "int4") - acc_mean(d, "none", "fp32")) for d in datasets]
    v["qat_acc_within"] = num(max(qat_acc), 1)
    vs = tests[(tests.comparison == "QAT vs PTQ") & (tests.precision == "int4")]
    below = int((vs.difference < 0).sum())
    v["qat_below"] = (
        f"on all {v['n_datasets']} datasets" if below == len(datasets) else f"on {below} datasets"
    )
    v["qat_below_sig"] = (
        "none significant after correction"
        if (vs.p_holm >= ALPHA).all()
        else f"{int((vs.p_holm < ALPHA).sum())} significant after correction"
    )
    v["any_holm"] = (
        f"none of the {len(tests)} paired comparisons of the run (precision against fp32, each "
        "precision against the next higher one, QAT against PTQ) survives Holm's correction"
        if (tests.p_holm >= ALPHA).all()
        else f"{int((tests.p_holm < ALPHA).sum())} of the {len(tests)} paired comparisons "
        "survive Holm's correction"
    )
    v["nothing_sig"] = (
        "Nothing is significant after correction."
        if (tests.p_holm >= ALPHA).all()
        else "Some comparisons are significant after correction."
    )
    v["min_holm"] = pval(tests.p_holm.min())
    v["alpha"] = f"{ALPHA:g}"
    return v


STUDY = Study("liu2025-cpu", values, readme=True)

if __name__ == "__main__":
    sys.exit(main(STUDY))
