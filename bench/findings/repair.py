"""docs/findings/repair.md from the tables ``bench/repair.py`` committed in examples/repair/.

    python bench/findings/repair.py --check   # or --write
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from _page import Study, main


def values(root: Path) -> dict[str, str]:
    def table(name: str) -> str:
        return pd.read_csv(root / "examples" / "repair" / name).to_markdown(index=False)

    return {
        "cnn_table": table("digits-cnn-w4.csv"),
        "resnet_table": table("digits-resnet18-w8.csv"),
    }


STUDY = Study("repair", values)

if __name__ == "__main__":
    sys.exit(main(STUDY))
