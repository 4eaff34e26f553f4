"""Rich progress bars shared by training and evaluation, silent when disabled.

Rich allows one live display at a time, so a bar opened while another is showing (QAT training
inside an audit's evaluation loop) becomes a second task of the display already on screen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[..., None]

_active: list[Progress] = []


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool = True) -> Iterator[Advance]:
    """Yield ``advance(steps=1, **fields)``; ``fields`` fill the status column."""
    if not enabled:
        yield lambda steps=1, **fields: None
        return
    if _active:
        progress = _active[-1]
        task = progress.add_task(description, total=total, status="")
        try:
            yield lambda steps=1, **fields: progress.update(task, advance=steps, **fields)
        finally:
            progress.remove_task(task)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, transient=False) as progress:
        _active.append(progress)
        task = progress.add_task(description, total=total, status="")
        try:
            yield lambda steps=1, **fields: progress.update(task, advance=steps, **fields)
        finally:
            _active.pop()
