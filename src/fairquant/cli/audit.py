"""`fairquant quickstart` and `fairquant audit`: quantize a model and compare its groups."""

from __future__ import annotations

import functools
import inspect
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from fairquant._io import RunFolder, run_folder
from fairquant.cli._app import (
    CHECKPOINT,
    FIGURE,
    RESULTS,
    Bootstrap,
    DataSeed,
    DatasetOption,
    Grayscale,
    Group,
    ImageSize,
    Model,
    Quiet,
    Root,
    Target,
    app,
    choice,
    command_line,
    config_of,
    console,
    print_line,
    refuse_given,
    replace_parameter,
    user_errors,
)
from fairquant.errors import ConfigError
from fairquant.options import (
    CALIB_SIZE,
    CALIBRATIONS,
    DATA_SEED,
    DEFAULT_MAX_DROP,
    DEFAULT_PRECISIONS,
    DEFAULT_QAT_CONFIG,
    N_BOOTSTRAP,
    NONFINITE,
    QUANT_METHODS,
    DataOptions,
    TrainConfig,
)

if TYPE_CHECKING:
    from fairquant._audit import AuditResult, AuditTarget
    from fairquant.data import GroupedDataset
    from fairquant.metrics.verdict import Tolerance, Verdict

T = TypeVar("T")
MethodChoice = choice("MethodChoice", QUANT_METHODS)
CalibrationChoice = choice("CalibrationChoice", CALIBRATIONS)
NonfiniteChoice = choice("NonfiniteChoice", NONFINITE)
PRECISIONS_HELP = "Comma-separated precisions, spelled as listed above (docs/precisions.md)."
#: The spellings, one family a line under 80 columns (``\b``: click keeps the lines as written,
#: so no spelling is broken at a hyphen or folded).
PRECISIONS_BLOCK = """\b
Precisions (--precisions, comma-separated; docs/precisions.md):
  simulated, fairquant's quantizer:
    fp32  fp16  bf16  int2 .. int16, with suffixes
    -pc (per channel)  -fl<k> (first/last layers at k bits)
    -a<k> (static activations, calibrated)  -da<k> (dynamic activations)
    -bn (BatchNorm folded);  @FILE.json (per-layer bits)
  deployed, the toolchain's own artifact on its kernels:
    torch:int8[-rr]  (PyTorch x86 int8; -rr: 7-bit activations)
    ort:int8[-pc][-minmax|-entropy|-percentile][-rr]
        (ONNX Runtime static QDQ, calibrated on the --calib-size images;
        -rr: 7-bit weights; extra onnx)
    ort:int8-dynamic[-pc][-rr]  (extra onnx)
    torchao:int8wo  torchao:int8dq  torchao:int4wo[-g32|-g64|-g128|-g256]
        (nn.Linear layers only; extra torchao)
    openvino:int8[-mixed][-bc]  (NNCF on OpenVINO; extra openvino)
  -rr only on x86 CPUs without VNNI (AVX2 only), whose 8-bit kernels
  saturate; elsewhere it only gives up a bit (the notes say which)."""
#: The options of a model from elsewhere and its data: a checkpoint records its own.
FOR_MODEL_ONLY = (
    "dataset",
    "root",
    "target",
    "group",
    "image_size",
    "grayscale",
    "option",
    "data_seed",
    "num_classes",
    "in_channels",
    "classes",
    "normalize",
)
MODEL_HELP = (
    "A model trained elsewhere: torchvision:NAME or timm:NAME with --weights FILE; "
    "package.module:function, which IMPORTS AND RUNS that Python code (only this option "
    "does) and takes --weights optionally; or FILE.onnx, run by ONNX Runtime (nothing in the "
    "file is executed). Instead of --checkpoint."
)


def audit_files() -> tuple[str, ...]:
    """What an audit writes, and the default report of it: a rerun removes the ones it does not
    write again (a verdict.json of a run with --max-drop, a report of the earlier results), also
    from a folder an older fairquant wrote (no run.json) or that holds other files."""
    from fairquant._audit import AUDIT_JSON
    from fairquant.report.verdict import VERDICT_JSON, VERDICT_JUNIT

    return (
        *(RESULTS, AUDIT_JSON, FIGURE, VERDICT_JSON, VERDICT_JUNIT),
        *("report.html", "report.md", "report.tex"),
    )


