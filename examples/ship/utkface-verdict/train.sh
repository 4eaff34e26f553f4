#!/usr/bin/env bash
# The model and audit behind examples/ship/utkface-verdict (docs/findings/utkface-verdict.md),
# run from the repository root with ../shared/data beside it (training: 213 s on one thread).
set -euo pipefail
fairquant train --out utk.pt --dataset utkface --root ../shared/data/UTKFace.tar.gz \
    --target race --image-size 32 --width 8 --epochs 3 -q
fairquant audit --checkpoint utk.pt --precisions fp32,int8,int4 --out examples/ship/utkface-verdict \
    --quiet --max-drop 2
