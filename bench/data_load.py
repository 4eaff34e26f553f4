"""Time a full dataset load: cold (decoding every image into an empty cache) and warm (from it).

The issue's bar: a second load of UTKFace takes under 2 s. Each run uses a fresh cache folder
(deleted afterwards) so the cold number really decodes; the warm loads read what it wrote.

    python bench/data_load.py [--dataset utkface --root ../shared/data/UTKFace.tar.gz
                               --image-size 48 --grayscale --warm 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from fairquant.data import DataSpec, load_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="utkface")
    parser.add_argument("--root", default=str(SHARED / "UTKFace.tar.gz"))
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--grayscale", action="store_true")
    parser.add_argument("--warm", type=int, default=3, help="Warm loads to time.")
    args = parser.parse_args()
    spec = DataSpec(
        name=args.dataset,
        root=args.root,
        image_size=args.image_size,
        options={"grayscale": True} if args.grayscale else {},
    )
    cache = tempfile.mkdtemp(prefix="fairquant-bench-cache-")
    os.environ["FAIRQUANT_CACHE"] = cache
    warnings.simplefilter("ignore")  # UTKFace's 3 malformed names: counted in the tests
    try:
        start = time.perf_counter()
        data = load_dataset(spec)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(args.warm):
            start = time.perf_counter()
            again = load_dataset(spec)
            warm.append(time.perf_counter() - start)
        assert again.train.x.equal(data.train.x) and again.test.y.equal(data.test.y)
        size = sum(f.stat().st_size for f in Path(cache).iterdir())
    finally:
        shutil.rmtree(cache)
    print(
        f"{args.dataset} ({args.root}), image_size={args.image_size}, grayscale={args.grayscale}:"
        f" train {tuple(data.train.x.shape)}, test {tuple(data.test.x.shape)}, "
        f"{data.num_classes} classes, groups {data.counts()}"
    )
    print(
        f"cold load (decode + cache) {cold:.2f} s; "
        f"warm load median {statistics.median(warm):.2f} s "
        f"(min {min(warm):.2f}, max {max(warm):.2f}, n={len(warm)}); cache {size / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
