import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc-only")
@pytest.mark.parametrize(
    ("env", "expected"), [({}, "True"), ({"FAIRQUANT_MALLOC": "default"}, "False")]
)
def test_malloc_tuning_on_import(env, expected):
    code = "import fairquant._runtime as r; print(r.MALLOC_TUNED)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**{k: v for k, v in os.environ.items() if k != "FAIRQUANT_MALLOC"}, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == expected