def output_folder(out: Path, tolerance: Tolerance | None, precisions: str, group_names, keep=()):
    """Check what can be checked before any compute (the precisions, the tolerance's groups),
    then open the run folder ``out`` (checked, locked and staged: :func:`run_folder`); the
    files of ``keep`` (the audited checkpoint) and ``@spec`` files stay in it."""
    from fairquant._audit import audit_precisions as check_precisions
    from fairquant.quant.torchao import TorchaoConfig, check_runs_here

    checked = check_precisions(precisions)
    for precision in checked:
        if isinstance(config := getattr(precision, "config", None), TorchaoConfig):
            check_runs_here(config)
    if tolerance is not None:
        if all(p.name == "fp32" for p in checked):
            raise ConfigError(
                f"--max-drop judges quantized precisions against fp32; --precisions "
                f"{precisions!r} lists none: add one (e.g. fp32,int8) or leave out --max-drop"
            )
        tolerance.check_groups(group_names)
    specs = [p.spec_file for p in checked if getattr(p, "spec_file", None)]
    return run_folder(out, command=command_line(), replaces=audit_files(), keep=[*keep, *specs])


def audit_and_report(
    model,
    dataset: GroupedDataset,
    precisions: str,
    out: RunFolder,
    *,
    quiet: bool,
    title: str,
    n_bootstrap: int = N_BOOTSTRAP,
    tolerance: Tolerance | None = None,
    **options,
) -> tuple[AuditResult, Verdict | None]:
    """Audit ``model`` (an nn.Module, or a LoadedModel that records its source) on the test
    split of ``dataset`` (``options``: :func:`fairquant.audit`'s), write its folder into the run
    folder ``out`` (:func:`fairquant.report.audit.write_audit`, judged with a ``tolerance``) and
    print the verdict, the table and the notes."""
    from fairquant._audit import audit as run_audit
    from fairquant.metrics.frame import EmptyGroupWarning, UndefinedMetricWarning
    from fairquant.report.audit import write_audit

    with warnings.catch_warnings():  # these say what the notes below say: print them once
        warnings.simplefilter("ignore", EmptyGroupWarning)
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result = run_audit(
            model,
            dataset,
            precisions=precisions,
            calib_seed=dataset.spec.seed,
            batch_size=512,
            n_bootstrap=n_bootstrap,
            workdir=out.scratch,
            show_progress=not quiet,
            **options,
        )
    _final_source(result, out)
    written = write_audit(
        result,
        out.stage,
        tolerance=tolerance,
        n_bootstrap=n_bootstrap,
        title=title,
        train_counts=dataset.counts()["train"],
        run=out.run,
    )
    _print_audit(result, written, dataset, title, out)
    return result, written.verdict


def _final_source(result: AuditResult, out: RunFolder) -> None:
    """A model source inside the staged run folder (quickstart's own checkpoint) is recorded at
    the path it will have once the folder is in place."""
    source = result.record.get("model") or {}
    if str(source.get("name", "")).startswith(str(out.stage)):
        source["name"] = str(out.final(Path(source["name"])))


def _print_audit(result: AuditResult, written, dataset: GroupedDataset, title: str, out: RunFolder):
    """The verdict's summary, the accuracy table, the notes and the files written."""
    from fairquant.report import accuracy_table
    from fairquant.report.verdict import summary_lines

    judged, counts = written.verdict, dataset.counts()["train"]
    for line in summary_lines(judged) if judged else []:
        console.print(line, markup=False, highlight=False)
    console.print(accuracy_table(result, train_counts=counts, title=title))
    for note in [*result.notes, *(judged.notes if judged else [])]:
        print_line(console, "note", "yellow", note)
    files = ", ".join(str(out.final(p)) for p in written.files)
    console.print(f"wrote {files} and {out.final(written.figure)}")


