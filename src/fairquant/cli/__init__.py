"""The ``fairquant`` command: one module per command, each parse -> library call -> render."""

from __future__ import annotations

from fairquant.cli import allocate, audit, datasets, explain, runs, train  # noqa: F401  (register)
from fairquant.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    import matplotlib

    from fairquant.cli._runtime import tune_malloc

    # Process-wide settings belong to the command line, never to `import fairquant`: figures are
    # written to files (no window, no display needed), and glibc keeps large freed blocks.
    matplotlib.use("Agg")
    tune_malloc()
    app()


if __name__ == "__main__":
    main()
