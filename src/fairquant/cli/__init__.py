"""The ``fairquant`` command: one module per command, each parse -> library call -> render."""

from __future__ import annotations

import importlib

from fairquant.cli._app import app

# Importing a command module registers its commands; `fairquant --help` lists them in this order.
for _module in ("audit", "train", "explain", "allocate", "repair", "runs", "datasets"):
    importlib.import_module(f"fairquant.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    import os

    from fairquant.cli._runtime import exit_on_signals, tune_malloc

    # Process-wide settings belong to the command line, never to `import fairquant`: figures are
    # written to files (no window, no display needed: matplotlib reads its backend from
    # MPLBACKEND when first imported, so a help screen need not load it), and glibc keeps large
    # freed blocks; SIGTERM and SIGINT unwind the stack, so staging and temporary folders are
    # removed.
    os.environ["MPLBACKEND"] = "Agg"
    tune_malloc()
    exit_on_signals()
    app()


if __name__ == "__main__":
    main()
