"""Train a torchvision architecture on UTKFace with plain PyTorch and save its state_dict.

This is what a user who never heard of fairquant would write: read the images, split them, train,
``torch.save(model.state_dict(), ...)``. It imports nothing from fairquant. The split follows the
rule fairquant's ``utkface`` dataset uses (the sorted file names that follow the release's naming,
80/20 stratified by race with scikit-learn's ``train_test_split``, ``random_state`` = seed), so
``fairquant audit --dataset utkface`` evaluates exactly the images held out here.

    OMP_NUM_THREADS=1 python examples/ship/train_torchvision.py \\
        --data ../shared/data/UTKFace.tar.gz --out shufflenet.pt
"""

from __future__ import annotations

import argparse
import io
import re
import tarfile
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from sklearn.model_selection import train_test_split

NAME = re.compile(r"(\d+)_(\d+)_(\d+)_[^_]*")  # <age>_<gender>_<race>_<datetime>.jpg.chip.jpg
RACES = ["White", "Black", "Asian", "Indian", "Others"]


def read_utkface(path: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, size, size) and race codes, in sorted file-name order."""
    files = {}
    with tarfile.open(path) as tar:  # in archive order: a .tar.gz cannot seek back cheaply
        for member in tar:
            name = member.name.removeprefix("./")
            match = NAME.fullmatch(name.rpartition("/")[2])
            if member.isfile() and match and int(match[2]) < 2 and int(match[3]) < len(RACES):
                files[name] = tar.extractfile(member).read()
    names = sorted(files)
    images = np.empty((len(names), 3, size, size), dtype=np.uint8)
    races = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        with Image.open(io.BytesIO(files[name])) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            images[i] = np.asarray(im).transpose(2, 0, 1)
        races[i] = int(NAME.fullmatch(name.rpartition("/")[2])[3])
    return images, races


def to_input(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    return (torch.from_numpy(images).float() / 255 - mean) / std


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="UTKFace.tar.gz")
    parser.add_argument("--out", required=True, help="state_dict file to write")
    parser.add_argument("--arch", default="shufflenet_v2_x0_5", help="torchvision model name")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument(
        "--mean", type=float, default=0.5, help="input normalization, every channel"
    )
    parser.add_argument("--std", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=None, help="train on a seeded subset")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    images, races = read_utkface(args.data, args.image_size)
    train, test = train_test_split(
        np.arange(len(races)), test_size=0.2, stratify=races, random_state=args.seed
    )
    if args.limit is not None and args.limit < len(train):
        keep = np.random.default_rng(args.seed).choice(len(train), args.limit, replace=False)
        train = np.sort(train[keep])
    print(
        f"read {len(races)} images in {time.perf_counter() - start:.0f}s; "
        f"train {len(train)}, test {len(test)}"
    )

    model = torchvision.models.get_model(args.arch, weights=None, num_classes=len(RACES))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * -(-len(train) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=gen).numpy()]
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = np.sort(order[i : i + args.batch_size])
            x = to_input(images[idx], args.mean, args.std)
            flip = torch.rand(len(x), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)  # horizontal flips
            loss = F.cross_entropy(model(x), torch.from_numpy(races[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {total / len(train):.3f} "
            f"({time.perf_counter() - start:.0f}s)",
            flush=True,
        )

    model.eval()
    with torch.inference_mode():
        pred = torch.cat(
            [
                model(to_input(images[test[i : i + 512]], args.mean, args.std)).argmax(1)
                for i in range(0, len(test), 512)
            ]
        ).numpy()
    majority = np.bincount(races[test]).max() / len(test)
    print(
        f"held-out accuracy {100 * (pred == races[test]).mean():.1f} % "
        f"(majority class {100 * majority:.1f} %)"
    )
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
