"""The documentation builds, links where it says, and shows only commands that exist.

The pages in ``docs/`` are built with mkdocs in strict mode (``mkdocs.yml`` turns a link to a
missing page or anchor into a warning, and strict mode fails on any warning). Every
``fairquant <command> --option`` line in the README and the pages is checked against the live
``--help`` of that command, so a renamed or removed option fails here, not in a reader's shell.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# docs/architecture.md is a link to ARCHITECTURE.md: each file once
PAGES = sorted(
    {p.resolve() for p in [REPO / "README.md", REPO / "ARCHITECTURE.md", *DOCS.rglob("*.md")]}
)
ROOT_PAGES = [REPO / "README.md", REPO / "ARCHITECTURE.md"]

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed (pip install mkdocs==1.6.1, part of the test extra)",
)

FENCE = re.compile(r"^(```+|~~~+)[ \t]*([\w+-]*)[^\n]*\n(.*?)^\1[ \t]*$", re.S | re.M)
# Blocks a reader types into a shell; `text`, `python`, `yaml` ... blocks are not commands.
SHELL = {"", "bash", "sh", "shell", "console", "zsh"}
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
OPTION = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# An option row of the help: its names start within a few columns of the panel's edge (`│`)
# or of the line (click's plain help); a wrapped description line is indented much further.
HELP_ROW = re.compile(r"^(?:│\s{1,4}(?:\*\s{1,3})?|\s{1,4})(-.*)$")
HELP_ENV = {"COLUMNS": "200", "TERMINAL_WIDTH": "200", "NO_COLOR": "1", "TERM": "dumb"}


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    # No --quiet: mkdocs counts warnings through its logger, and --quiet would hide them from
    # strict mode too.
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)]
    return subprocess.run(
        [*command, "-d", str(site)], capture_output=True, text=True, cwd=REPO, timeout=300
    )


@needs_mkdocs
def test_docs_build_strict(tmp_path):
    result = _mkdocs_build(REPO / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "commands" / "audit" / "index.html").is_file()


@needs_mkdocs
@pytest.mark.parametrize(
    "link", ["missing.md", "index.md#no-such-anchor", "../README.md", "/absolute.md"]
)
def test_docs_build_fails_on_a_broken_link(tmp_path, link):
    """The validation settings of mkdocs.yml make a broken link fail the strict build."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Home\n\nSee [there]({link}).\n")
    config.update(docs_dir=str(docs), nav=[{"Home": "index.md"}])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert link.split("#")[0] in result.stderr


# ---------------------------------------------------------------------------------------------
# Command lines in the README and the pages


def _shell_lines(text: str) -> list[str]:
    """The lines of the shell code blocks, a backslash continuation joined to its line."""
    lines = []
    for block in FENCE.finditer(text):
        if block.group(2).lower() in SHELL:
            lines += block.group(3).replace("\\\n", " ").splitlines()
    return lines


def _inline_spans(text: str) -> list[str]:
    """The inline code spans of the prose (a span may wrap onto the next line)."""
    prose = FENCE.sub("", text)
    return [" ".join(span.split()) for span in INLINE.findall(prose)]


def _invocations(line: str) -> list[tuple[str, list[str]]]:
    """Each ``fairquant COMMAND ...`` in a shell line: the command and the options it uses."""
    line = re.sub(r"(^|\s)#.*$", "", line)  # a shell comment
    found = []
    for part in re.split(r"\s(?:&&|\|\||\||;)\s", line):
        try:
            words = shlex.split(part)
        except ValueError:  # an unbalanced quote in prose: fall back to spaces
            words = part.split()
        for i, word in enumerate(words[:-1]):
            if words[i + 1].startswith(("-", "<")):
                continue  # `fairquant --help`, `fairquant <command> --help`: no command named
            if word == "fairquant" or word.endswith("/fairquant"):
                rest = " ".join(words[i + 2 :])
                found.append((words[i + 1], sorted(set(OPTION.findall(rest)))))
                break
    return found


