"""What a dataset is to fairquant: images, a target label and a protected-group label per sample."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from fairquant.data.imbalance import PAPER_RATIO
from fairquant.errors import ConfigError, DataError
from fairquant.options import DATA_SEED, DataOptions

#: The one rule for small cells: a class or a group with fewer test samples than this is named in
#: a warning that the audit's notes and the CLI summary repeat (one sample moves its accuracy by
#: more than 5 points). An empty group has a note of its own and is left out of phi(D).
MIN_TEST_SAMPLES = 20


@dataclass(frozen=True)
class DataSpec:
    """Everything needed to rebuild a dataset exactly; stored in checkpoints.

    ``target`` and ``group`` name attributes of the dataset (the group may be the target itself,
    as in the papers, where A = Y). ``imbalance`` is a per-class ratio applied to the training
    split only, e.g. the papers' ``(16, 16, 8, 8, 4, 4, 2, 2, 1, 1)``. ``options`` holds
    dataset-specific settings as plain values.
    """

    name: str
    root: str | None = None
    target: str | None = None
    group: str | None = None
    image_size: int | None = None
    imbalance: tuple[float, ...] | None = None
    test_size: float | None = None
    seed: int = DATA_SEED
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 4:
            raise ConfigError(f"image_size must be at least 4 pixels; got {self.image_size}")
        if self.test_size is not None and not 0 < self.test_size < 1:
            raise ConfigError(f"test_size must lie strictly between 0 and 1; got {self.test_size}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["imbalance"] = list(self.imbalance) if self.imbalance is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown data-spec keys {sorted(unknown)}")
        d = dict(d)
        if d.get("imbalance") is not None:
            d["imbalance"] = tuple(float(r) for r in d["imbalance"])
        return cls(**d)

    @classmethod
    def from_options(cls, options: DataOptions) -> DataSpec:
        """The spec of the data options as a user gives them (:class:`DataOptions`): the
        imbalance and ``KEY=VALUE`` items read, ``grayscale`` (where given) an option too."""
        settings = dict(_key_value(item) for item in options.options)
        if options.grayscale is not None:
            settings["grayscale"] = options.grayscale
        return cls(
            name=options.dataset,
            root=options.root,
            target=options.target,
            group=options.group,
            image_size=options.image_size,
            imbalance=_imbalance(options.imbalance),
            seed=options.seed,
            options=settings,
        )


def _key_value(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value), the value parsed as a JSON literal (never evaluated)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"options {item!r}: expected KEY=VALUE, e.g. age_buckets=[18,40,60]",
            parameter="options",
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return key.strip(), value


def _imbalance(text: str) -> tuple[float, ...] | None:
    """``'none'``, ``'paper'`` (:data:`PAPER_RATIO`) or comma-separated ratios per class."""
    if text == "none":
        return None
    if text == "paper":
        return PAPER_RATIO
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"imbalance {text!r}: expected 'paper', 'none' or comma-separated ratios "
            "like '16,16,8,8,4,4,2,2,1,1'",
            parameter="imbalance",
        ) from None


@dataclass
class Split:
    """One split: images ``x`` (N, C, H, W) or feature rows (N, F), float32, model-ready;
    targets ``y``, groups ``g``."""

    x: Tensor
    y: Tensor
    g: Tensor

    def __post_init__(self) -> None:
        n = len(self.x)
        if self.x.ndim not in (2, 4):
            raise DataError(
                "samples must be images (N, C, H, W) or feature rows (N, F); got shape "
                f"{tuple(self.x.shape)}"
            )
        if len(self.y) != n or len(self.g) != n:
            raise DataError(
                f"images, targets and groups differ in length: {n}, {len(self.y)}, {len(self.g)}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index: Tensor) -> Split:
        return Split(self.x[index], self.y[index], self.g[index])


@dataclass
class GroupedDataset:
    """Train and test splits with class and group names.

    ``mean`` and ``std`` are the per-channel statistics already applied to ``x`` (recorded so a
    user can map images back to pixel values). ``flip_ok`` says whether a horizontally mirrored
    image keeps its target and group (faces and natural photos: yes; digits and text: no, a
    mirrored digit is another shape); training flips images at random only where it is true, so
    it defaults to false for data that does not say.
    """

    spec: DataSpec
    train: Split
    test: Split
    classes: list[str]
    group_names: list[str]
    target: str
    group: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip_ok: bool = False
    #: A table's feature columns, in the order of ``x``'s columns (None for images).
    features: list[str] | None = None
    #: Where the class coding comes from: None, the data's own; else the order a model's
    #: outputs were stated in (:meth:`with_class_order`).
    class_order: str | None = None

    def __post_init__(self) -> None:
        for name, split in (("train", self.train), ("test", self.test)):
            _check_codes(name, "target", split.y, len(self.classes))
            _check_codes(name, "group", split.g, len(self.group_names))

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.train.x.shape[2], self.train.x.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def coding(self) -> dict[str, Any]:
        """Which name each target and group code stands for (:func:`coding`)."""
        return coding(self.target, self.classes, self.group, self.group_names)

    def count_table(self) -> pd.DataFrame:
        """Samples per (target, group) and split (:func:`wide_counts`)."""
        splits = [
            (name, s.y.numpy(), s.g.numpy())
            for name, s in (("train", self.train), ("test", self.test))
        ]
        return wide_counts(cell_counts(splits, self.classes, self.group_names))

    def with_class_order(self, order: Sequence[str]) -> GroupedDataset:
        """This dataset with its targets recoded so that code ``i`` is the class ``order[i]``:
        the order of a model's outputs. The map is exact: every class of the data must be in
        ``order`` and every name in ``order`` a class of the data (each once)."""
        order = [str(name) for name in order]
        known = ", ".join(self.classes)
        seen: set[str] = set()
        for name in order:
            if name in seen:
                raise ConfigError(f"class order (--classes) names {name!r} twice")
            seen.add(name)
            if name not in self.classes:
                raise ConfigError(
                    f"class order (--classes) names {name!r}, which the data lacks; the data's "
                    f"{self.target} classes are: {known}"
                )
        for name in self.classes:
            if name not in seen:
                raise ConfigError(
                    f"the data's class {name!r} is not in the class order (--classes) "
                    f"{','.join(order)}; expected every one of: {known}"
                )
        new_code = torch.tensor([order.index(name) for name in self.classes], dtype=torch.long)
        return replace(
            self,
            train=Split(self.train.x, new_code[self.train.y], self.train.g),
            test=Split(self.test.x, new_code[self.test.y], self.test.g),
            classes=order,
            class_order=f"given: {','.join(order)}",
        )

    def counts(self) -> dict[str, list[int]]:
        """Samples per group in each split."""
        k = len(self.group_names)
        return {
            "train": torch.bincount(self.train.g, minlength=k).tolist(),
            "test": torch.bincount(self.test.g, minlength=k).tolist(),
        }


def parse_class_order(text: str) -> list[str]:
    """A model's class order as written on the command line: ``White,Black,Asian``, or
    ``@FILE`` naming a text file with one class a line (blank lines skipped)."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"--classes {text!r}: cannot read {path} ({e}); expected a text file with one "
                "class name a line"
            ) from None
        names = [line.strip() for line in lines if line.strip()]
    else:
        names = [name.strip() for name in text.split(",")]
    if not names or not all(names):
        raise ConfigError(
            f"--classes {text!r}: expected the model's class names in its output order, "
            "comma-separated (White,Black,Asian) or @FILE with one a line"
        )
    return names


