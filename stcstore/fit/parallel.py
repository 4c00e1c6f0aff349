"""The per-layer probes on every core: independent problems in a pool of worker processes.

A probe is a small problem (one block, a few thousand rows): split over intra-op threads, its many short
products end at barriers, so a second thread adds little (6 %) and, when another process holds a core,
the threads wait on each other (a fit took 2.8x its quiet time with one busy neighbour). The probes of a
fit are independent, so they run side by side instead: `workers` processes (joblib's loky pool, reused
across fits), each probe on one torch thread, reading its block from the store's memory-mapped chunks.

The aggregate searches of the kind/pooling groups are independent too, and run the same way when the
train matrices of as many groups as there are workers fit in the memory budget together.

Every probe and group search runs on one thread wherever it runs (in this process with one worker, in the
pool with more), so the fit id, choice and classifier are the same for any number of workers.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import torch
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from ..core.names import FeatureBlock
    from .search import AggState, Fitter, ProbeState


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


def aggregate_one(fitter: "Fitter", kind: str, pooling: str, probes: dict["FeatureBlock", "ProbeState"]
                  ) -> tuple[list["AggState"], int | None]:
    """One (kind, pooling)'s aggregate search on one thread, with the train sample size it drew (if any)."""
    with one_thread():
        states = fitter.aggregate(kind, pooling, probes, lambda _: None)
    return states, fitter.agg_rows.get((kind, pooling))


class Workers:
    """The probes, and the aggregate searches of the kind/pooling groups, `n` at a time in a local process pool
    (joblib's loky, its workers reused across calls); each on one thread, so that the result does not
    depend on `n`. With n = 1 everything runs here, on one thread too."""

    def __init__(self, n: int) -> None:
        self.n = n

    def _pool(self, tasks: int) -> Any:
        from joblib import Parallel

        return Parallel(n_jobs=min(self.n, tasks), backend="loky", return_as="generator", max_nbytes=None)

    def probes(self, fitter: "Fitter", blocks: list["FeatureBlock"]) -> Iterator["ProbeState"]:
        """`fit.stage.ProbeRunner`: the blocks' probes, in block order."""
        from joblib import delayed

        if self.n == 1 or len(blocks) < 2:
            yield from (probe_one(fitter, b) for b in blocks)
            return
        yield from self._pool(len(blocks))(delayed(probe_one)(fitter, b) for b in blocks)

    def aggregates(self, fitter: "Fitter", groups: list[tuple[str, str]], probes: dict["FeatureBlock", "ProbeState"]
                   ) -> Iterator[list["AggState"]]:
        """Every group's aggregate states, in group order. Groups run concurrently only when the train matrices
        of the `n` largest fit in the memory budget together (else one after the other, here)."""
        from joblib import delayed

        together = self.n > 1 and len(groups) > 1
        if together and fitter.cfg.memory_budget_mb is not None:
            sizes = sorted((fitter.search_bytes(k, p, probes) for k, p in groups), reverse=True)
            together = sum(sizes[:self.n]) <= fitter.cfg.memory_budget_mb * 2**20
        results = self._pool(len(groups))(delayed(aggregate_one)(fitter, k, p, probes) for k, p in groups) \
            if together else (aggregate_one(fitter, k, p, probes) for k, p in groups)
        for (k, p), (states, rows) in zip(groups, results):
            if rows is not None:  # a sample drawn in a worker process: recorded here (messages, fit id)
                fitter.agg_rows[(k, p)] = rows
            yield states
