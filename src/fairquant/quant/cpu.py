"""What the CPU's int8 instructions mean for deployed int8 kernels.

x86 CPUs without VNNI (AVX2 only) multiply uint8 activations by int8 weights with ``vpmaddubsw``,
which adds each pair of products into a 16-bit integer that saturates: 255 * 127 * 2 > 2^15 - 1.
ONNX Runtime's and PyTorch's (fbgemm) int8 kernels then compute wrong sums wherever activations lie
far from their zero point; both toolchains avoid it with a 7th bit less, ORT on the weights
(``reduce_range``), PyTorch on the activations (its default x86 qconfig). VNNI's ``vpdpbusd``
accumulates in 32 bits and does not saturate, so there the 7-bit setting (``-rr``) only gives up
one bit: fairquant advises it only where :func:`x86_without_vnni` detects such a CPU
(:func:`saturation_note`), and says so when it is used elsewhere (:func:`reduce_range_note`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

#: CPU flags of int8 dot products that accumulate in 32 bits.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def lacks_vnni(cpuinfo: str) -> bool:
    """Whether the ``flags`` of Linux's ``/proc/cpuinfo`` text show AVX2 but no VNNI.

    >>> lacks_vnni("flags\t: fpu sse2 avx2 fma"), lacks_vnni("flags\t: avx2 avx512_vnni")
    (True, False)
    """
    line = next((x for x in cpuinfo.splitlines() if x.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    return "avx2" in flags and not flags & VNNI_FLAGS


@cache
def x86_without_vnni() -> bool:
    """Whether this machine is an x86 CPU with AVX2 but no VNNI (False where Linux's
    ``/proc/cpuinfo`` cannot be read)."""
    try:
        return lacks_vnni(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def reduce_range_note(what: str) -> str:
    """The note of a deployed int8 model built with the 7-bit setting (``-rr``) on a CPU that
    :func:`x86_without_vnni` does not detect as one without VNNI."""
    return (
        f"-rr ({what}) is meant only for x86 CPUs without VNNI, whose 8-bit kernels can "
        "saturate; this CPU was not detected as one (fairquant.quant.cpu), so -rr only gives up "
        "one bit here and the form without -rr is the one that ships"
    )


def saturation_note(fix: str) -> str:
    """The note of a deployed int8 model built without the 7-bit setting on such a CPU."""
    return (
        "this x86 CPU has no VNNI: the int8 kernels' 16-bit sums of uint8 x int8 products can "
        f"saturate here (the toolchain's remedy: {fix})"
    )
