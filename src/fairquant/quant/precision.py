"""Named precisions: ``fp32``, ``fp16``, ``bf16`` and weight-only integer formats.

Integer names are ``int<b>`` (the papers' per-tensor symmetric weights, b in 2..16) with optional
suffixes: ``-pc`` for one scale per output channel; ``-fl<k>`` for mixed precision that keeps
the first and last quantized layers at ``k`` bits (Bellam & Kim's FairQAT uses ``-fl8``);
``-a<k>`` to also quantize the input activations of every quantized layer to ``k`` bits with
ranges calibrated once (static), or ``-da<k>`` with ranges taken per batch (dynamic); ``-bn`` to
fold BatchNorm into the preceding convolution before quantizing (as deployed int8 kernels do).
For example ``int4``, ``int4-pc``, ``int4-fl8``, ``int8-a8``, ``int8-da8``, ``int3-pc-fl8``.

Deployed precisions (``torch:int8``, ``ort:int8-pc``, ``torchao:int8dq``, ``openvino:int8``, ...)
are spelled ``toolchain:spec`` and parse to a :class:`~fairquant.quant.configs.DeployedPrecision`
that carries its workflow's config (see :mod:`fairquant.quant.deployed` for what each builds).
This module is the one place a precision's spelling is read: :func:`parse_precision` takes every
form, and the rest of fairquant asks the parsed object, never the string.

A precision with bits chosen per layer (``fairquant allocate``) is saved as a JSON spec and named
``@path/to/spec.json`` wherever precisions are accepted. Its ``name`` is its own: never a built-in
name (``int8``, ``fp16``, ...), never one another precision of the same list has
(:func:`check_unique`), and without ``,``, ``:`` or a leading ``@``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from fairquant._io import atomic_write
from fairquant.errors import ConfigError
from fairquant.options import DEFAULT_PRECISIONS as DEFAULT_PRECISIONS
from fairquant.quant.configs import (
    FORMS,
    INT4_GROUP_SIZES,
    ORT_CALIBRATIONS,
    DeployedConfig,
    DeployedPrecision,
    OpenVinoConfig,
    OrtDynamicConfig,
    OrtStaticConfig,
    TorchaoConfig,
    TorchInt8Config,
)
from fairquant.quant.functional import MAX_BITS, MIN_BITS

_FLOATS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Weight bits that mean "not quantized" in a per-layer spec: the layer stays in float.
FLOAT_BITS = 32

@dataclass(frozen=True)
class Precision:
    """A numeric format for a model: a float dtype, or b-bit integer weights in float32 compute."""

    name: str
    kind: Literal["float", "int"]
    bits: int
    per_channel: bool = False
    edge_bits: int | None = None
    act_bits: int | None = None
    dynamic: bool = False
    fold_bn: bool = False
    layers: tuple[tuple[str, int], ...] = ()
    """Per-layer weight bits ``(layer name, bits)`` that override ``bits`` and ``edge_bits``;
    :data:`FLOAT_BITS` keeps a layer in float."""
    spec_file: str | None = field(default=None, compare=False, repr=False)
    """The JSON spec it was read from (``@path``), if any."""

    deployed = False
    twin = None

    @property
    def toolchain(self) -> str:
        """``fairquant``: simulated in float32 by fairquant's own quantizer."""
        return "fairquant"

    @property
    def needs_calibration(self) -> bool:
        """Whether building it takes calibration inputs (static activation ranges)."""
        return self.act_bits is not None and not self.dynamic

    @property
    def float_layers(self) -> tuple[str, ...]:
        """The layers this precision keeps in float."""
        return tuple(name for name, b in self.layers if b >= FLOAT_BITS)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = dict(self.layers)
        del d["spec_file"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "precision spec") -> Precision:
        fields = set(cls.__dataclass_fields__)
        if not isinstance(d, dict) or "name" not in d or set(d) - fields:
            raise ConfigError(
                f"{source}: expected an object with keys from {sorted(fields)} including 'name'; "
                f"got {sorted(d) if isinstance(d, dict) else type(d).__name__}"
            )
        if d.get("kind", "int") != "int":
            return _parse_simulated(d["name"])
        layers = d.get("layers") or {}
        if not isinstance(layers, dict):
            raise ConfigError(f"{source}: 'layers' must map layer names to bits; got {layers!r}")
        for layer, b in layers.items():
            if b != FLOAT_BITS:
                _bits(f"{source} layer {layer!r}", str(b))
        out = _parse_simulated(f"int{d.get('bits', 8)}")
        return replace(
            out,
            name=str(d["name"]),
            per_channel=bool(d.get("per_channel", False)),
            edge_bits=d.get("edge_bits"),
            act_bits=d.get("act_bits"),
            dynamic=bool(d.get("dynamic", False)),
            fold_bn=bool(d.get("fold_bn", False)),
            layers=tuple((str(k), int(v)) for k, v in layers.items()),
        )

    def save(self, path: str | Path) -> Path:
        """Write this precision as a JSON spec, atomically; its name must be one a spec may
        take (not a built-in precision's: ``parse_precision("@FILE")`` would refuse it)."""
        _check_spec_name(self.name, f"precision spec {path}")
        text = json.dumps(self.to_dict(), indent=2)
        return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))

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