def _documented_invocations() -> list[tuple[str, str, str, list[str]]]:
    """(page, line, command, options) of every command line in the README and the pages."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = str(page.relative_to(REPO))
        for line in _shell_lines(text):
            found += [(name, line, cmd, opts) for cmd, opts in _invocations(line)]
        for span in _inline_spans(text):
            if span.startswith("fairquant "):
                found += [(name, span, cmd, opts) for cmd, opts in _invocations(span)]
    return found


@cache
def _cli():
    import typer

    from fairquant.cli import app

    return app, typer.main.get_command(app)


@cache
def _help_options(command: str) -> frozenset[str]:
    """The long options that ``fairquant COMMAND --help`` lists, read from the help text."""
    from typer.testing import CliRunner

    app, _ = _cli()
    result = CliRunner().invoke(app, [command, "--help"], env=HELP_ENV)
    assert result.exit_code == 0, result.output
    options = set()
    for line in ANSI.sub("", result.output).splitlines():
        row = HELP_ROW.match(line)
        if row is None:
            continue
        for word in row.group(1).split():
            if word == "/":  # click's plain help: --flag / --no-flag
                continue
            if not word.startswith("-"):
                break
            options.update(OPTION.findall(word))
    assert "--help" in options, f"no options read from the help of {command}:\n{result.output}"
    return frozenset(options)


def test_the_pages_show_commands():
    """The scan finds the command lines (else the checks below would pass on nothing)."""
    commands = {cmd for _, _, cmd, _ in _documented_invocations()}
    assert {"quickstart", "train", "audit", "run", "report", "mitigate"} <= commands


def test_documented_commands_exist():
    _, group = _cli()
    known = ", ".join(sorted(group.commands))
    unknown = [
        f"{page}: `{line.strip()}`: no command {cmd!r} (commands: {known})"
        for page, line, cmd, _ in _documented_invocations()
        if cmd not in group.commands
    ]
    assert not unknown, "\n".join(unknown)


def test_documented_options_are_in_the_help():
    _, group = _cli()
    stale = []
    for page, line, cmd, options in _documented_invocations():
        if cmd not in group.commands:
            continue  # test_documented_commands_exist reports it
        missing = [o for o in options if o not in _help_options(cmd)]
        if missing:
            stale.append(f"{page}: `{line.strip()}`: fairquant {cmd} has no {', '.join(missing)}")
    assert not stale, "\n".join(stale)


def test_help_parsing_reads_every_option():
    """The help parser reads the option column, not options named in descriptions."""
    _, group = _cli()
    for name, command in group.commands.items():
        declared = {
            opt
            for param in command.params
            if not getattr(param, "hidden", False)
            for opt in (*param.opts, *param.secondary_opts)
            if opt.startswith("--")
        }
        assert _help_options(name) == declared | {"--help"}, name


# ---------------------------------------------------------------------------------------------
# Links from the repository's root pages


@pytest.mark.parametrize("page", ROOT_PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        path = target.split("#")[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name} links to missing files: {broken}"


# ---------------------------------------------------------------------------------------------
# ARCHITECTURE.md against the code

SRC = REPO / "src" / "fairquant"
ARCHITECTURE = REPO / "ARCHITECTURE.md"


def _layers() -> list[list[str]]:
    """The layers of ARCHITECTURE.md's drawing, top first, each a list of its paths (``cli/``,
    ``_audit.py``, ``fairquant/__init__.py`` ...)."""
    drawing = next(
        b.group(3) for b in FENCE.finditer(ARCHITECTURE.read_text()) if b.group(2) == "text"
    )
    layers = []
    for line in drawing.splitlines():
        paths = []
        for word in line.split():
            if not re.fullmatch(r"[\w/]+(?:\.py|/)", word):
                break
            paths.append(word.removeprefix("fairquant/"))
        if paths:
            layers.append(paths)
    return layers


def _module_rank(layers: list[list[str]]) -> dict[str, int]:
    """Every module under src/fairquant -> the rank of its layer (0 at the bottom)."""
    rank = {}
    for i, paths in enumerate(reversed(layers)):
        for path in paths:
            target = SRC / path
            files = sorted(target.rglob("*.py")) if path.endswith("/") else [target]
            for file in files:
                module = ".".join(("fairquant", *file.relative_to(SRC).with_suffix("").parts))
                rank[module.removesuffix(".__init__")] = i
    return rank


def test_architecture_drawing_names_every_module():
    rank = _module_rank(_layers())
    modules = {
        ".".join(("fairquant", *f.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        for f in SRC.rglob("*.py")
    }
    assert not modules - set(rank), f"not in ARCHITECTURE.md's drawing: {modules - set(rank)}"
    assert not set(rank) - modules, f"drawn but missing: {set(rank) - modules}"


def test_imports_go_down_the_architecture():
    """No module imports from a layer above its own in ARCHITECTURE.md's drawing."""
    import ast

    rank = _module_rank(_layers())

    def layer_of(name: str) -> int | None:
        while name and name not in rank:
            name = name.rpartition(".")[0]
        return rank.get(name)

    upward = []
    for file in SRC.rglob("*.py"):
        module = ".".join(("fairquant", *file.relative_to(SRC).with_suffix("").parts))
        own = layer_of(module.removesuffix(".__init__"))
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "fairquant" and [a.name for a in node.names] == ["__version__"]:
                    continue  # the version string, not the API
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == "fairquant" and (layer_of(target) or 0) > own:
                    upward.append(f"{file.relative_to(REPO)}:{node.lineno} imports {target}")
    assert not upward, "\n".join(upward)


