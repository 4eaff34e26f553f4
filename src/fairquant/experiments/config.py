"""The experiment file: one YAML document that names a whole grid, validated with pydantic.

An experiment is the product of its axes: ``datasets x models x mitigations x seeds`` cells, each
trained once with ``training`` and then quantized and audited for every method in ``methods`` at
its ``precisions``: fairquant's simulated ones (``int4``, ``int8-a8``, ``@spec.json``) and the
toolchains people deploy with (``torch:int8``, ``ort:int8``, ``torchao:int8dq``, ...), any
spelling :func:`~fairquant.quant.precision.parse_precision` reads. The file is read with
``yaml.safe_load`` (plain data only: nothing in it is ever executed) and checked key by key; an
error names the key's path (``datasets[1].image_size``), what is wrong with it and, where there
is a fixed set, the allowed values.

A file may carry ``scales:``, a mapping from a scale name (``tiny``, ``cpu``, ``gpu``) to
overrides merged into the document when that scale is asked for (mappings merge key by key, any
other value replaces the base value), so one file describes a study from a seconds-long smoke test
to the paper's size. ``dataset_defaults:`` holds dataset keys (``image_size``, ``options``, ...)
merged under every entry of ``datasets`` (an entry's own values win).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from fairquant._explain import explain_model
from fairquant.data.base import DataSpec
from fairquant.errors import ConfigError
from fairquant.metrics.policy import CONFIDENCE, N_BOOTSTRAP
from fairquant.metrics.uncertainty import check_bootstrap
from fairquant.mitigate.pipeline import parse_mitigation
from fairquant.models.registry import MODELS, ModelSpec
from fairquant.quant.methods import METHODS, make_quantizer
from fairquant.quant.precision import AnyPrecision, parse_precision
from fairquant.quant.qat import DEFAULT_QAT_CONFIG
from fairquant.schema import label_problem
from fairquant.train.loop import TrainConfig

SCALES = ("tiny", "cpu", "gpu")


def _check_precision(name: str) -> str:
    try:
        parse_precision(name)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return name


def _check_mitigation(name: str) -> str:
    """A name :func:`~fairquant.mitigate.pipeline.parse_mitigation` accepts, in its own form."""
    try:
        return parse_mitigation(name).name
    except ConfigError as e:
        raise ValueError(str(e)) from None


PrecisionName = Annotated[str, AfterValidator(_check_precision)]
MitigationName = Annotated[str, AfterValidator(_check_mitigation)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def dataclass_fields(
    cls: type, names: typing.Iterable[str] | None = None, *, defaults: object | None = None
) -> dict[str, Any]:
    """pydantic field definitions ``{name: (type, default)}`` of the dataclass ``cls``'s fields
    (``names``: these, in this order; default: all), typed and defaulted by the dataclass itself
    (or by the instance ``defaults``), so the YAML edge never writes a type or default again."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for name in by_name if names is None else names:
        f = by_name[name]
        if defaults is not None:
            default: Any = copy.deepcopy(getattr(defaults, name))
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = ...
        out[name] = (hints[name], default)
    return out