def _bits(text: str, value: str) -> int:
    if not value.isdigit() or not MIN_BITS <= int(value) <= MAX_BITS:
        raise ConfigError(
            f"precision {text!r}: integer bits must lie in {MIN_BITS}..{MAX_BITS}; got {value!r}"
        )
    return int(value)


AnyPrecision = Precision | DeployedPrecision


def parse_precision(text: str) -> AnyPrecision:
    """Parse any precision: ``fp32``, ``fp16``, ``bf16``,
    ``int<b>[-pc][-fl<k>][-a<k>|-da<k>][-bn]``, ``@spec.json``, or a deployed ``toolchain:spec``
    (:data:`~fairquant.quant.configs.FORMS`).

    >>> p = parse_precision("int4-pc-fl8")
    >>> p.bits, p.per_channel, p.edge_bits, p.act_bits
    (4, True, 8, None)
    >>> parse_precision("int8-da8").dynamic
    True
    """
    if text.strip().startswith("@"):
        return _load_spec(Path(text.strip()[1:]))
    if re.match(r"\s*[a-z][a-z0-9_]*:", text.lower()):
        return _parse_deployed(text)
    return _parse_simulated(text)


def _parse_simulated(text: str) -> Precision:
    name = text.strip().lower()
    if name in _FLOATS:
        return Precision(name, "float", 32 if name == "fp32" else 16)
    head, *suffixes = name.split("-")
    if not head.startswith("int") or not head[3:]:
        raise ConfigError(
            f"unknown precision {text!r}; expected fp32, fp16, bf16, or int<b> with b in 2..16 "
            "and optional suffixes -pc (per channel), -fl<k> (first and last layers at k bits), "
            "-a<k> / -da<k> (static / dynamic k-bit activations), e.g. int4, int4-fl8, int8-a8"
        )
    bits = _bits(text, head[3:])
    per_channel, edge_bits, act_bits, dynamic, fold_bn = False, None, None, False, False
    for suffix in suffixes:
        if suffix == "pc" and not per_channel:
            per_channel = True
        elif suffix == "bn" and not fold_bn:
            fold_bn = True
        elif suffix.startswith("fl") and edge_bits is None:
            edge_bits = _bits(text, suffix[2:])
        elif suffix.startswith(("a", "da")) and act_bits is None:
            dynamic = suffix.startswith("da")
            act_bits = _bits(text, suffix[2:] if dynamic else suffix[1:])
        else:
            raise ConfigError(
                f"precision {text!r}: unknown or repeated suffix {suffix!r}; expected -pc, "
                "-fl<k>, -a<k>, -da<k> or -bn"
            )
    return Precision(name, "int", bits, per_channel, edge_bits, act_bits, dynamic, fold_bn)


def _load_spec(path: Path) -> Precision:
    if not path.is_file():
        raise ConfigError(f"precision spec {path} does not exist")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"precision spec {path} is not valid JSON: {e}") from None
    source = f"precision spec {path}"
    if isinstance(d, dict) and "name" in d:
        _check_spec_name(d["name"], source)
    return replace(Precision.from_dict(d, source=source), spec_file=str(path))


def _check_spec_name(name: Any, source: str) -> None:
    """A spec's name must be its own: not a built-in precision, and listable in a precision list
    (no ``,`` or ``:``, no leading ``@``, no surrounding spaces, not empty)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: name {name!r} is empty; expected a name of its own")
    for bad, why in ((",", "separates precisions in a list"), (":", "marks a deployed precision")):
        if bad in name:
            raise ConfigError(
                f"{source}: name {name!r} contains {bad!r}, which {why}; expected a name of its "
                "own without it"
            )
    if name.startswith("@"):
        raise ConfigError(f"{source}: name {name!r} starts with '@', which names a spec file")
    if name != name.strip():
        raise ConfigError(f"{source}: name {name!r} has leading or trailing spaces")
    try:
        parse_precision(name)
    except ConfigError:
        return
    raise ConfigError(
        f"{source}: name {name!r} is a built-in precision; a spec cannot take it (it would "
        "shadow the built-in in the results): give the spec a name of its own in the file"
    )


def check_unique(precisions: Sequence[Any]) -> None:
    """Refuse a list that names a precision twice (two spec files with one name too), or spells
    one precision two ways (``int4-pc-fl8`` and ``int4-fl8-pc``, ``ort:int8-pc-entropy`` and
    ``ort:int8-entropy-pc``). Works for simulated and deployed precisions alike (frozen
    dataclasses with a ``name``). A spec is known by its own name: one whose bits equal a
    built-in's may stand beside it."""
    seen: dict[str, Any] = {}
    for p in precisions:
        if p.name in seen:
            raise ConfigError(
                f"precision {p.name!r} is listed twice; list each precision once (fp32, the "
                "reference, is always audited)"
            )
        for other in seen.values():
            if _spelling(p) and _spelling(other) and _same(p, other):
                raise ConfigError(
                    f"precision {p.name!r} is the same precision as {other.name!r}; list it once"
                )
        seen[p.name] = p