def test_architecture_table_names_what_exists():
    """Each module, folder and name the ownership table gives exists in src/fairquant."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = []
    for row in (line for line in text.splitlines() if line.startswith("| ")):
        spans = INLINE.findall(row)
        paths = [s for s in spans if re.fullmatch(r"[\w/]+(?:\.py|/)", s)]
        found, folders = [], [SRC]
        for path in paths:  # a path may be relative to a folder named before it in the row
            hits = [d / path for d in folders if (d / path).exists()]
            if not hits:
                missing.append(path)
                continue
            found += hits
            folders += [h for h in hits if h.is_dir()]
        sources = " ".join(
            f.read_text(encoding="utf-8")
            for hit in found
            for f in (sorted(hit.rglob("*.py")) if hit.is_dir() else [hit])
        )
        for name in (s for s in spans if re.fullmatch(r"[A-Za-z_]\w*", s)):
            if not re.search(rf"\b{name}\b", sources):
                missing.append(f"{name} (in {', '.join(paths)})")
    assert not missing, f"ARCHITECTURE.md names what does not exist: {missing}"


# ---------------------------------------------------------------------------------------------
# Every fenced command of the README and the pages runs, on small data
#
# A documented command line is made runnable by these stated substitutions, and nothing else:
#   - its optional parts (`[--flag VALUE]`), a trailing `# comment` and leading `VAR=value`
#     assignments are dropped; placeholders become the fixtures below (CONFIG: the tiny scale
#     of examples/experiment.yaml; RUN_DIR: the folder of a tiny audit);
#   - model.pt, m.pt (a checkpoint) are a 2-channel CNN trained 1 epoch on 8x8 digits, with a
#     validation split (--val-size 0.2, as the README trains it); examples/ and CONFIG: the
#     repository's examples/experiment.yaml at its tiny scale;
#   - sizes shrink (SMALL): --epochs 1, --qat-epochs 1, --width 2 ..., and commands whose
#     defaults train a grid get the small options of EXTRA appended;
#   - the docs' group names of UTKFace (`Others=`) become a digit (`9=`).
# A command that cannot run so is listed in EXCLUDED with the reason; the coverage test fails
# on a fenced command that is neither runnable nor listed.

SMALL = {
    "--epochs": "1",
    "--qat-epochs": "1",
    "--width": "2",
    "--image-size": "8",
    "--samples": "4",
    "--seeds": "0",
    "--rounds": "2",
    "--bootstrap": "0",
}
EXTRA = {
    "quickstart": ["--epochs", "1", "--width", "2", "--bootstrap", "0", "--quiet"],
    "train": ["--epochs", "1", "--width", "2", "--image-size", "8", "--quiet"],
    "mitigate": [
        "--epochs",
        "1",
        "--model",
        "cnn",
        "--width",
        "2",
        "--image-size",
        "8",
        "--seeds",
        "0",
        "--mitigations",
        "none,gt",
        "--methods",
        "ptq",
        "--bootstrap",
        "0",
        "--quiet",
    ],
    "explain": ["--samples-per-group", "8", "--quiet"],
    "allocate": ["--samples", "4"],
    "allocate --max-drop": ["--rounds", "2", "--bootstrap", "0"],  # the search's own
    "audit": ["--bootstrap", "0", "--quiet"],
    "run": ["--scale", "tiny", "--quiet"],
}
SHARED = "needs the shared datasets (../shared/data): not embedded, too large for the suite"
SHARED_TINY = (
    "needs the shared datasets: run at a tiny size (-o limit=200) by "
    "test_shared_data_commands_run when ../shared/data is present, skipped otherwise"
)
#: (page, the start of a fenced command line) -> why it is not run here
EXCLUDED = {
    ("README.md", "python3 -m venv"): "creates a virtual environment and installs from the network",
    ("docs/installation.md", "python3 -m venv"): "creates a virtual environment and installs from "
    "the network",
    (
        "README.md",
        "fairquant audit --model torchvision:resnet18 --weights model.pt --dataset folder",
    ): "needs a model trained elsewhere and a labelled image folder",
    ("docs/commands/audit.md", "fairquant audit --model torchvision:resnet18"): "needs a model "
    "trained elsewhere and a labelled image folder",
    ("docs/commands/audit.md", "fairquant audit --model model.onnx"): "needs an ONNX model and a "
    "labelled image folder",
    ("README.md", "fairquant audit --model shufflenet.onnx"): SHARED,
    ("docs/findings/ship-utkface.md", "fairquant audit --model shufflenet.onnx"): SHARED,
    ("docs/findings/ship-utkface.md", "fairquant audit --model torchvision:shufflenet"): SHARED,
    ("docs/findings/ship-utkface.md", "fairquant audit --model tabular_model:mlp"): "needs the "
    "example's own module (tabular_model.py) and the diabetes table",
    ("README.md", "fairquant train --out model.pt --dataset utkface"): SHARED_TINY,
    ("README.md", "fairquant run preset:liu2025"): SHARED,
    ("docs/findings/liu2025-cpu.md", "fairquant run preset:liu2025"): SHARED,
    ("docs/commands/run.md", "fairquant run preset:liu2025"): SHARED,
    ("docs/commands/run.md", "fairquant run CONFIG --backend ray"): "starts a Ray runtime (extra "
    "ray)",
    ("docs/commands/run.md", "fairquant run examples/deployed.yaml"): "runs, with the report "
    "after it, in tests/experiments/test_deployed.py (it needs the onnx and torchao extras)",
    ("docs/commands/datasets.md", "fairquant datasets --dataset utkface"): SHARED_TINY,
    ("docs/commands/train.md", "fairquant train --out vit.pt --dataset cifar10"): SHARED,
    ("docs/models.md", "fairquant train --out vit.pt --dataset cifar10"): SHARED,
    ("docs/commands/train.md", "fairquant train --out mnv2.pt --dataset utkface"): SHARED,
    ("docs/models.md", "fairquant train --out mnv2.pt --dataset utkface"): SHARED,
    ("docs/commands/train.md", "fairquant train --out model.pt --dataset utkface"): SHARED,
    ("docs/datasets.md", "fairquant train --out /tmp/utk.pt"): SHARED_TINY,
    ("docs/datasets.md", "fairquant audit --checkpoint /tmp/utk.pt"): SHARED_TINY,
    ("docs/findings/mitigate-utkface.md", "fairquant mitigate"): SHARED,
    ("docs/findings/utkface-verdict.md", "fairquant train --out utk.pt"): SHARED_TINY,
    ("docs/findings/utkface-verdict.md", "fairquant audit --checkpoint utk.pt"): SHARED_TINY,
}
#: The README's deployed example on its own architecture, with digits for the shared data
#: (below): torch:int8 on shufflenet_v2_x0_5 crashed in the quantized graph (issue 25: a 1x1
#: map's mean, fixed in quant/real.py).
README_SHUFFLENET = "fairquant audit --model torchvision:shufflenet_v2_x0_5"


def _fenced_commands() -> list[tuple[str, str]]:
    """(page, line) of every fenced shell line that runs fairquant, each once per page."""
    found = []
    for page in PAGES:
        name = str(page.relative_to(REPO))
        for line in _shell_lines(page.read_text(encoding="utf-8")):
            line = " ".join(line.split())
            if _invocations(line) and (name, line) not in found:
                found.append((name, line))
    return found


def _bare(line: str) -> str:
    """The line without leading ``VAR=value`` assignments."""
    return re.sub(r"^(?:[A-Z_]+=\S*\s+)+", "", line)


def _excluded(page: str, line: str) -> str | None:
    line = _bare(line)
    return next(
        (why for (p, start), why in EXCLUDED.items() if p == page and line.startswith(start)), None
    )


def runnable(line: str, fixtures: dict[str, str]) -> list[str]:
    """The arguments of ``fairquant`` a documented ``line`` runs with (the substitutions above)."""
    line = re.sub(r"(^|\s)#.*$", "", line)
    line = re.sub(r"\[--[^\]]*\]", "", line)  # optional parts
    words = shlex.split(line)
    words = words[next(i for i, w in enumerate(words) if w.endswith("fairquant")) + 1 :]
    out: list[str] = []
    for word in words:
        word = fixtures.get(word, word)
        if out and out[-1] in SMALL:
            word = SMALL[out[-1]]
        out.append(word.replace("Others=", "9="))
    extra = EXTRA.get(out[0], []) + (
        EXTRA.get(f"{out[0]} --max-drop", []) if "--max-drop" in out else []
    )
    for i, flag in enumerate(extra):  # each flag (with its value) unless the line gives it
        if flag.startswith("-") and flag not in out:
            has_value = i + 1 < len(extra) and not extra[i + 1].startswith("-")
            out += [flag, extra[i + 1]] if has_value else [flag]
    return out


def test_every_fenced_command_runs_or_says_why_not():
    """The split below covers every fenced command, and each exclusion still names one."""
    commands = _fenced_commands()
    assert len(commands) > 30
    used = {
        k for k in EXCLUDED if any(p == k[0] and _bare(c).startswith(k[1]) for p, c in commands)
    }
    assert used == set(EXCLUDED), (
        f"exclusions that name no documented command: {set(EXCLUDED) - used}"
    )


def test_the_substitutions():
    fixtures = {"model.pt": "/t/m.pt", "RUN_DIR": "/t/run"}
    line = (
        "OMP_NUM_THREADS=1 fairquant allocate --checkpoint model.pt --max-drop 1 "
        "[--max-drop Others=0.5] --out s.json [--rounds 12] --samples 128  # note"
    )
    assert runnable(line, fixtures) == [
        "allocate", "--checkpoint", "/t/m.pt", "--max-drop", "1", "--out", "s.json",
        "--samples", "4", "--rounds", "2", "--bootstrap", "0",
    ]  # fmt: skip
    assert "--rounds" not in runnable("fairquant allocate --checkpoint m.pt --budget 4bits", {})
    assert runnable("fairquant audit --checkpoint m.pt --max-drop Others=1", {}) == [
        "audit", "--checkpoint", "m.pt", "--max-drop", "9=1", "--bootstrap", "0", "--quiet",
    ]  # fmt: skip


@cache
def _tiny_checkpoint(folder: Path) -> Path:
    from typer.testing import CliRunner

    app, _ = _cli()
    path = folder / "tiny.pt"
    args = ["train", "--out", str(path), "--model", "cnn", "--width", "2", "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--image-size", "8", "--val-size", "0.2", "--quiet"])
    assert result.exit_code == 0, result.output
    return path


def _pages_with_commands() -> list[str]:
    return sorted({page for page, line in _fenced_commands() if not _excluded(page, line)})


@pytest.mark.parametrize("page", _pages_with_commands())
def test_documented_commands_run(page, tmp_path, tmp_path_factory, monkeypatch):
    """Each runnable fenced command of ``page``, in order, in one folder: a crash fails here."""
    import shutil

    from typer.testing import CliRunner

    app, _ = _cli()
    ckpt = _tiny_checkpoint(tmp_path_factory.getbasetemp())
    monkeypatch.chdir(tmp_path)
    for name in ("model.pt", "m.pt"):
        shutil.copy(ckpt, tmp_path / name)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["audit", "--checkpoint", "m.pt", "--precisions", "fp32,int4", "--out", str(run_dir),
              "--bootstrap", "0", "--quiet"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = str(REPO / "examples" / "experiment.yaml")
    fixtures = {"CONFIG": config, "examples/experiment.yaml": config, "RUN_DIR": str(run_dir)}
    for doc_page, line in _fenced_commands():
        if doc_page != page or _excluded(page, line) or _bare(line).startswith(README_SHUFFLENET):
            continue
        args = runnable(line, fixtures)
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        allowed = {0, 3, 4} if "--gate" in args else {0}  # a verdict's exit codes
        assert result.exit_code in allowed, f"{page}: `{line}` ran as {args}:\n{result.output}"


def on_digits(args: list[str]) -> list[str]:
    """A stated substitution for a command on a shared dataset: the embedded digits instead
    (--root dropped), 3 input channels for a model that takes RGB, and no bootstrap."""
    out, skip = [], False
    for i, word in enumerate(args):
        if skip:
            skip = False
            continue
        if word == "--root":
            skip = True
            continue
        out.append("digits" if i and args[i - 1] == "--dataset" else word)
    return [*out, "--in-channels", "3", "--bootstrap", "0", "--quiet"]


def test_the_readme_deployed_example_runs(tmp_path, monkeypatch):
    """The README's deployed example, on its own architecture and options, with digits at 32 px
    for the shared UTKFace and random weights for the trained ones (on_digits)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from typer.testing import CliRunner

    app, _ = _cli()
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "shufflenet.pt"
    torch.save(torchvision.models.shufflenet_v2_x0_5(num_classes=10).state_dict(), weights)
    (line,) = [
        c for p, c in _fenced_commands() if p == "README.md" and c.startswith(README_SHUFFLENET)
    ]
    args = on_digits(runnable(line, {}))
    args[args.index("--image-size") + 1] = "32"  # the size the crash was reported at
    assert args[:3] == ["audit", "--model", "torchvision:shufflenet_v2_x0_5"]
    assert "torch:int8" in args[args.index("--precisions") + 1]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "examples" / "ship" / "utkface" / "results.csv").is_file()


