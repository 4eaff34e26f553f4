"""The public API: every exported name resolves, and `import fairquant` is cheap and inert."""

import json
import subprocess
import sys

import pytest

import fairquant

#: Modules `import fairquant` must not load: plotting, the command line, process tuning.
HEAVY = ("matplotlib", "fairquant.cli", "fairquant.cli._runtime", "torch", "pandas", "pydantic")


@pytest.mark.parametrize("name", fairquant.__all__)
def test_every_public_name_resolves(name):
    value = getattr(fairquant, name)
    assert value is not None
    if name != "__version__":  # defined by fairquant itself, not re-exported from elsewhere
        assert value.__module__.startswith("fairquant.")


def test_entry_points_are_the_documented_functions():
    assert callable(fairquant.audit) and callable(fairquant.explain)
    assert fairquant.write_report.__module__ == "fairquant.report.html"
    assert fairquant.allocate.__module__ == "fairquant.mitigate.allocate"
    assert {"compare_mitigations", "run_experiment", "ExperimentConfig", "load_config"} <= set(
        fairquant.__all__
    )
    assert sorted(dir(fairquant)) == sorted(fairquant.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fairquant.nope  # noqa: B018


def test_import_fairquant_loads_nothing_heavy():
    code = "import sys, json, fairquant; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not [m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")]
    assert {m for m in loaded if m.startswith("fairquant")} == {"fairquant"}
