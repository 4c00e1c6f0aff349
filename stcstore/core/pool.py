"""The local process pool that `fit`'s probes and searches share with this process (joblib's loky, reused
across calls), and its early start.

A worker process takes 1-1.5 s to be ready (Python, torch, the fit's modules). Started before this process
imports and plans a fit, it gets ready meanwhile instead of idling one core through the first probes."""

from __future__ import annotations

import importlib
import os
from typing import Any


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container or `taskset` narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


DEVICE_WORKERS = 8  # the most processes that share one GPU by default


def default_workers(device: str = "cpu") -> int:
    """How many probes and searches a fit runs at a time without --workers: one per available CPU; on a GPU,
    as many processes sharing it as there are CPUs, at most DEVICE_WORKERS. A probe on a GPU is a chain of
    small kernels, each waited for by the solver on the host: alone, it leaves the device idle most of the
    time (the fit on an H200 was 0.8x the CPU's); several at once keep it busy, each context taking some
    hundreds of MB of device memory."""
    n = available_cpus()
    return n if device == "cpu" else max(1, min(n, DEVICE_WORKERS))


def local_pool(workers: int) -> Any:
    """The reusable pool of `workers` processes (one size always: loky restarts a pool it resizes)."""
    from joblib.externals.loky import get_reusable_executor

    return get_reusable_executor(max_workers=workers)


def _import(modules: tuple[str, ...]) -> None:
    for name in modules:
        importlib.import_module(name)


_started: list[Any] = []


def start_workers(n: int, modules: tuple[str, ...] = ("stcstore.fit.parallel", "stcstore.fit.search")) -> None:
    """Start the n - 1 pool processes of a fit on `n` workers (this process is the n-th) and have them import
    `modules` (the fit's) now. Returns at once."""
    if n > 1:
        pool = local_pool(n - 1)
        for _ in range(n - 1):
            pool.submit(_import, modules)
        if not any(p is pool for p in _started):  # the same reused pool, started again by the next fit
            _started.append(pool)


def stop_workers() -> None:
    """End the pools `start_workers` started, without waiting for what they are doing: a command that fails
    early exits at once instead of after the workers' imports."""
    while _started:
        _started.pop().shutdown(wait=False, kill_workers=True)