def _shared_runs() -> list[tuple[str, str]]:
    return [(p, c) for p, c in _fenced_commands() if _excluded(p, c) == SHARED_TINY]


@pytest.mark.parametrize("page", sorted({p for p, _ in _shared_runs()}))
def test_shared_data_commands_run(page, shared_data, tmp_path, monkeypatch):
    """The commands on the shared UTKFace that fit the suite, at a tiny size: the documented
    options, 200 samples a split (-o limit=200) and the sizes of SMALL."""
    from typer.testing import CliRunner

    app, _ = _cli()
    monkeypatch.chdir(tmp_path)
    utk = str(shared_data / "UTKFace.tar.gz")
    fixtures = {
        "/tmp/utk.pt": str(tmp_path / "utk.pt"),
        "UTKFace.tar.gz": utk,
        "../shared/data/UTKFace.tar.gz": utk,
    }
    for doc_page, line in _shared_runs():
        if doc_page != page:
            continue
        args = runnable(line, fixtures)
        args += ["-o", "limit=200"] if "--dataset" in args else []
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, f"{page}: `{line}` ran as {args}:\n{result.output}"


def _calls_and_strings(file: Path) -> tuple[set[str], list[tuple[int, str]]]:
    import ast

    tree = ast.parse(file.read_text(encoding="utf-8"))
    names = {
        n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
    }
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    spelled = [
        (n.lineno, ast.unparse(n))
        for n in ast.walk(tree)
        if isinstance(n, ast.Compare)
        and any(isinstance(op, ast.In | ast.NotIn) for op in n.ops)
        and isinstance(n.left, ast.Constant)
        and n.left.value in (":", "@")
    ]
    return names | imported, spelled


def test_one_parser_one_quantizer_one_calibration_path():
    """ARCHITECTURE.md: a precision's spelling is read by quant/precision.py alone; every
    precision is built by quant/build.py's quantize (the simulated quantizer and the deployed
    builder are its parts, called from quant/ only); the audit and the PTQ method draw their
    calibration inputs through quant/calibrate.py's calibration_inputs."""
    parts = {"quantize_model", "build_deployed", "_parse_deployed", "_parse_simulated"}
    offenders = []
    for file in SRC.rglob("*.py"):
        rel = file.relative_to(SRC).as_posix()
        names, spelled = _calls_and_strings(file)
        if not rel.startswith("quant/") and names & parts:
            offenders.append(f"{rel} uses {sorted(names & parts)}")
        if rel in ("_audit.py", "quant/methods.py") and "calibration_inputs" not in names:
            offenders.append(f"{rel} draws calibration inputs outside quant/calibrate.py")
        if rel not in ("quant/precision.py", "mitigate/pipeline.py", "models/load.py"):
            offenders += [f"{rel}:{line} reads a spelling: {code}" for line, code in spelled]
    assert not offenders, "\n".join(offenders)
