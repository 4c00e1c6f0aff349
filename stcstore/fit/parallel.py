"""The per-layer probes on every core: independent problems in a pool of worker processes.

A probe is a small problem (one block, a few thousand rows): split over intra-op threads, its many short
products end at barriers, so a second thread adds little (6 %) and, when another process holds a core,
the threads wait on each other (a fit took 2.8x its quiet time with one busy neighbour). The probes of a
fit are independent, so they run side by side instead: `workers` processes (joblib's loky pool, reused
across fits), each probe on one torch thread, reading its block from the store's memory-mapped chunks.

Every probe runs on one thread wherever it runs (in this process with one worker, in the pool with
more), so the probes, and so the fit id, choice and classifier, are the same for any number of workers.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import torch
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from ..core.names import FeatureBlock
    from .search import Fitter, ProbeState


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container or `taskset` narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def one_thread() -> Iterator[None]:
    """torch and the BLAS libraries on one thread for the duration."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def probe_one(fitter: "Fitter", block: "FeatureBlock") -> "ProbeState":
    """One block's probe, on one thread (in a worker process, or here)."""
    with one_thread():
        return fitter.probe(block)


class PoolProbeRunner:
    """`fit.stage.ProbeRunner` on a local process pool: `workers` probes at a time; states come back in
    block order."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def __call__(self, fitter: "Fitter", blocks: list["FeatureBlock"]) -> Iterator["ProbeState"]:
        from joblib import Parallel, delayed

        run = Parallel(n_jobs=min(self.workers, len(blocks)), backend="loky", return_as="generator",
                       max_nbytes=None)
        yield from run(delayed(probe_one)(fitter, b) for b in blocks)
