"""Exceptions for bad input: each message names the value and what was expected."""

from __future__ import annotations

from collections.abc import Iterable


class FairquantError(Exception):
    """Base class: an error in what the user asked for, shown to them as it is (no traceback)."""


class ConfigError(FairquantError, ValueError):
    """An option has a value fairquant cannot use."""


class DataError(FairquantError, ValueError):
    """A dataset file, folder or label is missing or malformed."""


class CheckpointError(FairquantError, ValueError):
    """A checkpoint file is missing, unreadable, or not one fairquant wrote."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> ConfigError:
    """The error for a name that is not in a registry, listing the names that are."""
    return ConfigError(f"unknown {kind} {name!r}; expected one of: {', '.join(sorted(known))}")
