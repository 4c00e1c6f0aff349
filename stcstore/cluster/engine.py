"""Connecting to Ray, and the options every `--engine ray` command shares."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from ..core.errors import StcError


@dataclass(frozen=True)
class RayOptions:
    """How a command runs on Ray. `address` None: the cluster in RAY_ADDRESS, else one started by `ray start`
    on this machine, else a new local one (Ray's own default); "local" always starts a new local one."""

    address: str | None = None
    workers: int | None = None  # actors (extract, score) or concurrent tasks (fit); None: what the cluster has
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_retries: int = 3  # restarts of a dead actor / retries of a failed task (Ray's own fault tolerance)

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise StcError(f"--workers must be at least 1, not {self.workers}")
        if self.cpus_per_worker <= 0:
            raise StcError(f"--cpus-per-worker must be positive, not {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise StcError(f"--gpus-per-worker must be 0 or more, not {self.gpus_per_worker}")

    def n_workers(self, ray: Any) -> int:
        """The workers asked for, or as many as the cluster's resources hold."""
        if self.workers is not None:
            return self.workers
        res = ray.cluster_resources()
        fits = int(res.get("CPU", 1) // self.cpus_per_worker)
        if self.gpus_per_worker:
            fits = min(fits, int(res.get("GPU", 0) // self.gpus_per_worker))
        if fits < 1:
            raise StcError(f"the Ray cluster has {res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs: not "
                           f"enough for one worker of {self.cpus_per_worker:g} CPUs and {self.gpus_per_worker:g} GPUs")
        return fits

    def worker_threads(self, threads: int | None) -> int:
        """A worker's torch threads: the command's --threads, else the CPUs it reserved (at least 1)."""
        return threads or max(1, int(self.cpus_per_worker))

    def worker_device(self, device: str) -> str:
        """The torch device inside a worker: its GPU when it asked for one (Ray sets CUDA_VISIBLE_DEVICES)."""
        return "cuda" if self.gpus_per_worker else device


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise StcError("--engine ray needs Ray: pip install 'stcstore[ray]'") from None
    return ray


@contextmanager
def ray_session(opts: RayOptions) -> Iterator[Any]:
    """Ray, connected: an existing connection is reused (and left open), else one is made for the command
    (and shut down after it)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = None if opts.address in (None, "", "local") else opts.address
    if opts.address == "local":
        os.environ.pop("RAY_ADDRESS", None)
    try:
        # workers import stcstore from this interpreter's environment: every node must have it installed
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise StcError(f"--ray-address {opts.address}: cannot reach a Ray cluster there ({exc}); start one with "
                       f"`ray start --head`, or leave --ray-address out to run on a local one") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_resources(ray: Any, opts: RayOptions, n: int) -> None:
    """Refuse a request the cluster can never meet (Ray would wait for it forever)."""
    res = ray.cluster_resources()
    need_cpu, need_gpu = n * opts.cpus_per_worker, n * opts.gpus_per_worker
    if need_gpu > res.get("GPU", 0) or need_cpu > res.get("CPU", 0):
        raise StcError(f"{n} workers of {opts.cpus_per_worker:g} CPUs and {opts.gpus_per_worker:g} GPUs need "
                       f"{need_cpu:g} CPUs and {need_gpu:g} GPUs; the Ray cluster has {res.get('CPU', 0):g} CPUs "
                       f"and {res.get('GPU', 0):g} GPUs. Ask for fewer --workers or less per worker")
