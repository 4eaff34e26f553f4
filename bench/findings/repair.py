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

    cnn = pd.read_csv(root / "examples" / "repair" / "digits-cnn-w4.csv").set_index("method")
    ov = cnn[cnn.index.str.contains("openvino")]
    chosen = ov[ov.index.str.startswith("fairquant repair (chosen)")].iloc[0]
    offsets = ov[ov.index.str.startswith("fairquant logit offsets")].iloc[0]
    corrected = str(offsets.name).split(": ", 1)[1].rsplit(", ", 1)[0]  # the label it corrected
    base = ov[ov.index.str.endswith(f": {corrected}") & ~ov.index.str.contains("repair")].iloc[0]
    nncf = cnn.loc["NNCF accuracy control (overall accuracy)"]
    return {
        "cnn_table": table("digits-cnn-w4.csv"),
        "resnet_table": table("digits-resnet18-w8.csv"),
        "cnn_ov_evals": str(chosen.evaluations),
        "cnn_nncf_passes": str(nncf.evaluations).split(", ")[1].split()[0],
        "cnn_nncf_drop": f"{nncf.val_worst_drop:g}",
        "cnn_offsets_drop": f"{offsets.val_worst_drop:g}",
        "cnn_corrected_drop": f"{base.val_worst_drop:g}",
        "cnn_floats": str(chosen.float_layers),
    }


STUDY = Study("repair", values)

if __name__ == "__main__":
    sys.exit(main(STUDY))