def keyword_fields(function: Any, constraints: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """pydantic field definitions of ``function``'s keyword parameters named in
    ``constraints``: their type hints and defaults, read from the signature, each with its
    constraints (``{"rtol": {"gt": 0}}``)."""
    hints = typing.get_type_hints(function)
    parameters = inspect.signature(function).parameters
    return {
        name: (hints[name], Field(parameters[name].default, **limits))
        for name, limits in constraints.items()
    }


class _Builds(_Strict):
    """A model whose keys are a dataclass's fields; validating builds the dataclass, so its
    own checks (``__post_init__``) run and their message is the key's error."""

    builds: ClassVar[type]

    def arguments(self) -> dict[str, Any]:
        """The dataclass's keyword arguments (for validation: all that a build needs)."""
        names = {f.name for f in dataclasses.fields(self.builds)}
        return {k: v for k, v in self.model_dump().items() if k in names}

    @model_validator(mode="after")
    def _dataclass_checks(self) -> Any:
        try:
            self.builds(**self.arguments())
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self


class DatasetConfig(
    create_model("_DataSpecFields", __base__=_Builds, **dataclass_fields(DataSpec))  # type: ignore[misc]
):
    """One dataset of the grid: a :class:`~fairquant.data.DataSpec` plus the label its rows get.

    ``root`` is relative to the experiment's ``data_root`` unless absolute. ``label`` (default:
    the name, with ``-imbalanced`` when ``imbalance`` is set) is the ``dataset`` column of
    ``results.csv`` and must be unique in the file.
    """

    builds: ClassVar[type] = DataSpec
    label: str | None = None

    @property
    def key(self) -> str:
        if self.label is not None:
            return self.label
        return f"{self.name}-imbalanced" if self.imbalance is not None else self.name

    def spec(self, data_root: Path) -> DataSpec:
        """The data spec, with ``root`` resolved against ``data_root``."""
        root = None if self.root is None else str((data_root / self.root).resolve())
        return DataSpec(**{**self.arguments(), "root": root, "options": dict(self.options)})


_MODEL_OPTIONS = [f.name for f in dataclasses.fields(ModelSpec) if f.name not in ("name", "width")]


class ModelConfig(
    create_model(  # type: ignore[misc]
        "_ModelSpecFields", __base__=_Builds, **dataclass_fields(ModelSpec, ["name", "width"])
    )
):
    """An architecture of the model registry, its width and further
    :class:`~fairquant.models.ModelSpec` sizes in ``options`` (e.g. a ViT's ``patch_size``).

    ``label`` (default: the name) is the ``model`` column of ``results.csv``.
    """

    builds: ClassVar[type] = ModelSpec
    options: dict[str, int] = Field(default_factory=dict)
    label: str | None = None

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; expected one of: {', '.join(MODELS)}")
        return value

    @field_validator("options")
    @classmethod
    def _spec_fields(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(_MODEL_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown model option(s) {unknown}; expected: {', '.join(_MODEL_OPTIONS)}"
            )
        return value

    def arguments(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, **self.options}

    @property
    def key(self) -> str:
        return self.label or self.name

    def spec(self) -> ModelSpec:
        return ModelSpec(**self.arguments())


#: TrainConfig's fields but the seed (a grid axis): a training recipe.
_RECIPE = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed"]


class TrainingConfig(
    create_model(  # type: ignore[misc]
        "_TrainConfigFields", __base__=_Builds, **dataclass_fields(TrainConfig, _RECIPE)
    )
):
    """:class:`~fairquant.train.TrainConfig` without its seed (the seed is a grid axis)."""

    builds: ClassVar[type] = TrainConfig

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(**self.arguments(), seed=seed)


class _Method(_Builds):
    builds: ClassVar[type] = TrainConfig
    name: Literal[METHODS]  # type: ignore[valid-type]
    precisions: list[PrecisionName] | None = None

    def qat_config(self, seed: int) -> TrainConfig:
        return TrainConfig(**self.arguments(), seed=seed)


MethodConfig = create_model(
    "MethodConfig",
    __base__=_Method,
    __doc__="""PTQ or QAT. ``precisions`` overrides the experiment's list for this method; the
    QAT fine-tune takes :class:`~fairquant.train.TrainConfig`'s keys but the seed (the cell's),
    by default :data:`~fairquant.quant.qat.DEFAULT_QAT_CONFIG`'s; PTQ's activation precisions
    calibrate on ``calib_size`` training images (balanced across groups with mitigation
    ``balanced-calib``; default: :func:`~fairquant.quant.methods.make_quantizer`'s).
    """,
    **dataclass_fields(TrainConfig, _RECIPE, defaults=DEFAULT_QAT_CONFIG),
    **keyword_fields(make_quantizer, {"calib_size": {"ge": 1}}),
)


class _Explain(_Strict):
    enabled: bool = False
    precisions: list[PrecisionName] | None = None


ExplainConfig = create_model(
    "ExplainConfig",
    __base__=_Explain,
    __doc__="""The impact-flow and curvature step (:func:`fairquant.explain`) per cell, at
    the PTQ precisions (``precisions`` overrides them); the other keys are
    :func:`~fairquant._explain.explain_model`'s, with its defaults.""",
    **keyword_fields(
        explain_model,
        {
            "curvature": {},
            "rtol": {"gt": 0},
            "max_probes": {"ge": 10},
            "sketch": {"ge": 1},
            "eig_max_iter": {"ge": 1},
            "samples_per_group": {"ge": 1},
        },
    ),
)


class ResourcesConfig(_Strict):
    """What one cell asks of a Ray cluster (``--backend ray``)."""

    num_cpus: float = Field(default=1, gt=0)
    num_gpus: float = Field(default=0, ge=0)


class ExperimentConfig(_Strict):
    """A whole experiment: the grid's axes and what each cell does."""

    name: str = "experiment"
    data_root: str = "."
    datasets: list[DatasetConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    training: TrainingConfig = TrainingConfig()
    mitigations: list[MitigationName] = Field(default=["none"], min_length=1)
    methods: list[MethodConfig] = Field(min_length=1)
    precisions: list[PrecisionName] = Field(default=["int8", "int4"], min_length=1)
    seeds: list[int] = Field(default=[0], min_length=1)
    bootstrap: int = Field(default=N_BOOTSTRAP, ge=0)
    explain: ExplainConfig = ExplainConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @field_validator("methods", mode="before")
    @classmethod
    def _method_names(cls, value: Any) -> Any:
        """``- ptq`` is short for ``- {name: ptq}``."""
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, value: int) -> int:
        try:
            check_bootstrap(value, CONFIDENCE)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return value

    @model_validator(mode="after")
    def _unique(self) -> ExperimentConfig:
        for axis, keys in (
            ("datasets", [d.key for d in self.datasets]),
            ("models", [m.key for m in self.models]),
            ("methods", [m.name for m in self.methods]),
            ("mitigations", self.mitigations),
            ("seeds", self.seeds),
        ):
            dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
            if dupes:
                hint = " (give each a distinct `label`)" if axis in ("datasets", "models") else ""
                raise ValueError(f"{axis} repeat {dupes}{hint}")
            if axis in ("datasets", "models", "mitigations"):
                for key in keys:
                    problem = label_problem(key)
                    if problem:
                        raise ValueError(f"{axis}: the key {key!r} {problem}")
        return self

    @model_validator(mode="after")
    def _deployed(self) -> ExperimentConfig:
        """A deployed precision is the toolchain's own post-training quantization: refused
        where fairquant would have to change how it is quantized (QAT, FairQAT's 8-bit first
        and last layers below 8 bits) or to differentiate it (explain)."""
        for i, method in enumerate(self.methods):
            key = f"methods[{i}].precisions" if method.precisions is not None else "precisions"
            names = method.precisions or self.precisions
            for j, name in enumerate(names):
                p = parse_precision(name)
                if method.name == "qat" and p.deployed:
                    raise ValueError(
                        f"{key}[{j}]: {name!r} is {p.toolchain}'s own post-training "
                        f"quantization; methods[{i}] (qat) fine-tunes fairquant's simulated "
                        "weights and cannot build it: give qat its own `precisions:` without "
                        "deployed ones (methods: [ptq, {name: qat, precisions: [int8, int4]}])"
                    )
                for k, mitigation in enumerate(self.mitigations):
                    edge = parse_mitigation(mitigation).edge_bits
                    if p.deployed and edge is not None and p.bits < edge:
                        raise ValueError(
                            f"mitigations[{k}]: {mitigation!r} keeps the first and last layers "
                            f"at {edge} bits, which {name!r} ({key}[{j}]) cannot express (per "
                            "layer it can only keep a layer in float); list it under another "
                            "mitigation's run, or drop it"
                        )
        for j, name in enumerate(self.explain.precisions or []):
            if parse_precision(name).deployed:
                raise ValueError(
                    f"explain.precisions[{j}]: {name!r} is a deployed precision; explain takes "
                    "gradients through fairquant's simulated precisions only (its twin, e.g. "
                    "int8-a8-bn for torch:int8, stands in for it)"
                )
        return self

    def method_precisions(self, method: MethodConfig) -> list[AnyPrecision]:
        return [parse_precision(p) for p in (method.precisions or self.precisions)]

    def explain_precisions(self) -> list[AnyPrecision]:
        """``explain.precisions``, else PTQ's (else the experiment's) simulated precisions:
        curvature takes gradients, which a deployed artifact has not."""
        if self.explain.precisions is not None:
            return [parse_precision(p) for p in self.explain.precisions]
        ptq = [m for m in self.methods if m.name == "ptq"]
        names = (ptq[0].precisions or self.precisions) if ptq else self.precisions
        return [p for p in map(parse_precision, names) if not p.deployed]


def merge(base: Any, override: Any) -> Any:
    """``override`` merged into ``base``: mappings key by key, anything else replaced.

    >>> merge({"a": {"x": 1, "y": 2}, "b": [1]}, {"a": {"y": 3}, "b": [2]})
    {'a': {'x': 1, 'y': 3}, 'b': [2]}
    """
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def _path(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as ``datasets[1].image_size``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


#: A whole-file check's message that starts with its key: ``methods[1].precisions[2]: ...``.
_LOCATED = re.compile(r"^[a-z_]+(\[\d+\]|\.[a-z_]+)*: ")


def _readable(error: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in error.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = _path(loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if not loc and _LOCATED.match(msg):  # a check across keys names the key it is about
            path, _, msg = msg.partition(": ")
        if e["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            allowed = ", ".join(model.model_fields) if model else "?"
            msg = f"unknown key; allowed keys here: {allowed}"
        lines.append(f"  {path}: {msg}")
    n = len(lines)
    return ConfigError(f"{source}: {n} problem{'s' * (n > 1)}\n" + "\n".join(lines))


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` (for listing its keys)."""
    model: Any = ExperimentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return None
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        model = next(
            (a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if model is None:
            return None
    return model


def parse_config(
    document: Any,
    *,
    scale: str | None = None,
    data_root: str | Path | None = None,
    source: str = "config",
) -> ExperimentConfig:
    """Validate a loaded YAML document (a dict) into an :class:`ExperimentConfig`.

    ``scale`` applies the document's ``scales[scale]`` overrides; ``data_root`` replaces the
    file's ``data_root``.
    """
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: expected a mapping of keys (datasets, models, ...) at the top"
        )
    document = dict(document)
    scales = document.pop("scales", None) or {}
    if not isinstance(scales, dict):
        raise ConfigError(f"{source}: scales must map a scale name to overrides")
    if scale is not None:
        if scale not in scales:
            known = ", ".join(scales) or "none"
            raise ConfigError(f"{source}: no scale {scale!r}; this file defines: {known}")
        document = merge(document, scales[scale])
    defaults = document.pop("dataset_defaults", None) or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: dataset_defaults must be a mapping of dataset keys")
    if defaults and isinstance(document.get("datasets"), list):
        document["datasets"] = [
            merge(defaults, d) if isinstance(d, dict) else d for d in document["datasets"]
        ]
    if data_root is not None:
        document["data_root"] = str(data_root)
    try:
        return ExperimentConfig.model_validate(document)
    except ValidationError as e:
        raise _readable(e, source) from None


def load_config(
    path: str | Path, *, scale: str | None = None, data_root: str | Path | None = None
) -> ExperimentConfig:
    """Read and validate an experiment file; a relative ``data_root`` in the file is taken
    relative to the file's folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read experiment file {path}: {e.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    config = parse_config(document, scale=scale, data_root=data_root, source=str(path))
    if data_root is None and not Path(config.data_root).is_absolute():
        config = config.model_copy(update={"data_root": str(path.parent / config.data_root)})
    return config
