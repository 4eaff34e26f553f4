"""Tables for papers: Markdown (pipe tables) and LaTeX (booktabs) from a DataFrame of text.

pandas' ``DataFrame.to_markdown`` needs the optional ``tabulate`` package, which fairquant does
not depend on; a pipe table is simple enough to write here. LaTeX comes from pandas'
``Styler.to_latex`` (jinja2).
"""

from __future__ import annotations

import pandas as pd


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub pipe table of ``table`` (index dropped; numbers right-aligned).

    >>> print(to_markdown(pd.DataFrame({"precision": ["int8"], "phi": ["0.12"]})))
    | precision |  phi |
    | :-------- | ---: |
    | int8      | 0.12 |
    """
    header = [_cell(c) for c in table.columns]
    rows = [[_cell(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max(3, len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    numeric = [
        bool(len(table)) and all(_looks_numeric(r[i]) for r in rows) for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (w - 1) + ":" if num else ":" + "-" * (w - 1)
        for w, num in zip(widths, numeric, strict=True)
    ]
    return "\n".join([line(header), line(rule), *(line(r) for r in rows)])


def _looks_numeric(text: str) -> bool:
    head = text.split(" ")[0].lstrip("+-−")
    return bool(head) and (head[0].isdigit() or head in ("—", "nan"))


def to_latex(table: pd.DataFrame, *, caption: str, label: str) -> str:
    """A booktabs ``table`` environment of ``table`` (index dropped, text escaped, φ as
    ``$\\phi$``).

    >>> tex = to_latex(pd.DataFrame({"a_b": ["1 [0, 2]"]}), caption="φ(D)", label="tab:phi")
    >>> "a\\\\_b" in tex and "\\\\toprule" in tex and "\\\\label{tab:phi}" in tex
    True
    """
    styler = (
        table.style.hide(axis="index")
        .format(escape="latex")
        .format_index(escape="latex", axis="columns")
    )
    tex = styler.to_latex(
        caption=caption,
        label=label,
        hrules=True,
        position_float="centering",
        column_format="l" * table.shape[1],
    )
    return tex.replace("φ", r"$\phi$")  # after escaping, which would escape the $
