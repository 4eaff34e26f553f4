"""Exceptions for bad input: each message names the value and what was expected."""

from __future__ import annotations

import re
from collections.abc import Iterable


class FairquantError(Exception):
    """Base class: an error in what the user asked for, shown to them as it is (no traceback)."""


class ConfigError(FairquantError, ValueError):
    """An option has a value fairquant cannot use.

    ``parameter``, where given, is the library's name of that option and the message's first
    word, so that a front end can spell it its own way (the command line: its flag).
    """

    def __init__(self, *args: object, parameter: str | None = None) -> None:
        super().__init__(*args)
        self.parameter = parameter


class DataError(FairquantError, ValueError):
    """A dataset file, folder or label is missing or malformed."""


class CheckpointError(FairquantError, ValueError):
    """A checkpoint file is missing, unreadable, or not one fairquant wrote."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> ConfigError:
    """The error for a name that is not in a registry, listing the names that are."""
    return ConfigError(f"unknown {kind} {name!r}; expected one of: {', '.join(sorted(known))}")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def torch_load_error(option: str, path: object, error: Exception, expected: str) -> CheckpointError:
    """The error for a file ``torch.load(..., weights_only=True)`` could not read: the option,
    the path quoted, why (the global a pickle would import, or torch's reason) and ``expected``;
    never torch's advice to retry with ``weights_only=False`` (which runs the file's code)."""
    text = _ANSI.sub("", str(error)).strip()
    unsafe = re.search(r"Unsupported global: (?:GLOBAL )?(\S+)", text)
    unpickler = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if unsafe or unpickler or "Weights only load failed" in text:
        if unsafe:
            why = f"it would import {unsafe.group(1)}"
        else:
            why = unpickler.group(1).strip().split(". ")[0] if unpickler else "refused"
        return CheckpointError(
            f"{option} {str(path)!r} refused: not a plain weights file (torch.load with "
            f"weights_only=True, which runs no code in it, cannot read it: {why}); {expected}"
        )
    first = text.splitlines()[0].split(". ")[0] if text else ""
    return CheckpointError(
        f"{option} {str(path)!r} cannot be read by torch.load ({type(error).__name__}"
        f"{': ' + first if first else ''}); {expected}"
    )
