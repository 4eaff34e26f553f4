"""The typer app, its consoles, and the options and error handling every command shares.

The command modules import the library inside their command functions, and their choices and
defaults come from the torch-free :mod:`fairquant.options`: ``fairquant --help`` and
``fairquant <command> --help`` load neither torch nor scikit-learn.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from enum import Enum, StrEnum
from typing import Annotated, Any, TypeVar, get_args

import typer
from rich.console import Console
from rich.text import Text

from fairquant.errors import ConfigError, FairquantError
from fairquant.options import BACKENDS, DataOptions
from fairquant.schema import FIGURE as FIGURE
from fairquant.schema import RESULTS_CSV

T = TypeVar("T")

app = typer.Typer(
    help="Audit who pays when a neural network is quantized: per-group accuracy, loss, "
    "excess loss G(a) and the disparity phi(D).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: an option's description wraps across the terminal's width, where
    # Rich's panels at 80 columns squeeze it beside a type column and fold spellings mid-token
    rich_markup_mode=None,
)
console = Console()
if not console.is_terminal:  # logs and pipes: rich would wrap wide tables at 80 columns
    console.width = max(console.width, 160)
err_console = Console(stderr=True)

CHECKPOINT = "checkpoint.pt"
RESULTS = RESULTS_CSV


def choice(name: str, values: Any) -> type[StrEnum]:
    """A typer choice over the library's own values (a ``Literal`` or a sequence of names), so a
    choice is written once, where the library checks it; a member is the value's string."""
    names: Iterable[str] = get_args(values) or values
    return StrEnum(name, [(v, v) for v in names])


BackendChoice = choice("BackendChoice", BACKENDS)

