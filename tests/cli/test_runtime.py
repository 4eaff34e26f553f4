import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc-only")
@pytest.mark.parametrize(
    ("env", "expected"), [({}, "True"), ({"FAIRQUANT_MALLOC": "default"}, "False")]
)
def test_malloc_tuning(env, expected):
    code = "import fairquant.cli._runtime as r; print(r.tune_malloc())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**{k: v for k, v in os.environ.items() if k != "FAIRQUANT_MALLOC"}, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_import_changes_nothing_in_the_process():
    """`import fairquant` (and its API) neither tunes malloc nor switches matplotlib's backend."""
    code = (
        "import sys, matplotlib; before = matplotlib.get_backend(); import fairquant; "
        "fairquant.AuditResult; import fairquant.report; "
        "print('fairquant.cli._runtime' in sys.modules, matplotlib.get_backend() == before)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MPLBACKEND": "svg"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False True"


def test_atomic_write_gives_plain_file_permissions(tmp_path):
    import os

    from fairquant._io import atomic_write

    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "r.csv", lambda tmp: tmp.write_text("a\n"))
    finally:
        os.umask(old)
    assert path.read_text() == "a\n" and (path.stat().st_mode & 0o777) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]  # no temporary file left
