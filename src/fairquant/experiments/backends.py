"""Where cells run: in this process, in a local process pool, or on a Ray cluster.

Every backend calls ``fn(cell, folder)`` for each task and hands each output to ``done`` in the
driver process as soon as it arrives, so the runner can store it before the next one finishes;
an exception in a cell stops the run after the outputs already handed over are stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from fairquant.errors import ConfigError
from fairquant.options import BACKENDS as BACKENDS
from fairquant.options import Backend as Backend

Task = tuple[Any, str]
Done = Callable[[Task, Any], None]


def run_local(fn: Callable, tasks: Sequence[Task], done: Done) -> None:
    """One cell after another in this process."""
    for task in tasks:
        done(task, fn(*task))


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _threaded(fn: Callable, threads: int, *task: Any) -> Any:
    """``fn(*task)`` on ``threads`` intra-op threads, whatever ``OMP_NUM_THREADS`` the worker
    inherited: float sums depend on how they are split, so a cell must not give other numbers
    on another backend or environment."""
    _limit_threads(threads)
    return fn(*task)


def run_processes(fn: Callable, tasks: Sequence[Task], done: Done, *, workers: int) -> None:
    """``workers`` spawned processes (``concurrent.futures``), the cores shared among them."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_limit_threads,
        initargs=(threads,),
    ) as pool:
        running = {pool.submit(fn, *task): task for task in tasks}
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    done(running.pop(future), future.result())
        except BaseException:
            for future in running:
                future.cancel()
            raise


def run_ray(
    fn: Callable,
    tasks: Sequence[Task],
    done: Done,
    *,
    workers: int | None,
    address: str | None,
    num_cpus: float,
    num_gpus: float,
) -> None:
    """Ray tasks, each asking for ``num_cpus`` and ``num_gpus`` and running on that many
    threads.

    With ``address`` (e.g. ``ray://head:10001`` or ``auto``) the run joins that cluster, whose
    nodes must have fairquant installed; without it a local Ray starts with ``workers`` CPUs
    (default: all) and stops at the end.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'fairquant[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(_threaded).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)
        threads = max(1, int(num_cpus))  # the CPUs the task holds
        running = {remote.remote(fn, threads, *task): task for task in tasks}
        while running:
            finished, _ = ray.wait(list(running), num_returns=1)
            for ref in finished:
                done(running.pop(ref), ray.get(ref))
    finally:
        if started:
            ray.shutdown()
