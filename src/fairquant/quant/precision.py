"""Named precisions: ``fp32``, ``fp16``, ``bf16`` and ``int2`` ... ``int16`` (weights-only PTQ)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from fairquant.errors import ConfigError
from fairquant.quant.functional import check_bits

_FLOATS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: The precisions the papers compare, highest first.
DEFAULT_PRECISIONS = ("fp32", "fp16", "bf16", "int16", "int8", "int4", "int3", "int2")


@dataclass(frozen=True, order=False)
class Precision:
    """A numeric format for a model: a float dtype, or b-bit integer weights in float32 compute."""

    name: str
    kind: Literal["float", "int"]
    bits: int

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in."""
        return _FLOATS.get(self.name, torch.float32)

    @property
    def is_reference(self) -> bool:
        return self.name == "fp32"

    @property
    def sort_key(self) -> tuple[int, int]:
        """Floats before integers, then by bits, highest first (fp32, fp16, bf16, int16, ...)."""
        return (0 if self.kind == "float" else 1, -self.bits)


def parse_precision(text: str) -> Precision:
    """Parse ``fp32``, ``fp16``, ``bf16`` or ``int<b>`` with ``b`` in 2..16.

    >>> parse_precision("int4")
    Precision(name='int4', kind='int', bits=4)
    """
    name = text.strip().lower()
    if name in _FLOATS:
        return Precision(name, "float", 32 if name == "fp32" else 16)
    if name.startswith("int") and name[3:].isdigit():
        bits = int(name[3:])
        try:
            check_bits(bits)
        except ConfigError:
            raise ConfigError(
                f"precision {text!r}: integer bits must lie in 2..16; got {bits}"
            ) from None
        return Precision(name, "int", bits)
    raise ConfigError(
        f"unknown precision {text!r}; expected fp32, fp16, bf16, or int<b> with b in 2..16 "
        "(e.g. int8, int4)"
    )


def parse_precisions(text: str | list[str] | tuple[str, ...]) -> list[Precision]:
    """Parse a comma-separated list (or a sequence) of precisions, dropping duplicates in order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[Precision] = []
    for item in items:
        if not str(item).strip():
            continue
        p = parse_precision(str(item))
        if p not in out:
            out.append(p)
    if not out:
        raise ConfigError(f"no precision given in {text!r}; expected e.g. 'fp32,int8,int4'")
    return out
