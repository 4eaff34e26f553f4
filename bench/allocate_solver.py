"""Solve times of the bit-allocation programs on a 21-layer, 5-group problem shaped like a
ResNet-18 (synthetic Taylor-like per-group costs, the test's ``resnet18_costs``): the ``phi``
objective of ``allocate_bits`` at 4 average bits and ``smallest_bits`` at per-group limits, for
4 and 5 bit options.

    OMP_NUM_THREADS=1 PYTHONPATH=src:tests python bench/allocate_solver.py
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from mitigate.test_allocate_smallest import RESNET18, resnet18_costs

from fairquant.mitigate import allocate_bits, smallest_bits


def main() -> None:
    sizes = [np.ceil(np.outer(RESNET18, o) / 8) + 4 for o in ((2, 3, 4, 8), (2, 3, 4, 8, 16))]
    for options, size_costs in zip(((2, 3, 4, 8), (2, 3, 4, 8, 16)), sizes, strict=True):
        for seed in range(3):
            costs = resnet18_costs(seed, options)
            for name, solve in (
                (
                    "phi",
                    lambda c=costs, o=options: allocate_bits(
                        c, RESNET18, o, 4.0 * sum(RESNET18), objective="phi"
                    ),
                ),
                (
                    "smallest",
                    lambda c=costs, o=options, s=size_costs: smallest_bits(
                        c, s, 0.08 + c.min(axis=2).sum(axis=1), o, group_names=list("abcde")
                    ),
                ),
            ):
                start = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    bits = solve()
                seconds = time.perf_counter() - start
                choice = [options.index(b) for b in bits]
                sums = costs[:, range(len(RESNET18)), choice].sum(axis=1)
                print(
                    f"K={len(options)} seed={seed} {name:9s} {seconds:6.2f} s  "
                    f"phi={np.ptp(sums):.4f} mean={sums.mean():.4f} "
                    f"avg bits={np.dot(RESNET18, bits) / sum(RESNET18):.2f}"
                    + ("  (time limit)" if caught else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main()
