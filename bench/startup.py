"""Startup time of `fairquant --help`: the code before the lazy command line against today's.

Both run in this one process's session on this machine, alternating, each a fresh interpreter:
the old code is checked out from git (``--before``, default the commit before issue 25's change,
into a temporary ``git worktree``) and today's is this checkout's ``src/``. Each run is timed by
wall clock and by the CPU seconds of the child (user + system). It prints the medians, the ratio
today/before and whether today is under a fifth of the old time (the target).

    python bench/startup.py [--before 253a24f] [--repeats 7] [--args "audit --help"]
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: main before the command line imported the library lazily (issue 25)
BEFORE = "253a24f"
ENTRY = (
    "import sys; sys.argv = ['fairquant', *sys.argv[1:]]; from fairquant.cli import main; main()"
)


def run_once(src: Path, args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``fairquant ARGS`` in a fresh interpreter on ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "100"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"fairquant {' '.join(args)} on {src} failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="git revision of the old code")
    parser.add_argument("--repeats", type=int, default=7, help="runs of each, alternating")
    parser.add_argument("--args", default="--help", help="the fairquant arguments to time")
    options = parser.parse_args()
    args = shlex.split(options.args)
    with tempfile.TemporaryDirectory(prefix="fairquant-startup-") as tmp:
        old = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old), options.before],
            check=True,
        )
        try:
            sources = {"before": old / "src", "today": ROOT / "src"}
            for src in sources.values():  # warm the file cache and bytecode of both
                run_once(src, args)
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in sources}
            for i in range(options.repeats):
                order = list(sources) if i % 2 == 0 else list(sources)[::-1]
                for name in order:
                    times[name].append(run_once(sources[name], args))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False
            )
    median = {
        name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in times.items()
    }
    print(f"fairquant {options.args}: {options.repeats} runs each, alternating, {sys.executable}")
    for name, (wall, cpu) in median.items():
        label = f"{name} ({options.before})" if name == "before" else f"{name} (src/)"
        print(f"  {label:<18} median wall {wall:6.3f} s, CPU {cpu:6.3f} s")
    wall_ratio = median["today"][0] / median["before"][0]
    cpu_ratio = median["today"][1] / median["before"][1]
    verdict = "under" if wall_ratio < 0.2 and cpu_ratio < 0.2 else "NOT under"
    print(f"  today / before: wall {wall_ratio:.3f}, CPU {cpu_ratio:.3f} ({verdict} a fifth)")


if __name__ == "__main__":
    main()
