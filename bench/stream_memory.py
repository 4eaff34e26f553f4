"""Peak memory of an audit: the whole test set in memory against a DataLoader that reads it lazily.

Writes a test set of seeded random images as one ``.npy`` file per sample (uint8, like an image
folder on disk), at two sizes. For each size and path a fresh subprocess runs one audit (a
SmallCNN at fp32 and int8, 4 groups) and reports its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes Python and torch themselves):

- ``memory``: every file is read into one float32 tensor, audited as a ``Split`` (the fast path);
- ``stream``: a ``Dataset`` that loads one file per sample, read through a ``DataLoader`` of 64.

The streamed peak should stay flat as the data grows (bounded by the batch), the in-memory one
grow with it, and both give identical per-group numbers.

    OMP_NUM_THREADS=1 python bench/stream_memory.py [--sizes 3000,12000] [--side 48]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GROUPS = 4
CLASSES = 3


def write_folder(folder: Path, n: int, side: int) -> None:
    """``n`` samples as ``<i>.npy`` (uint8 3 x side x side) and ``labels.npy`` (y, g)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        np.save(folder / f"{i}.npy", rng.integers(0, 256, (3, side, side), dtype=np.uint8))
    labels = np.stack([rng.integers(0, CLASSES, n), rng.integers(0, GROUPS, n)], axis=1)
    np.save(folder / "labels.npy", labels)


def child(path: str, folder: Path) -> dict:
    """One audit in this process; its peak RSS and its per-group accuracy and loss."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from fairquant import Split, audit
    from fairquant.models import SmallCNN

    labels = torch.from_numpy(np.load(folder / "labels.npy"))
    n = len(labels)

    def read(i: int) -> torch.Tensor:
        return torch.from_numpy(np.load(folder / f"{i}.npy")).float().div_(255)

    class LazyFolder(Dataset):
        group_names = tuple(f"g{a}" for a in range(GROUPS))

        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):
            return read(i), labels[i, 0], labels[i, 1]

    start = time.perf_counter()
    if path == "memory":
        x = torch.stack([read(i) for i in range(n)])
        data: object = Split(x, labels[:, 0].clone(), labels[:, 1].clone())
    else:
        data = DataLoader(LazyFolder(), batch_size=64)
    torch.manual_seed(0)
    model = SmallCNN(in_channels=3, num_classes=CLASSES, width=16).eval()
    result = audit(
        model,
        data,
        precisions="int8",
        group_names=list(LazyFolder.group_names),
        batch_size=64,
        n_bootstrap=0,
    )
    table = result.table[result.table.metric.isin(["accuracy", "loss", "excess_loss"])]
    return {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - start,
        "numbers": table[["precision", "group", "metric", "value"]].values.tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="3000,12000", help="test-set sizes (samples)")
    ap.add_argument("--side", type=int, default=48, help="image side (3 channels)")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'samples':>8} {'data MiB':>9} {'path':>7} {'peak RSS MiB':>13} {'seconds':>8}")
    with tempfile.TemporaryDirectory(prefix="fq-stream-") as tmp:
        for n in sizes:
            folder = Path(tmp) / str(n)
            write_folder(folder, n, args.side)
            mib = n * 3 * args.side**2 * 4 / 2**20  # as float32
            numbers = {}
            for path in ("memory", "stream"):
                run = subprocess.run(
                    [sys.executable, __file__, "--child", path, str(folder)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                out = json.loads(run.stdout.strip().splitlines()[-1])
                numbers[path] = out["numbers"]
                print(
                    f"{n:>8} {mib:>9.0f} {path:>7} {out['peak_rss_mib']:>13.0f} "
                    f"{out['seconds']:>8.1f}",
                    flush=True,
                )
            same = numbers["memory"] == numbers["stream"]
            print(f"{n:>8} per-group accuracy, loss and excess loss identical: {same}")


if __name__ == "__main__":
    main()
