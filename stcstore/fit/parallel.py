"""The per-layer probes on every core: independent problems in a pool of worker processes.

A probe is a small problem (one block, a few thousand rows): split over intra-op threads, its many short
products end at barriers, so a second thread adds little (6 %) and, when another process holds a core,
the threads wait on each other (a fit took 2.8x its quiet time with one busy neighbour). The probes of a
fit are independent, so they run side by side instead: this process and `workers - 1` processes of joblib's
loky pool (reused across fits), each probe on one torch thread, reading its block from the store's
memory-mapped chunks.

The aggregate searches of the kind/pooling groups are independent too, and run the same way when the
train matrices of as many groups as there are workers fit in the memory budget together.

So do the full paths that confirm the best aggregates. Every probe and search runs on one thread wherever it
runs (here or in the pool), so the fit id, choice and classifier are the same for any number of workers.

With `--device cuda` the same pool shares the GPU (`core.pool.default_workers`): a probe there is a chain of small
kernels that the solver waits for on the host, and several processes at once fill the device's idle time.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import torch

from ..core.pool import available_cpus, local_pool  # noqa: F401 (available_cpus: part of this module's API)
from ..core.threads import blas_one_thread

if TYPE_CHECKING:
    from ..core.names import FeatureBlock
    from .baselines import EmbeddingState
    from .probe import PathResult
    from .records import AggState, ProbeState
    from .search import Fitter

T = TypeVar("T")


@contextmanager
def one_thread() -> Iterator[None]:
    """torch and the BLAS libraries on one thread for the duration."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with blas_one_thread(None):
            yield
    finally:
        torch.set_num_threads(before)


def probe_one(fitter: "Fitter", block: "FeatureBlock") -> "ProbeState":
    """One block's probe, on one thread (in a worker process, or here)."""
    with one_thread():
        return fitter.probe(block)


def aggregate_one(fitter: "Fitter", kind: str, pooling: str, probes: dict["FeatureBlock", "ProbeState"],
                  runner: "Callable | None" = None) -> tuple[list["AggState"], int | None]:
    """One (kind, pooling)'s aggregate search on one thread, with the train sample size it drew (if any); its
    depths' chains through `runner` (`Workers.map`) when given."""
    with one_thread():
        states = fitter.aggregate(kind, pooling, probes, lambda _: None, runner)
    return states, fitter.agg_rows.get((kind, pooling))


def confirm_one(fitter: "Fitter", a: "AggState") -> "PathResult":
    """One aggregate's full path (`Fitter.confirm`), on one thread."""
    with one_thread():
        return fitter.confirm(a)


def embedding_one(fitter: "Fitter") -> "EmbeddingState | None":
    """The embedding baseline (fit.baselines; None without its block), on one thread."""
    from .baselines import embedding_block, fit_embedding

    with one_thread():
        block = embedding_block(fitter.fs)
        return fit_embedding(fitter, block) if block is not None else None


def call(fn: Callable[..., T], *args: object) -> T:
    return fn(*args)


def both_ends(cost: list[float]) -> list[int]:
    """Task indices in the queue order of `Workers.map`: by descending cost, alternately from the front and from
    the back (ties in task order), so that the front and the back each meet the costliest tasks first."""
    order = sorted(range(len(cost)), key=lambda i: (-cost[i], i))
    return order[0::2] + order[1::2][::-1]


class Workers:
    """The probes, the aggregate searches of the kind/pooling groups and the confirming full paths, `n` at a time:
    this process and n - 1 workers of a local process pool (joblib's loky, reused across calls) take them from
    one queue. Each runs on one thread, so that the result does not depend on `n`; with n = 1 everything runs
    here."""

    def __init__(self, n: int) -> None:
        self.n = n

    def map(self, fn: Callable[..., T], tasks: list[tuple], cost: list[float] | None = None) -> Iterator[T]:
        """fn(*task) for every task, yielded in task order. The pool's workers take tasks from the front of one
        queue (each handed the next when it finishes one), this process from the back, until they meet.

        With an estimated `cost` per task, the queue is laid out so that both ends start with the costliest
        tasks and the cheapest are taken last, where they meet: the takers then finish close together (the
        heavy FFN groups of an aggregate search all at one end kept one process busy 2x as long as the
        other)."""
        if self.n == 1 or len(tasks) < 2:
            yield from (fn(*t) for t in tasks)
            return
        pool = local_pool(self.n - 1)
        queue = deque(range(len(tasks)) if cost is None else both_ends(cost))
        lock = threading.Lock()
        futures: dict[int, Future] = {}
        here: dict[int, T] = {}

        def hand_out(_: object = None) -> None:  # a worker is free (or starting): give it the front task
            with lock:
                if not queue:
                    return
                i = queue.popleft()
                try:
                    futures[i] = pool.submit(fn, *tasks[i])
                except RuntimeError:  # a pool shutting down or broken: this process takes the task
                    queue.appendleft(i)
                    return
            futures[i].add_done_callback(hand_out)

        for _ in range(min(self.n - 1, len(tasks) - 1)):
            hand_out()
        try:
            for i in range(len(tasks)):
                while i not in here and not (i in futures and futures[i].done()):
                    with lock:
                        mine = queue.pop() if queue else None
                    if mine is None:  # the pool has every task left: wait for task i there
                        break
                    here[mine] = fn(*tasks[mine])
                yield here.pop(i) if i in here else futures[i].result()
        finally:
            with lock:
                queue.clear()  # nothing more is handed out after an error

    def probes(self, fitter: "Fitter", blocks: list["FeatureBlock"]) -> Iterator["ProbeState"]:
        """`fit.stage.ProbeRunner`: the blocks' probes, in block order."""
        return self.map(probe_one, [(fitter, b) for b in blocks], cost=[fitter.fs.width(b.kind) for b in blocks])

    def aggregates(self, fitter: "Fitter", groups: list[tuple[str, str]], probes: dict["FeatureBlock", "ProbeState"]
                   ) -> Iterator[list["AggState"]]:
        """Every group's aggregate states, in group order. Groups run concurrently only when the search matrices
        of the `n` largest fit in the memory budget together, and then the embedding baseline is fitted beside
        them (`Fitter.embedding`); else one after the other, here, each with its depths' chains (`fit.grid`) on
        every worker (a single group, as on a GPT2-XL store of FFN max features, is then not one process's
        work)."""
        budget = fitter.cfg.memory_budget_mb
        cost = [float(fitter.search_bytes(k, p, probes)) for k, p in groups]  # bytes each search holds
        together = self.n > 1 and len(groups) > 1 and \
            (budget is None or sum(sorted(cost, reverse=True)[:self.n]) <= budget * 2**20)
        tasks: list[tuple] = [(aggregate_one, fitter, k, p, probes) for k, p in groups]
        if together:  # the embedding baseline (sklearn, fit.outcome) beside them, taken with the smallest groups
            tasks.insert(0, (embedding_one, fitter))
            results = self.map(call, tasks, cost=[0.0, *cost])
        else:  # one group at a time, here; its depths' chains on every worker when n searches fit the budget
            fits = [self.n > 1 and (budget is None or self.n * c <= budget * 2**20) for c in cost]
            results = (call(*t, self.map if f else None) for t, f in zip(tasks, fits))
        if together:
            fitter.embedding = (next(results),)
        for (k, p), (states, rows) in zip(groups, results):
            if rows is not None:  # a sample drawn in a worker process: recorded here (messages, fit id)
                fitter.agg_rows[(k, p)] = rows
            yield states