def _spelling(p: Any) -> bool:
    """Whether ``p``'s name spells its settings (a deployed name, ``int4-pc``), not a spec's own
    name; floats are always spelled one way."""
    if not isinstance(p, Precision):
        return True
    try:
        return p.kind == "int" and parse_precision(p.name) == p
    except ConfigError:
        return False


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and replace(a, name="") == replace(b, name="")


def parse_precisions(text: str | list[str] | tuple[str, ...]) -> list[AnyPrecision]:
    """Parse a comma-separated list (or a sequence) of precisions, in order; a precision listed
    twice is refused (:func:`check_unique`)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = [parse_precision(str(item)) for item in items if str(item).strip()]
    if not out:
        raise ConfigError(f"no precision given in {text!r}; expected e.g. 'fp32,int8,int4'")
    check_unique(out)
    return out


def _unknown(name: str, why: str = "") -> ConfigError:
    return ConfigError(
        f"unknown deployed precision {name!r}{why}; expected one of: {', '.join(FORMS)}"
    )


def _parse_deployed(name: str) -> DeployedPrecision:
    """Parse a deployed precision name (the forms: :data:`~fairquant.quant.configs.FORMS`).

    >>> p = parse_precision("ort:int8-pc-entropy")
    >>> p.toolchain, p.bits, p.twin, p.config.calibration
    ('ort', 8, 'int8-pc-a8', 'entropy')
    """
    text = name.strip().lower()
    toolchain, _, spec = text.partition(":")
    head, *suffixes = spec.split("-")
    if len(set(suffixes)) != len(suffixes):
        raise _unknown(name, " (a repeated suffix)")
    if toolchain == "torch" and spec in ("int8", "int8-rr"):
        rr = spec == "int8-rr"
        twin = "int8-a7-bn" if rr else "int8-a8-bn"
        return DeployedPrecision(text, "torch", 8, twin, TorchInt8Config(reduce_range=rr))
    if toolchain == "ort" and head == "int8":
        return _parse_ort(name, text, suffixes)
    if toolchain == "torchao" and head in ("int8wo", "int8dq") and not suffixes:
        twin = "int8-pc" if head == "int8wo" else "int8-pc-da8"
        return DeployedPrecision(text, "torchao", 8, twin, TorchaoConfig(head))
    if toolchain == "torchao" and head == "int4wo" and len(suffixes) <= 1:
        size = suffixes[0][1:] if suffixes else "128"
        if suffixes and (not suffixes[0].startswith("g") or not size.isdigit()):
            raise _unknown(name)
        if int(size) not in INT4_GROUP_SIZES:
            raise _unknown(name, f" (int4 group size {size} is not one of {INT4_GROUP_SIZES})")
        return DeployedPrecision(text, "torchao", 4, None, TorchaoConfig("int4wo", int(size)))
    if toolchain == "openvino" and head == "int8" and set(suffixes) <= {"mixed", "bc"}:
        config = OpenVinoConfig(
            preset="mixed" if "mixed" in suffixes else "performance",
            fast_bias_correction="bc" not in suffixes,
        )
        return DeployedPrecision(text, "openvino", 8, "int8-pc-a8", config)
    raise _unknown(name)


def _parse_ort(name: str, text: str, suffixes: list[str]) -> DeployedPrecision:
    dynamic = "dynamic" in suffixes
    per_channel = "pc" in suffixes
    reduce_range = "rr" in suffixes
    calibrations = [s for s in suffixes if s in ORT_CALIBRATIONS]
    unknown = set(suffixes) - {"dynamic", "pc", "rr", *ORT_CALIBRATIONS}
    if unknown or len(calibrations) > 1 or (dynamic and calibrations):
        raise _unknown(name)
    bits = 7 if reduce_range else 8
    if per_channel:
        twin = f"int{bits}-pc-{'da8' if dynamic else 'a8'}"
    else:
        twin = f"int{bits}-{'da8' if dynamic else 'a8'}-bn"
    config: DeployedConfig = (
        OrtDynamicConfig(per_channel, reduce_range)
        if dynamic
        else OrtStaticConfig(
            per_channel, calibrations[0] if calibrations else "minmax", reduce_range
        )
    )
    return DeployedPrecision(text, "ort", bits, twin, config)