def coding(
    target: str, classes: Sequence[str], group: str, groups: Sequence[str]
) -> dict[str, Any]:
    """``{"target", "classes", "group", "groups"}``: the attributes and the name each code stands
    for, codes as strings (as ``audit.json`` records them and ``fairquant datasets`` shows them)."""
    return {
        "target": target,
        "classes": {str(i): str(name) for i, name in enumerate(classes)},
        "group": group,
        "groups": {str(i): str(name) for i, name in enumerate(groups)},
    }


def cell_counts(
    splits: Sequence[tuple[str, np.ndarray, np.ndarray]],
    classes: Sequence[str],
    groups: Sequence[str],
) -> pd.DataFrame:
    """Samples per split x target x group (non-empty cells) of ``(split, y codes, g codes)``:
    columns split, target, group, n."""
    k = len(groups)
    rows = []
    for split, y, g in splits:
        cells = np.bincount(np.asarray(y) * k + np.asarray(g), minlength=0)
        for cell in np.flatnonzero(cells):
            t, a = divmod(int(cell), k)
            rows.append((split, classes[t], groups[a], int(cells[cell])))
    return pd.DataFrame(rows, columns=["split", "target", "group", "n"])


def wide_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """:func:`cell_counts` wide: one row per (target, group), in the order first counted, a
    column per split (``train``, ``test`` where present) and their ``total``."""
    wide = counts.pivot_table(
        index=["target", "group"], columns="split", values="n", fill_value=0, sort=False
    )
    wide = wide[[s for s in ("train", "test") if s in wide.columns]].astype(int)
    wide.columns.name = None
    return wide.assign(total=wide.sum(axis=1))


