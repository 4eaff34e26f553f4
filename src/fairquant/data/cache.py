"""A disk cache of decoded images, so a dataset's JPEGs are decoded once per machine.

Entries live in ``$FAIRQUANT_CACHE`` (default ``~/.cache/fairquant``), one ``torch.save`` file per
key, written atomically and read back with ``weights_only=True``. The key hashes what identifies
the decoded result: the source files (paths, sizes, modification times), the samples wanted and
the decoding options; changing any of them decodes afresh. A damaged entry is decoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from fairquant._io import atomic_write

ENV = "FAIRQUANT_CACHE"


def cache_dir() -> Path:
    """Where decoded datasets are kept: ``$FAIRQUANT_CACHE`` or ``~/.cache/fairquant``."""
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "fairquant")


def cache_key(parts: Any) -> str:
    """A stable hash of JSON-serializable ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


T = TypeVar("T")


def cached(prefix: str, parts: Any, build: Callable[[], T], kind: type[T]) -> T:
    """The value stored under the key of ``parts``, else ``build()``, stored for next time.

    ``kind`` is the expected type (a tensor, or a list of strings); anything else is rebuilt.
    """
    path = cache_dir() / f"{prefix}-{cache_key(parts)}.pt"
    if path.is_file():
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(value, kind):
                return value
        except Exception:  # a damaged or foreign file: rebuild it (torch.load raises many types)
            pass
    value = build()
    atomic_write(path, lambda tmp: torch.save(value, tmp))
    return value
