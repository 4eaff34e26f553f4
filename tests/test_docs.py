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
