"""The command line only parses, calls the library and renders: no long function under cli/.

(The layering itself, ARCHITECTURE.md's drawing against the imports, is tested in test_docs.py.)
"""

import ast
from pathlib import Path

CLI = Path(__file__).resolve().parents[1] / "src" / "fairquant" / "cli"

#: The most lines a function body under cli/ may have (signature and docstring aside).
MOST = 30



def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the last."""
    body = node.body
    first = body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if docstring and isinstance(first.value.value, str) and len(body) > 1:
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1


def cli_functions() -> dict[str, int]:
    """Every function under cli/ (nested ones too) as ``file:name`` -> its body's lines."""
    lengths: dict[str, int] = {}
    for path in sorted(CLI.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                key = f"{path.relative_to(CLI)}:{node.name}"
                lengths[key] = max(lengths.get(key, 0), body_lines(node))
    return lengths


def test_body_lines_counts_from_the_first_statement_after_the_docstring():
    source = (
        'def f(\n    a,\n):\n    """Doc\n    string."""\n    x = a\n\n    return (\n        x\n'
        "    )\n"
    )
    assert body_lines(ast.parse(source).body[0]) == 5


def test_no_function_under_cli_is_longer_than_thirty_lines():
    lengths = cli_functions()
    assert len(lengths) > 20  # the commands were read
    long = {k: n for k, n in lengths.items() if n > MOST}
    assert not long, f"function bodies under cli/ longer than {MOST} lines: {long}"
