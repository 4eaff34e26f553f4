#!/usr/bin/env bash
# The repair study behind docs/findings/repair.md (issue 28), run from the repository root with
# ../shared/data beside it: each model trained by fairquant with 20 % of its training split held
# out for validation, then bench/repair.py (NNCF's accuracy control beside fairquant repair, on
# OpenVINO and ONNX Runtime) at a 2-point tolerance for every group; one thread a process.
set -euo pipefail
export OMP_NUM_THREADS=1
D=../shared/data
mkdir -p study/elsewhere study/small
train() { fairquant train --val-size 0.2 --epochs "$EPOCHS" -q "$@"; }
for s in 0 1 2; do
  EPOCHS=3 train --out study/utkface-resnet18-w8-s$s.pt --dataset utkface \
    --root $D/UTKFace.tar.gz --target race --image-size 32 --width 8 --seed $s
  EPOCHS=4 train --out study/cifar10lt-resnet18-w8-s$s.pt --dataset cifar10 \
    --root $D/cifar10_jpg.tar.gz --imbalance paper --image-size 32 --width 8 --seed $s
done
EPOCHS=3 train --out study/utkface-mobilenet_v2-w16-s0.pt --dataset utkface \
  --root $D/UTKFace.tar.gz --target race --model mobilenet_v2 --width 16 --image-size 32 --seed 0
for ckpt in study/*.pt; do
  name=$(basename "$ckpt" .pt)
  python bench/repair.py --checkpoint "$ckpt" --max-drop 2 --out "examples/repair/$name.csv"
done
# the README's model from elsewhere: a torchvision ShuffleNetV2 trained by a plain PyTorch script
# on 8,000 training images, without a validation split (20 % of its training split is carved)
python examples/ship/train_torchvision.py --data $D/UTKFace.tar.gz --out study/elsewhere/shufflenet.pt \
  --arch shufflenet_v2_x0_5 --image-size 48 --epochs 5 --limit 8000
python bench/repair.py --model torchvision:shufflenet_v2_x0_5 --weights study/elsewhere/shufflenet.pt \
  --dataset utkface --root $D/UTKFace.tar.gz --image-size 48 --mean 0.5 --std 0.5 --val-size 0.2 \
  --max-drop 2 --out examples/repair/utkface-shufflenet_v2_x0_5-s0.csv
# how small is the choice: every candidate of a 5-layer CNN measured
fairquant train --out study/small/cnn.pt --model cnn --width 4 --epochs 3 --image-size 8 --val-size 0.2
mkdir -p examples/repair/exhaustive
for p in openvino ort; do
  python bench/repair_exhaustive.py --checkpoint study/small/cnn.pt --precision $p:int8 --max-drop 2 \
    --out examples/repair/exhaustive/digits-cnn-w4-$p.csv
done