# Options that several commands share, written once.
Dataset = Annotated[str, typer.Option(metavar="NAME", help="Registered dataset name.")]
Root = Annotated[str | None, typer.Option(metavar="PATH", help="Dataset root folder or file.")]
Target = Annotated[str | None, typer.Option(metavar="NAME", help="Attribute to predict.")]
Group = Annotated[
    str | None, typer.Option(metavar="NAME", help="Protected attribute (default: the target).")
]
ImageSize = Annotated[
    int | None,
    typer.Option(min=4, metavar="PIXELS", help="Image side in pixels (default: the dataset's)."),
]
DataSeed = Annotated[int, typer.Option(metavar="N", help="Seed of the dataset's train/test split.")]
Imbalance = Annotated[
    str,
    typer.Option(
        metavar="RATIOS", help="'paper' (16:16:8:8:4:4:2:2:1:1), 'none' or ratios per class."
    ),
]
Epochs = Annotated[int, typer.Option(min=1, metavar="N", help="Training epochs.")]
BatchSize = Annotated[int, typer.Option(min=2, metavar="N", help="Training batch size.")]
LearningRate = Annotated[float, typer.Option(metavar="X", help="Peak learning rate.")]
Model = Annotated[str, typer.Option(metavar="NAME", help="Registered model name.")]
Grayscale = Annotated[
    bool | None, typer.Option("--grayscale/--no-grayscale", help="Convert images to gray.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Backend = Annotated[BackendChoice, typer.Option(help="Where cells run.")]
Workers = Annotated[
    int | None,
    typer.Option(min=1, metavar="N", help="Processes (process) or local Ray CPUs (ray)."),
]
Bootstrap = Annotated[
    int,
    typer.Option(
        "--bootstrap",
        min=0,
        metavar="N",
        help="Group-stratified bootstrap replicates for 95% intervals in results.csv (0: none).",
    ),
]


def print_line(console_: Console, label: str, style: str, message: object) -> None:
    """One labelled line, its message printed literally: no Rich markup (a path with ``[data]``
    keeps it), no emoji codes (``facts:m:`` stays), no highlighting; ``soft_wrap`` keeps it one
    line (logs and grep see it whole, never broken inside a path)."""
    console_.print(
        Text.assemble((f"{label}:", style), " ", str(message)),
        markup=False,
        emoji=False,
        highlight=False,
        soft_wrap=True,
    )


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print_line(err_console, "warning", "yellow", message)


@contextmanager
def user_errors() -> Iterator[None]:
    """Show fairquant's own errors as one clear line and exit with status 2, no traceback."""
    try:
        with warnings.catch_warnings():  # warnings too, one line each (e.g. skipped files)
            warnings.showwarning = show_warning
            yield
    except FairquantError as e:
        print_line(err_console, "error", "bold red", spelled(e))
        raise typer.Exit(2) from None


def spelled(error: FairquantError) -> str:
    """The error's message, the library parameter it names first (``ConfigError.parameter``)
    spelled as the running command's flag: a data option's by :data:`DATA_OPTIONS`, any other
    parameter's by its own name."""
    message, parameter = str(error), getattr(error, "parameter", None)
    ctx = current_context()
    if parameter is None or ctx is None or not message.startswith(parameter):
        return message
    flags = {p.name: max(p.opts, key=len) for p in ctx.command.params}
    names = [DATA_OPTIONS[parameter][0]] if parameter in DATA_OPTIONS else []
    flag = next((flags[n] for n in [*names, parameter] if n in flags), parameter)
    return flag + message.removeprefix(parameter)


def current_context() -> Any:
    """The running command's click context, or None outside one."""
    try:  # typer's own copy of click (recent typer), else click
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    return get_current_context(silent=True)


def given(ctx: typer.Context, names: Iterable[str]) -> list[str]:
    """The options among parameter ``names`` that the user gave (on the command line or from
    the environment; a default, even when typed, is given too), as the command line spells them."""
    spelled = {p.name: max(p.opts, key=len) for p in ctx.command.params}
    sources = ("COMMANDLINE", "ENVIRONMENT")  # names: typer may vendor its own click
    source = {n: getattr(ctx.get_parameter_source(n), "name", "") for n in names}
    return [spelled[n] for n in names if source[n] in sources]


def refuse_given(ctx: typer.Context, names: Iterable[str], why: str) -> None:
    """An option that does not apply to what was asked is an error that says ``why``, never
    silently ignored."""
    found = given(ctx, names)
    if found:
        verb = "does" if len(found) == 1 else "do"
        raise ConfigError(f"{', '.join(found)} {verb} not apply {why}")


def keyword_default(function: Any, name: str) -> Any:
    """The default of ``function``'s keyword ``name``: an option's default read from the library."""
    return inspect.signature(function).parameters[name].default


def parse_ints(text: str, option: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``option`` names the option in the error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(f"{option} {text!r}: expected comma-separated integers")
    return values


def fraction_or_count(value: float) -> float | int:
    """A size option read as a float: a fraction in (0, 1) stays one, 1 or more is a count.

    >>> fraction_or_count(0.2), fraction_or_count(500.0)
    (0.2, 500)
    """
    return int(value) if value >= 1 else value


DatasetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        metavar="KEY=VALUE",
        help="Dataset option KEY=VALUE, repeatable; VALUE is read as JSON when it parses "
        '(age_buckets=[18,40,60], limit=500, split="random"), else as text.',
    ),
]

#: Each :class:`~fairquant.options.DataOptions` field's command-line parameter and its option,
#: in the help's order: the one place the data options are spelled, and where an error naming a
#: field finds its flag (:func:`spelled`).
DATA_OPTIONS: dict[str, tuple[str, Any]] = {
    "dataset": ("dataset", Dataset),
    "root": ("root", Root),
    "target": ("target", Target),
    "group": ("group", Group),
    "image_size": ("image_size", ImageSize),
    "imbalance": ("imbalance", Imbalance),
    "seed": ("data_seed", DataSeed),
    "grayscale": ("grayscale", Grayscale),
    "options": ("option", DatasetOption),
}


#: What a command's parameter ``data`` defaults to in its signature: :func:`data_options`
#: replaces the parameter by the data options.
DATA = DataOptions()


def data_options(
    *, leave_out: Iterable[str] = (), seed: str | None = None, **options: tuple[Any, Any]
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Give a command the data options as one :class:`~fairquant.options.DataOptions`: its
    parameter ``data`` stands for the options of :data:`DATA_OPTIONS` (their defaults the
    dataclass's), but the fields in ``leave_out`` (left at their defaults).

    ``seed`` names the command's own parameter that seeds the split too (train's ``--seed``);
    ``options`` give a field another ``(option, default)``. ``data`` is None where ``--dataset``
    has no default and is not given.
    """
    defaults = {f.name: f.default for f in fields(DataOptions)} | {"options": None}
    names = {
        field: name
        for field, (name, _) in DATA_OPTIONS.items()
        if field not in leave_out and not (seed and field == "seed")
    }
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    added = []
    for field, name in names.items():
        option, default = options.get(field, (DATA_OPTIONS[field][1], defaults[field]))
        added.append(inspect.Parameter(name, kind, annotation=option, default=default))

    def decorate(command: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(command)
        def with_data(**kwargs: Any) -> T:
            values = {field: kwargs.pop(name) for field, name in names.items()}
            values["options"] = tuple(values.get("options") or ())
            if seed:
                values["seed"] = kwargs[seed]
            data = None if values.get("dataset") is None else DataOptions(**values)
            return command(**kwargs, data=data)

        return replace_parameter(with_data, "data", added)

    return decorate


def replace_parameter(
    function: Callable[..., T], name: str, parameters: list[inspect.Parameter]
) -> Callable[..., T]:
    """``function`` (a wrapper) with its parameter ``name`` replaced by ``parameters`` in the
    signature and annotations typer reads."""
    signature = inspect.signature(function, eval_str=True)
    params = list(signature.parameters.values())
    at = [p.name for p in params].index(name)
    params[at : at + 1] = parameters
    function.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    function.__annotations__ = {p.name: p.annotation for p in params}
    return function


def config_of(cls: type[T], ctx: typer.Context, **values: Any) -> T:
    """A config dataclass of the command's parameters that carry its fields' names (a choice as
    its value), ``values`` given instead."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    given = {k: v.value if isinstance(v, Enum) else v for k, v in ctx.params.items()}
    return cls(**{k: v for k, v in given.items() if k in names} | values)


def command_line() -> list[str]:
    """The running command as given: ``fairquant <command>`` and each option set on the command
    line with its parsed value (what a run folder records, so the run can be repeated)."""
    try:  # typer's own copy of click (recent typer), else click
        from typer._click.core import ParameterSource
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
        from click.core import ParameterSource

    ctx = get_current_context()
    words = ["fairquant", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        if not param.name or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):
            words.append(
                param.opts[0] if value or not param.secondary_opts else param.secondary_opts[0]
            )
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            words += [param.opts[0], str(getattr(item, "value", item))]
    return words
