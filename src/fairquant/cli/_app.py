"""The typer app, its consoles, and the options and error handling every command shares."""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any, get_args

import typer
from rich.console import Console
from rich.markup import escape

from fairquant.data import PAPER_RATIO, DataSpec
from fairquant.errors import ConfigError, FairquantError
from fairquant.experiments.backends import BACKENDS

app = typer.Typer(
    help="Audit who pays when a neural network is quantized: per-group accuracy, loss, "
    "excess loss G(a) and the disparity phi(D).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
if not console.is_terminal:  # logs and pipes: rich would wrap wide tables at 80 columns
    console.width = max(console.width, 160)
err_console = Console(stderr=True)

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.csv"
FIGURE = "group_accuracy.png"


def choice(name: str, values: Any) -> type[StrEnum]:
    """A typer choice over the library's own values (a ``Literal`` or a sequence of names), so a
    choice is written once, where the library checks it; a member is the value's string."""
    names: Iterable[str] = get_args(values) or values
    return StrEnum(name, [(v, v) for v in names])


BackendChoice = choice("BackendChoice", BACKENDS)

# Options that several commands share, written once.
Dataset = Annotated[str, typer.Option(help="Registered dataset name.")]
Root = Annotated[str | None, typer.Option(help="Dataset root folder or file.")]
Target = Annotated[str | None, typer.Option(help="Attribute to predict.")]
Group = Annotated[str | None, typer.Option(help="Protected attribute (default: target).")]
ImageSize = Annotated[int | None, typer.Option(min=4)]
Imbalance = Annotated[
    str, typer.Option(help="'paper' (16:16:8:8:4:4:2:2:1:1), 'none' or ratios per class.")
]
Model = Annotated[str, typer.Option(help="Registered model name.")]
Grayscale = Annotated[
    bool | None, typer.Option("--grayscale/--no-grayscale", help="Convert images to gray.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Backend = Annotated[BackendChoice, typer.Option(help="Where cells run.")]
Workers = Annotated[
    int | None, typer.Option(min=1, help="Processes (process) or local Ray CPUs (ray).")
]
Bootstrap = Annotated[
    int,
    typer.Option(
        "--bootstrap",
        min=0,
        help="Group-stratified bootstrap replicates for 95% intervals in results.csv (0: none).",
    ),
]


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = escape(str(message))  # its brackets are text, not rich markup
    err_console.print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Show fairquant's own errors as one clear line and exit with status 2, no traceback."""
    try:
        with warnings.catch_warnings():  # warnings too, one line each (e.g. skipped files)
            warnings.showwarning = show_warning
            yield
    except FairquantError as e:
        # soft_wrap: one line per error, never broken inside a path (logs and grep see it whole)
        # escape: a message's own brackets ("fairquant[onnx]") are text, not rich markup
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


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


def parse_imbalance(text: str) -> tuple[float, ...] | None:
    if text == "none":
        return None
    if text == "paper":
        return PAPER_RATIO
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--imbalance {text!r}: expected 'paper', 'none' or comma-separated ratios "
            "like '16,16,8,8,4,4,2,2,1,1'"
        ) from None


DataOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        help="Dataset option KEY=VALUE, repeatable; VALUE is read as JSON when it parses "
        '(age_buckets=[18,40,60], limit=500, split="random"), else as text.',
    ),
]


def parse_option(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value), the value parsed as a JSON literal (never evaluated)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--option {item!r}: expected KEY=VALUE, e.g. age_buckets=[18,40,60]")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return key.strip(), value


def data_spec(
    dataset: str,
    *,
    root: str | None,
    target: str | None,
    group: str | None,
    imbalance: str,
    seed: int,
    option: list[str] | None,
    grayscale: bool | None = None,
    image_size: int | None = None,
) -> DataSpec:
    """The dataset spec of the shared data options (``train``, ``datasets``, ``mitigate``)."""
    options = dict(parse_option(item) for item in option or [])
    if grayscale is not None:
        options["grayscale"] = grayscale
    return DataSpec(
        name=dataset,
        root=root,
        target=target,
        group=group,
        image_size=image_size,
        imbalance=parse_imbalance(imbalance),
        seed=seed,
        options=options,
    )


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