def small_cells(y: Any, g: Any, classes: Sequence[str], groups: Sequence[str]) -> list[str]:
    """At most one line for the classes and one for the non-empty groups with fewer than
    :data:`MIN_TEST_SAMPLES` samples among the test codes ``y`` and ``g`` (arrays or tensors);
    one line when the group is the target itself."""
    y, g = np.asarray(y, dtype=np.int64), np.asarray(g, dtype=np.int64)
    same = list(classes) == list(groups) and np.array_equal(y, g)
    lines = []
    for what, codes, names in (("class", y, classes), ("group", g, groups)):
        if same and what == "group":
            break
        counts = np.bincount(codes, minlength=len(names))
        small = [(name, int(n)) for name, n in zip(names, counts, strict=False)]
        small = [(name, n) for name, n in small if n < MIN_TEST_SAMPLES and (n or what == "class")]
        if not small:
            continue
        fewest = min(n for _, n in small if n) if any(n for _, n in small) else 0
        moves = (
            f"; one sample moves an accuracy by up to {100 / fewest:.1f} points" if fewest else ""
        )
        listed = ", ".join(f"{name!r} ({n})" for name, n in small)
        kind = {"class": "classes", "group": "groups"}[what] + (" (the groups too)" if same else "")
        lines.append(
            f"{kind} with fewer than {MIN_TEST_SAMPLES} test samples (docs/datasets.md): "
            f"{listed}{moves}; read their numbers with their intervals"
        )
    return lines


def _check_codes(split: str, what: str, codes: Tensor, k: int) -> None:
    if len(codes) and (codes.min() < 0 or codes.max() >= k):
        raise DataError(
            f"{split} {what} codes must lie in 0..{k - 1}; "
            f"got {int(codes.min())}..{int(codes.max())}"
        )


def standardize(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor, tuple, tuple]:
    """Normalize both splits by the per-channel mean and std of the training split."""
    train_x, test_x = train_x.clone(), test_x.clone()
    return standardize_(train_x, test_x)


def standardize_(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor, tuple, tuple]:
    """:func:`standardize` in place: for large image sets, where a copy costs seconds and GBs."""
    # one channel at a time: several times faster than a strided std over dims (0, 2, 3)
    mean = torch.stack([train_x[:, c].mean() for c in range(train_x.shape[1])])
    std = torch.stack([train_x[:, c].std() for c in range(train_x.shape[1])]).clamp_min(1e-8)
    shape = (1, -1, 1, 1)
    for x in (train_x, test_x):
        x.sub_(mean.view(shape)).div_(std.view(shape))
    return train_x, test_x, tuple(mean.tolist()), tuple(std.tolist())
