"""Shared machinery of the findings generators (one script per study in ``bench/findings/``).

A study's prose lives in ``bench/findings/templates/<study>.md`` (its page) and, where the
README quotes it, ``<study>.readme.md`` (the README's section between the markers
``<!-- findings:<study> -->`` and ``<!-- /findings:<study> -->``). Every number in them is a
``{{name}}`` field that the study's script computes from the committed data in ``examples/``;
:func:`fill` refuses a field without a value and a value no field uses, so neither a number nor
a computation can be left behind. ``--check`` compares the rendering with the committed files
(exit 1 and a diff on any difference), ``--write`` rewrites them.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = Path(__file__).resolve().parent / "templates"
FIELD = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
MINUS = "−"  # U+2212, the minus sign of the pages' prose


@dataclass(frozen=True)
class Study:
    """One findings page: its name (``docs/findings/<name>.md``), the function computing every
    field of its templates from a repository root, and whether the README quotes it."""

    name: str
    values: Callable[[Path], Mapping[str, str]]
    readme: bool = False
    #: The page's path when it is not a findings page (``docs/findings/<name>.md``).
    path: str | None = None

    @property
    def page(self) -> str:
        return self.path or f"docs/findings/{self.name}.md"

    @property
    def begin(self) -> str:
        return f"<!-- findings:{self.name} -->"

    @property
    def end(self) -> str:
        return f"<!-- /findings:{self.name} -->"


def fill(templates: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """Each template with its ``{{name}}`` fields replaced by ``values[name]``; every field
    must have a value and every value must fill some field (KeyError otherwise)."""
    used: set[str] = set()
    missing: list[str] = []

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            missing.append(name)
            return ""
        used.add(name)
        return str(values[name])

    out = {key: FIELD.sub(sub, text) for key, text in templates.items()}
    if missing:
        raise KeyError(f"template fields without a value: {sorted(set(missing))}")
    if unused := sorted(set(values) - used):
        raise KeyError(f"computed values no template uses: {unused}")
    return out


def reflow(text: str, width: int = 100) -> str:
    """Rewrap prose paragraphs and list items to ``width``; code blocks, tables, headings and
    HTML comments stay as they are (a filled number can lengthen any line)."""
    out: list[str] = []
    block: list[str] = []
    fenced = False

    def flush() -> None:
        if block:
            first = block[0]
            indent = first[: len(first) - len(first.lstrip())]
            bullet = indent + "- " if first.lstrip().startswith("- ") else indent
            words_ = " ".join(line.strip() for line in block)
            words_ = words_[len(bullet) - len(indent) :] if bullet != indent else words_
            out.extend(
                textwrap.wrap(
                    words_,
                    width,
                    initial_indent=bullet,
                    subsequent_indent=" " * len(bullet),
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
            block.clear()

    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            flush()
            fenced = not fenced
            out.append(line)
        elif fenced or not stripped or stripped.startswith(("|", "#", "<!--")):
            flush()
            out.append(line)
        elif stripped.startswith("- "):
            flush()
            block.append(line)
        else:
            block.append(line)
    flush()
    return "\n".join(out)


def _splice(text: str, study: Study, section: str) -> str:
    start, stop = text.find(study.begin), text.find(study.end)
    if start < 0 or stop < start:
        raise ValueError(f"README.md has no section between {study.begin} and {study.end}")
    return text[: start + len(study.begin)] + "\n" + section + text[stop:]


def render(study: Study, root: Path = REPO) -> dict[str, str]:
    """The full expected text of every file the study writes (path relative to ``root``)."""
    templates = {"page": (TEMPLATES / f"{study.name}.md").read_text()}
    if study.readme:
        templates["readme"] = (TEMPLATES / f"{study.name}.readme.md").read_text()
    filled = {k: reflow(t) for k, t in fill(templates, study.values(root)).items()}
    out = {study.page: filled["page"]}
    if study.readme:
        out["README.md"] = _splice((root / "README.md").read_text(), study, filled["readme"])
    return out


def check(study: Study, root: Path = REPO) -> list[str]:
    """A unified diff (committed -> generated) per file that differs; empty when all agree."""
    diffs = []
    for rel, text in render(study, root).items():
        path = root / rel
        old = path.read_text() if path.is_file() else ""
        if old != text:
            lines = difflib.unified_diff(
                old.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{rel} (committed)",
                f"{rel} (generated from the data)",
            )
            diffs.append("".join(lines))
    return diffs


def write(study: Study, root: Path = REPO) -> list[str]:
    """Rewrite the study's files; the paths written."""
    written = []
    for rel, text in render(study, root).items():
        path = root / rel
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            written.append(rel)
    return written


def main(study: Study, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Render docs/findings/{study.name}.md"
        + (" and its README section" if study.readme else "")
        + " from the committed data."
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff if they differ")
    mode.add_argument("--write", action="store_true", help="rewrite the page (and section)")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    if not (args.root / "examples").is_dir():
        parser.error(f"--root {str(args.root)!r}: expected a repository root with examples/")
    if args.write:
        for rel in write(study, args.root):
            print(f"wrote {rel}")
        return 0
    diffs = check(study, args.root)
    sys.stdout.write("".join(diffs))
    if diffs:
        print(f"{study.name}: the committed text differs from its data; run with --write")
        return 1
    print(f"{study.name}: every number agrees with the committed data")
    return 0


# --- formatting -------------------------------------------------------------------------------


def num(x: float, digits: int, *, sign: bool = False, minus: str = MINUS) -> str:
    """``x`` with ``digits`` decimals; ``sign`` adds ``+`` to positives (and zero)."""
    text = f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"
    if text.lstrip("+-").strip("0.") == "":  # -0.0 reads as 0.0
        text = text.replace("-", "+" if sign else "")
    return text.replace("-", minus)


def interval(value: float, low: float, high: float, digits: int, **kw) -> str:
    """``value [low, high]``."""
    return f"{num(value, digits, **kw)} [{num(low, digits, **kw)}, {num(high, digits, **kw)}]"


def span(values: Iterable[float], digits: int, *, unit: str = "", **kw) -> str:
    """``lo–hi`` (en dash; `` to `` when a bound carries a sign) of the values, or one value
    when they round alike."""
    values = sorted(values)
    lo, hi = num(values[0], digits, **kw), num(values[-1], digits, **kw)
    dash = " to " if lo[0] in "+" + MINUS or hi[0] in "+" + MINUS else "–"
    return f"{lo}{unit}" if lo == hi else f"{lo}{dash}{hi}{unit}"


def pval(p: float) -> str:
    """A p-value to two significant digits (``< 0.001`` below that)."""
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def thousands(n: float) -> str:
    return f"{round(n):,}"


def words(items: list[str], conjunction: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conjunction} " + items[-1]


def table(head: list[str], rows: Iterable[list[str]]) -> str:
    """A Markdown table (no trailing newline)."""
    lines = [head, *rows]
    text = ["|" + "|".join(f" {cell} " if cell else " " for cell in line) + "|" for line in lines]
    text.insert(1, "|" + "---|" * len(head))
    return "\n".join(text)