@app.command()
def quickstart(
    out: Annotated[
        Path,
        typer.Option(metavar="DIR", help="Folder for the checkpoint, results.csv and figure."),
    ] = Path("fairquant-quickstart"),
    model: Model = "resnet18",
    width: Annotated[
        int, typer.Option(help="Model width (channels of the first stage).", metavar="N")
    ] = 8,
    epochs: Annotated[
        int, typer.Option(min=1, metavar="N", help="Training epochs.")
    ] = TrainConfig.epochs,
    seed: Annotated[
        int,
        typer.Option(metavar="N", help="Seed of training and of the digits' train/test split."),
    ] = TrainConfig.seed,
    precisions: Annotated[
        str,
        typer.Option(
            metavar="LIST",
            help="Comma-separated precisions (the spellings: fairquant audit --help).",
        ),
    ] = ",".join(DEFAULT_PRECISIONS),
    quiet: Quiet = False,
    bootstrap: Bootstrap = N_BOOTSTRAP,
    max_drop: Annotated[
        list[str] | None,
        typer.Option(
            metavar="POINTS|GROUP=POINTS",
            help="Tolerance of the verdict: accuracy points any group may lose against fp32, "
            f"and GROUP=POINTS overrides (default {DEFAULT_MAX_DROP:g}).",
        ),
    ] = None,
) -> None:
    """Train on the embedded imbalanced digits, quantize to every precision, audit the groups and
    judge each precision against a tolerance (verdict.json)."""
    from fairquant.data import default_digits_spec, load_dataset
    from fairquant.metrics.verdict import Tolerance

    with user_errors():
        start = time.perf_counter()
        tolerance = Tolerance.parse(max_drop, None) or _default_tolerance(precisions)
        dataset = load_dataset(default_digits_spec(seed=seed))
        folder = output_folder(out, tolerance, precisions, dataset.group_names)
    with user_errors(), folder as run:
        trained = _train_quickstart(run, dataset, model, width, epochs, seed, quiet=quiet)
        audit_and_report(
            trained,
            dataset,
            precisions,
            run,
            quiet=quiet,
            title=f"digits (imbalanced), {model} w{width}: test accuracy (%) per class",
            n_bootstrap=bootstrap,
            tolerance=tolerance,
        )
        console.print(f"done in {time.perf_counter() - start:.0f}s")


def _default_tolerance(precisions: str) -> Tolerance | None:
    """The default verdict, where there is something to judge (a precision besides fp32)."""
    from fairquant._audit import audit_precisions
    from fairquant.metrics.verdict import Tolerance

    return Tolerance() if len(audit_precisions(precisions)) > 1 else None


def _train_quickstart(run: RunFolder, dataset, model: str, width: int, epochs, seed, *, quiet):
    """Train the quickstart's model, save its checkpoint into the run folder, say so."""
    from fairquant.models import ModelSpec
    from fairquant.models.load import LoadedModel, ModelSource
    from fairquant.train import fit, save_checkpoint

    counts = dataset.counts()
    console.print(
        f"[bold]digits[/] (scikit-learn, 8x8 upsampled to {dataset.image_size[0]}x"
        f"{dataset.image_size[1]}), training split imbalanced 16:16:8:8:4:4:2:2:1:1 - "
        f"train {sum(counts['train'])} images {counts['train']}, test {sum(counts['test'])}"
    )
    spec, config = ModelSpec(model, width), TrainConfig(epochs=epochs, seed=seed)
    net, history = fit(dataset, spec, config, show_progress=not quiet)
    console.print(
        f"trained {model} (width {width}) for {epochs} epochs in {history.seconds:.1f}s "
        f"({history.images_per_second:.0f} img/s), final loss {history.epoch_loss[-1]:.3f}"
    )
    ckpt = save_checkpoint(
        run.stage / CHECKPOINT,
        model=net,
        model_spec=spec,
        dataset=dataset,
        train_config=config,
        history=history,
    )
    console.print(f"wrote {run.final(ckpt)}")
    return LoadedModel(net, ModelSource("checkpoint", str(ckpt)))


ModelSourceOption = Annotated[
    str | None, typer.Option("--model", metavar="SOURCE", help=MODEL_HELP)
]
Weights = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="State_dict for --model: a torch.save file (read with weights_only=True) or "
        ".safetensors (extra safetensors).",
    ),
]
NumClasses = Annotated[
    int | None,
    typer.Option(min=1, metavar="N", help="Classes the model outputs (default: the data's)."),
]
InChannels = Annotated[
    int | None,
    typer.Option(
        min=1,
        metavar="N",
        help="Input channels the model takes, or a table's feature count (default: "
        "the data's; gray data is "
        "repeated to 3 channels for a 3-channel model).",
    ),
]
ModelDataset = Annotated[
    str | None,
    typer.Option(metavar="NAME", help="Registered dataset to audit --model on (or 'table')."),
]
Mean = Annotated[
    str | None,
    typer.Option(
        metavar="FLOATS",
        help="The --model's input normalization, (pixels in [0,1] - mean) / std, one value "
        "or one per channel, e.g. 0.485,0.456,0.406; a --model on images needs it, or "
        "--normalize data (timm:NAME states its own).",
    ),
]
Std = Annotated[
    str | None, typer.Option(metavar="FLOATS", help="See --mean, e.g. 0.229,0.224,0.225.")
]
Normalize = Annotated[
    str | None,
    typer.Option(
        metavar="data",
        help="'data': normalize with the data's own training-split mean and std, for a "
        "--model on images without --mean/--std (recorded in audit.json).",
    ),
]
Classes = Annotated[
    str | None,
    typer.Option(
        metavar="NAMES|@FILE",
        help="The --model's classes in the order of its outputs, comma-separated "
        "(White,Black,Asian) or @FILE with one a line (default: the data's coding, "
        "`fairquant datasets` shows it).",
    ),
]


