#!/usr/bin/env bash
# fairquant's CUDA path end to end, in one script for a GPU machine (under 8 minutes on one
# H100/H200-class GPU with 16 cores): a full-width ResNet-18 (width 64) trained a few epochs on
# UTKFace ethnicity at 64 px (bf16 autocast, channels-last), the audit at fp32/fp16/bf16/int8/int4,
# each precision evaluated on the GPU against the CPU, and the curvature bench; it prints the
# throughput and results of each step, and stops at the first step that fails.
#
#   bash bench/gpu.sh [--data ../shared/data/UTKFace.tar.gz] [--out bench-gpu] [--epochs 3]
#   bash bench/gpu.sh --dry-run     # the same steps at a tiny size on the CPU (digits, 2 epochs)
#
# PYTHON names the interpreter (default python3); src/ goes first on PYTHONPATH. Before its first
# step it checks what the steps import (fairquant's dependencies and the `bench` extra:
# curvlinops, PyHessian) and installs what is missing with `pip install -e '.[bench]'` (the
# pinned versions of pyproject.toml); if that fails (no network) it stops there, not at step 5.
set -euo pipefail

DRY=0
DATA=../shared/data/UTKFace.tar.gz
OUT=""
EPOCHS=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY=1; shift ;;
        --data) DATA="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --epochs) EPOCHS="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "bench/gpu.sh: unknown argument $1 (expected --dry-run, --data, --out, --epochs)" >&2
           exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "$OUT" ]]; then
    if [[ $DRY == 1 ]]; then OUT="$(mktemp -d)"; else OUT=bench-gpu; fi
fi
mkdir -p "$OUT"
fq() { "$PY" -c 'import sys; sys.argv[0] = "fairquant"; from fairquant.cli import main; main()' "$@"; }
step() { echo; echo "== [$1] $2"; }
START=$SECONDS

step "0/5" "requirements (fairquant and the bench extra)"
NEEDS='import torch, fairquant, curvlinops, pyhessian'
if "$PY" -c "$NEEDS" 2>/dev/null; then
    echo "installed: torch, fairquant, curvlinops, pyhessian"
else
    echo "missing; installing: $PY -m pip install -e .[bench]"
    "$PY" -m pip install -q -e '.[bench]' || true
    "$PY" -c "$NEEDS" || {
        echo "bench/gpu.sh: the requirements are still missing; install them with:" \
             "pip install -e '.[bench]'" >&2
        exit 2
    }
fi

step "1/5" "environment"
"$PY" - "$DRY" <<'PY'
import sys
import torch
import fairquant
cuda = torch.cuda.is_available()
name = torch.cuda.get_device_name(0) if cuda else "none"
print(f"torch {torch.__version__}, fairquant {fairquant.__version__}, CUDA {cuda} ({name}), "
      f"{torch.get_num_threads()} CPU threads")
if sys.argv[1] == "0" and not cuda:
    sys.exit("bench/gpu.sh: no CUDA device; run with --dry-run for the CPU check")
PY

step "2/5" "train"
if [[ $DRY == 1 ]]; then
    fq train --out "$OUT/model.pt" --dataset digits --imbalance paper --image-size 16 \
        --model resnet18 --width 8 --epochs 2 --batch-size 32 -q
    CURV=(--images 24 --groups 2 --ph-max-probes 4 --cl-max-matvecs 12)
else
    [[ -e "$DATA" ]] || { echo "bench/gpu.sh: --data $DATA does not exist" >&2; exit 2; }
    fq train --out "$OUT/model.pt" --dataset utkface --root "$DATA" --target ethnicity \
        --image-size 64 --model resnet18 --width 64 --epochs "$EPOCHS" --batch-size 256 \
        --lr 0.1 -o 'limit={"test": 2000}' -q
    CURV=(--images 30 --groups 3 --ph-max-probes 20 --cl-max-matvecs 24)
fi

step "3/5" "audit fp32,fp16,bf16,int8,int4 (CPU)"
fq audit --checkpoint "$OUT/model.pt" --precisions fp32,fp16,bf16,int8,int4 --bootstrap 0 \
    --out "$OUT/audit" -q

step "4/5" "evaluation on the training device against the CPU"
"$PY" - "$OUT/model.pt" <<'PY'
import sys
import time
import torch
from fairquant.data import load_dataset
from fairquant.models import predict_logits
from fairquant.quant import parse_precision, quantize_model
from fairquant.train import load_checkpoint
from fairquant.train.loop import training_device

ck = load_checkpoint(sys.argv[1])
test = load_dataset(ck.data_spec).test
device = training_device()
reference = predict_logits(ck.model, test.x).argmax(1)
for name in ("fp32", "fp16", "bf16", "int8", "int4"):
    q = quantize_model(ck.model, parse_precision(name)).to(device)
    predict_logits(q, test.x[:64])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    pred = predict_logits(q, test.x).argmax(1)
    seconds = time.perf_counter() - start
    acc = 100 * (pred == test.y).double().mean().item()
    agree = 100 * (pred == reference).double().mean().item()
    print(f"{name:>5} on {device.type}: accuracy {acc:5.1f}%, agrees with CPU fp32 on "
          f"{agree:5.1f}% of {len(test)} images, {len(test) / seconds:8.0f} img/s")
PY

step "5/5" "curvature bench (trace: fairquant, curvlinops, PyHessian)"
"$PY" bench/curvature.py --checkpoint "$OUT/model.pt" --work "$OUT/curvature" --parts trace \
    --skip-general "${CURV[@]}"

echo
echo "bench/gpu.sh: all 5 steps passed in $((SECONDS - START)) s; results in $OUT"
