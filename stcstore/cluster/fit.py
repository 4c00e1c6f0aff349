"""`stcstore fit --engine ray`: the per-layer probes as Ray tasks; sparsification, aggregation, test scoring
and every write stay on the driver.

The probes are independent: each task receives the driver's `Fitter` (the store's path, the feature set,
the splits and the probes' row sample; put once in Ray's object store) and one block, reads that block
from the store itself (the store is on storage every node reaches) and fits its path exactly as a local
fit does: on one thread (`fit.parallel.probe_one`), so a fit on Ray gives the same probes, choices and
classifier as a local fit, with any `--workers` and `--threads`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from ..core.console import eprint
from ..core.names import FeatureBlock
from ..core.result import positional, require_store
from ..fit.parallel import probe_one
from ..fit.records import ProbeState
from ..fit.search import Fitter
from ..fit.config import FitConfig, legacy_fit_config
from ..fit.stage import FitResult, fit
from .engine import RayOptions, check_resources, ray_session


def probe_task(fitter: Fitter, block: FeatureBlock, device: str) -> ProbeState:
    if device != fitter.cfg.device:  # this task's GPU (the fitter is this task's own copy)
        fitter.cfg = replace(fitter.cfg, device=device)
    return probe_one(fitter, block)  # one thread, as every local probe


class RayProbeRunner:
    """`fit.stage.ProbeRunner` on Ray: every block's probe is a task; states come back in block order."""

    def __init__(self, ray: Any, opts: RayOptions) -> None:
        self.ray, self.opts = ray, opts

    def __call__(self, fitter: Fitter, blocks: list[FeatureBlock]) -> Iterator[ProbeState]:
        ray, opts = self.ray, self.opts
        n = min(opts.n_workers(ray), len(blocks))
        check_resources(ray, opts, n)
        eprint(f"Ray: {len(blocks)} probes as tasks of {opts.cpus_per_worker:g} CPUs and {opts.gpus_per_worker:g} GPUs,"
               f" at most {n} at a time")
        task = ray.remote(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker,
                          max_retries=opts.max_retries)(probe_task)
        ref = ray.put(fitter)
        pending: list[Any] = []
        queue = list(blocks)
        try:
            for _ in blocks:  # keep n tasks running; hand results back in block order
                while queue and len(pending) < n:
                    pending.append(task.remote(ref, queue.pop(0), opts.worker_device(fitter.cfg.device)))
                yield ray.get(pending.pop(0))
        finally:
            for r in pending:
                ray.cancel(r, force=True)


def ray_fit(cfg: FitConfig, *args: Any, opts: RayOptions | None = None, **legacy_kw: Any) -> FitResult:
    """`fit(cfg)` with the per-layer probes fitted on Ray: `ray_fit(cfg, opts)` (0.2's `ray_fit(store, cfg, opts,
    out=None, force=False)` still works)."""
    if not isinstance(cfg, FitConfig):  # 0.2: ray_fit(store, cfg, opts=RayOptions(), out=None, force=False)
        store, cfg, *args = (cfg, *args)
        cfg = replace(cfg, store=str(store))
    opts, out, force = positional(tuple(args), opts, legacy_kw.pop("out", cfg.out), legacy_kw.pop("force", cfg.force))
    cfg = legacy_fit_config(cfg, (), {**legacy_kw, "out": out, "force": force})
    opts = opts or RayOptions()
    # tasks may start in another working directory, or on another node
    cfg = replace(cfg, store=str(Path(require_store(cfg.store, "fit")).resolve()))
    with ray_session(opts) as ray:
        return fit(cfg, probe_runner=RayProbeRunner(ray, opts))
