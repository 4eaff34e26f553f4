#!/bin/bash
# The models of the smallest-model comparison (docs/findings/smallest-model.md): ResNet-18 width 8,
# 3 seeds each, a 20% validation split held out of training (the search measures on it), best
# epoch kept. Run from the repository root with ../shared/data beside it.
set -euo pipefail
D=../shared/data
for s in 0 1 2; do
  fairquant train --out utkface-s$s.pt --dataset utkface --root $D/UTKFace.tar.gz --target ethnicity \
    --image-size 32 --grayscale --width 8 --epochs 6 --val-size 0.2 --select best --seed $s --quiet
  fairquant train --out cifar10lt-s$s.pt --dataset cifar10 --root $D/cifar10_jpg.tar.gz \
    --imbalance 16,16,8,8,4,4,2,2,1,1 --width 8 --epochs 6 --val-size 0.2 --select best --seed $s --quiet
done
# then, per dataset (OMP_NUM_THREADS=1):
#   python bench/allocate_search.py --checkpoints utkface-s0.pt,utkface-s1.pt,utkface-s2.pt \
#       --out examples/smallest-model/utkface --max-drop 1,2 --rounds 10