Checkpoint = Annotated[
    Path | None, typer.Option(metavar="FILE", help="Checkpoint written by `fairquant train`.")
]

#: The options that name the model and its data (``audit``, ``repair``), in the help's order:
#: :func:`load_from_options` reads them from the command's context.
MODEL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "checkpoint": (Checkpoint, None),
    "model": (ModelSourceOption, None),
    "weights": (Weights, None),
    "num_classes": (NumClasses, None),
    "in_channels": (InChannels, None),
    "dataset": (ModelDataset, None),
    "root": (Root, None),
    "target": (Target, None),
    "group": (Group, None),
    "image_size": (ImageSize, None),
    "grayscale": (Grayscale, None),
    "option": (DatasetOption, None),
    "data_seed": (DataSeed, DATA_SEED),
    "mean": (Mean, None),
    "std": (Std, None),
    "normalize": (Normalize, None),
    "classes": (Classes, None),
}


def model_options(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command the options of :data:`MODEL_OPTIONS` where its parameter ``source``
    stands; it reads them with :func:`load_from_options` (``source`` is their values, by name)."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    added = [
        inspect.Parameter(name, kind, annotation=option, default=default)
        for name, (option, default) in MODEL_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_source(**kwargs: Any) -> T:
        source = {name: kwargs.pop(name) for name in MODEL_OPTIONS}
        return command(**kwargs, source=source)

    return replace_parameter(with_source, "source", added)


def refuse_model_options(ctx: typer.Context) -> None:
    """With --checkpoint, the options of a model from elsewhere and its data are an error."""
    refuse_given(
        ctx,
        (*FOR_MODEL_ONLY, "mean", "std"),
        "to --checkpoint: a checkpoint rebuilds its own data and model (these go with --model)",
    )


def load_from_options(ctx: typer.Context) -> AuditTarget:
    """The model and data that a command's --checkpoint or --model and data options name
    (``ctx.params``, spelled as ``audit`` spells them): :func:`fairquant._audit.load_target`."""
    from fairquant._audit import load_target
    from fairquant.data.base import DataSpec, parse_class_order
    from fairquant.data.preprocess import parse_floats

    p = ctx.params
    if p["checkpoint"] is not None:
        refuse_model_options(ctx)
    spec = None
    if p["dataset"] is not None:
        options = config_of(DataOptions, ctx, seed=p["data_seed"], options=tuple(p["option"] or ()))
        spec = DataSpec.from_options(options)
    return load_target(
        checkpoint=p["checkpoint"],
        model=p["model"],
        weights=p["weights"],
        spec=spec,
        num_classes=p["num_classes"],
        in_channels=p["in_channels"],
        mean=None if p["mean"] is None else parse_floats(p["mean"], "--mean"),
        std=None if p["std"] is None else parse_floats(p["std"], "--std"),
        class_order=None if p["classes"] is None else parse_class_order(p["classes"]),
        normalize=p["normalize"],
    )


@app.command()
@model_options
def audit(
    ctx: typer.Context,
    source: dict[str, Any] | None = None,
    precisions: Annotated[str, typer.Option(metavar="LIST", help=PRECISIONS_HELP)] = ",".join(
        DEFAULT_PRECISIONS
    ),
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Folder for results.csv and audit.json (default: beside the checkpoint, or "
            "fairquant-audit).",
        ),
    ] = None,
    method: Annotated[
        MethodChoice,
        typer.Option(help="ptq (post-training) or qat (fine-tune through fake quantization)."),
    ] = MethodChoice.ptq,
    qat_epochs: Annotated[int, typer.Option(min=1, metavar="N", help="QAT fine-tuning epochs.")] = (
        DEFAULT_QAT_CONFIG.epochs
    ),
    qat_lr: Annotated[
        float, typer.Option(metavar="X", help="QAT learning rate.")
    ] = DEFAULT_QAT_CONFIG.lr,
    qat_lsq: Annotated[bool, typer.Option(help="QAT learns step sizes (LSQ).")] = False,
    calibration: Annotated[
        CalibrationChoice, typer.Option(help="Activation range rule for -a<k> precisions.")
    ] = CalibrationChoice.minmax,
    calib_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Calibration images (training split).")
    ] = CALIB_SIZE,
    calib_balanced: Annotated[
        bool, typer.Option(help="Draw calibration images equally from every group.")
    ] = False,
    nonfinite: Annotated[
        NonfiniteChoice,
        typer.Option(
            help="A sample whose logits are NaN or infinite: error (exit 2, nothing written) or "
            "wrong (counted as wrong with the loss max(ln K, its fp32 loss), said in the notes)."
        ),
    ] = NonfiniteChoice.error,
    quiet: Quiet = False,
    bootstrap: Bootstrap = N_BOOTSTRAP,
    max_drop: Annotated[
        list[str] | None,
        typer.Option(
            metavar="POINTS|GROUP=POINTS",
            help="Tolerance: accuracy points any group may lose against fp32 (e.g. 2), and "
            "repeatable GROUP=POINTS overrides (--max-drop Others=1). Writes verdict.json and "
            "verdict.junit.xml and prints the verdict per precision (docs/verdict.md).",
        ),
    ] = None,
    max_phi: Annotated[
        float | None,
        typer.Option(min=0, metavar="X", help="Tolerance on phi(D) (with --max-drop)."),
    ] = None,
    gate: Annotated[
        bool,
        typer.Option(help="Exit 0 if every precision passes, 3 if any fails, 4 if inconclusive."),
    ] = False,
) -> None:
    """Quantize a model to each precision and compare its groups on the test split.

    The model is a checkpoint of `fairquant train` (its data is rebuilt from it), or one
    trained elsewhere (--model, with the data options --dataset --root --target --group
    --image-size -o): results.csv and audit.json record what was audited.

    {precisions}
    """
    from fairquant.metrics.verdict import Tolerance
    from fairquant.report.verdict import exit_code

    with user_errors():
        tolerance = Tolerance.parse(max_drop, max_phi)
        if gate and tolerance is None:
            raise ConfigError("--gate needs a tolerance to judge against: --max-drop POINTS")
        target_ = load_from_options(ctx)
        data = target_.data
        assert source is not None  # model_options passes the options' values
        checkpoint = source["checkpoint"]
        out = out or (checkpoint.parent if checkpoint else Path("fairquant-audit"))
        keep = [source[k] for k in ("checkpoint", "model", "weights") if source[k] is not None]
        folder = output_folder(out, tolerance, precisions, data.group_names, keep)
    with user_errors(), folder as run:
        _, judged = audit_and_report(
            target_.model,
            data,
            precisions,
            run,
            quiet=quiet,
            title=f"{data.spec.name}, {target_.label}: test accuracy (%) by {data.group}",
            n_bootstrap=bootstrap,
            preprocess=target_.preprocess,
            tolerance=tolerance,
            **_audit_options(ctx),
        )
    if gate and judged is not None:
        raise typer.Exit(exit_code(judged))


def _audit_options(ctx: typer.Context) -> dict:
    """:func:`fairquant.audit`'s options of the method and calibration, as ``audit`` takes them."""
    p = ctx.params
    return {
        "method": p["method"].value,
        "qat_config": replace(DEFAULT_QAT_CONFIG, epochs=p["qat_epochs"], lr=p["qat_lr"]),
        "lsq": p["qat_lsq"],
        "calibration_method": p["calibration"].value,
        "calib_size": p["calib_size"],
        "calib_balanced": p["calib_balanced"],
        "nonfinite": p["nonfinite"].value,
    }


if audit.__doc__:  # the spellings, kept whole in the help (PRECISIONS_BLOCK)
    audit.__doc__ = audit.__doc__.replace("{precisions}", PRECISIONS_BLOCK.replace("\n", "\n    "))
