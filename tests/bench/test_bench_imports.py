"""bench/ and bench/findings/ use only fairquant's public API: the names ``fairquant`` exports
(``_EXPORTS``) and the curated ``__all__`` of its subpackages, never a private module
(``fairquant._audit``, ``fairquant._io``, ``fairquant.cli``) nor a submodule
(``fairquant.quant.calibrate``). Read with ``ast``: nothing is imported."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "fairquant"
SUBPACKAGES = ("data", "models", "train", "quant", "metrics", "mitigate", "experiments", "report")
SCRIPTS = sorted([*ROOT.glob("bench/*.py"), *ROOT.glob("bench/findings/*.py")])


def _top_level_names() -> set[str]:
    for node in ast.parse((SRC / "__init__.py").read_text()).body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_EXPORTS":
            return {*ast.literal_eval(node.value), "__version__", *SUBPACKAGES}
    raise AssertionError("src/fairquant/__init__.py has no _EXPORTS")


def _all_of(init: Path) -> set[str]:
    """The names ``__all__ = [...]`` and ``__all__ += [...]`` list in ``init``."""
    names: set[str] = set()
    for node in ast.parse(init.read_text()).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(node, ast.Assign | ast.AugAssign) and getattr(target, "id", "") == "__all__":
            names |= set(ast.literal_eval(node.value))
    assert names, f"{init} lists no __all__"
    return names


#: module -> the names it makes public
PUBLIC = {"fairquant": _top_level_names()} | {
    f"fairquant.{p}": _all_of(SRC / p / "__init__.py") for p in SUBPACKAGES
}


def private_uses(source: str) -> list[str]:
    """Each import (or ``fairquant.x.y`` attribute) of ``source`` outside the public API."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bad += [
                f"line {node.lineno}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "fairquant" and a.name not in PUBLIC
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "fairquant":
                continue
            public = PUBLIC.get(node.module, set())
            bad += [
                f"line {node.lineno}: from {node.module} import {a.name}"
                for a in node.names
                if a.name not in public
            ]
        elif isinstance(node, ast.Attribute):
            chain, value = [], node
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if not (isinstance(value, ast.Name) and value.id == "fairquant"):
                continue
            head = f"fairquant.{chain[0]}"
            if chain[0] not in PUBLIC["fairquant"] or (
                head in PUBLIC and len(chain) > 1 and chain[1] not in PUBLIC[head]
            ):
                bad.append(f"line {node.lineno}: fairquant.{'.'.join(chain)}")
    return bad


def test_there_are_scripts_to_check():
    assert len(SCRIPTS) > 10 and ROOT / "bench" / "findings" / "quickstart.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT / "bench")))
def test_bench_imports_only_the_public_api(script):
    assert private_uses(script.read_text()) == [], script.relative_to(ROOT)


@pytest.mark.parametrize(
    "line",
    [
        "from fairquant._audit import audit_model",
        "from fairquant._io import atomic_write",
        "import fairquant.cli",
        "from fairquant.quant.calibrate import calibration_indices",
        "from fairquant.metrics.paired import mcnemar_exact",
        "from fairquant.metrics import nope",
        "from fairquant import nope",
        "import fairquant.metrics.uncertainty",
        "import fairquant\nfairquant.quant.calibrate.calibration_indices",
        "import fairquant\nfairquant._audit",
    ],
)
def test_private_uses_are_caught(line):
    assert private_uses(line)


@pytest.mark.parametrize(
    "line",
    [
        "import fairquant",
        "import fairquant.quant",
        "from fairquant import audit, Tolerance, __version__, metrics",
        "from fairquant.quant import calibration_indices, quantize",
        "from fairquant.metrics import mcnemar_exact, across_seeds",
        "import fairquant\nfairquant.quant.latency_ms\nfairquant.Tolerance(2).max_drop",
        "from fairquantish import x\nfrom . import y",
    ],
)
def test_public_uses_pass(line):
    assert private_uses(line) == []
