"""`stcstore extract --engine ray`: the same chunks as a local run, computed on Ray actors, committed in order.

The driver plans exactly as a local run (the same missing texts, cut into the same chunks, numbered from
the feature set's next chunk) and holds the store's lock. Each actor loads the model once (on its GPU
when it asked for one) and, per chunk, computes the features through the same feature path
(`features.chunking.compute_chunk`) and writes the chunk, complete and fsynced, into a hidden temp
directory beside its final name on the shared store; it returns only that path and a few counts. The
driver renames the temps into place strictly in chunk order (as the local writer does: resume counts on
it), so a store cannot tell how a chunk was made.

Failures: a dead actor is restarted and its chunk retried by Ray (`max_retries`); the retry writes a new
temp, and the old attempt's temp is never committed (the driver sweeps such temps when the run ends). A dead driver
releases the lock (flock) and takes its actors with it; the next run sweeps every temp and does only the
chunks that were not committed. Commits rely on rename(2) being atomic within a directory, which POSIX
filesystems and NFS (v3/v4), Lustre, GPFS and CephFS give; object stores (S3, GCS) mounted through FUSE
do not, and are not supported as a store.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from ..core.atomic import commit, remove_stale_temps
from ..core.console import eprint, progress
from ..core.errors import StcError
from ..core.names import LOCATION_KEYS, FeatureBlock
from ..core.result import positional, require_store, stage_config
from ..features.chunking import chunk_buffers, chunk_path, chunks_to_do, compute_chunk, stage_chunk
from ..features.compute import FeatureComputer
from ..features.config import ExtractConfig, ExtractResult
from ..features.stage import ChunkRun, Plan, extract
from ..models.loading import LoadedModel, load_model
from ..store.store import Store
from .engine import RayOptions, check_resources, ray_session


@dataclass(frozen=True)
class WorkerSpec:
    """What an extract actor needs to build the same feature path as the driver's plan."""

    model: str
    gguf_file: str | None
    torch_dtype: str
    device: str
    blocks: tuple[FeatureBlock, ...]
    max_length: int
    dtype: str
    batch_size: int
    max_tokens: int
    threads: int
    stats_by_label: bool = True
    values: bool = True  # False: extract --stats-only
    pack: bool = False


@dataclass(frozen=True)
class ChunkDone:
    index: int
    tmp: str
    rows: int
    truncated: int
    clipped: int
    forward_seconds: float
    worker: str  # host:pid


class ExtractWorker:
    """A Ray actor: one model, many chunks."""

    def __init__(self, spec: WorkerSpec, model: LoadedModel | None) -> None:
        torch.set_num_threads(spec.threads)
        lm = model if model is not None else load_model(spec.model, torch_dtype=spec.torch_dtype, device=spec.device,
                                                        gguf_file=spec.gguf_file)
        lm.model.to(spec.device)
        self.fp = lm.fingerprint_fields()
        self.dtype, self.by_label, self.values = spec.dtype, spec.stats_by_label, spec.values
        self.computer = FeatureComputer(lm, spec.blocks, spec.max_length, spec.dtype, spec.batch_size,
                                        spec.max_tokens, spec.device, pack=spec.pack)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._bufs: dict | None = None  # one chunk's host buffers, reused chunk after chunk (no fresh pages each)

    def fingerprint(self) -> dict[str, Any]:
        return self.fp

    def chunk(self, final: str, index: int, table: pa.Table) -> ChunkDone:
        """Compute one chunk and leave it, complete, in a temp beside `final` (the driver commits it)."""
        c0, f0 = self.computer.clipped, self.computer.forward_seconds
        if self.values and (self._bufs is None or any(len(b) < table.num_rows for b in self._bufs.values())):
            self._bufs = chunk_buffers(self.computer, table.num_rows)
        meta, bufs, stats, truncated = compute_chunk(self.computer, table, by_label=self.by_label, values=self.values,
                                                     into=self._bufs)  # staged before the next chunk: reusable
        tmp = stage_chunk(Path(final), meta, bufs, self.computer.blocks, self.dtype, stats)
        return ChunkDone(index, str(tmp), table.num_rows, truncated, self.computer.clipped - c0,
                         self.computer.forward_seconds - f0, self.name)


class RayChunkRunner:
    """`features.stage.ChunkRunner` on Ray: actors compute and stage chunks, the driver commits them in order."""

    def __init__(self, ray: Any, opts: RayOptions, ship_model: bool) -> None:
        self.ray, self.opts, self.ship_model = ray, opts, ship_model
        self.workers_used = 0
        self.per_worker: dict[str, int] = {}
        self.startup_seconds = 0.0  # actors started, models loaded, fingerprints checked
        self.driver_seconds = 0.0  # the driver's own work in the chunk loop (reading texts, submitting, committing)

    def _actors(self, plan: Plan, cfg: ExtractConfig, lm: LoadedModel, n: int) -> list[Any]:
        ray, opts = self.ray, self.opts
        model = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model  # a local folder: absolute
        spec = WorkerSpec(model, cfg.gguf_file, cfg.torch_dtype, opts.worker_device(cfg.device),
                          tuple(plan.blocks), plan.max_length, cfg.dtype, cfg.batch_size, cfg.max_tokens,
                          opts.worker_threads(cfg.threads), plan.stats_by_label, not cfg.stats_only, cfg.pack)
        actor = ray.remote(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker,
                           max_restarts=opts.max_retries, max_task_retries=opts.max_retries)(ExtractWorker)
        self._model_ref = ray.put(lm) if self.ship_model else None  # kept alive: a restarted actor reads it again
        actors = [actor.remote(spec, self._model_ref) for _ in range(n)]
        mine = {k: v for k, v in lm.fingerprint_fields().items() if k not in LOCATION_KEYS}
        for fp in ray.get([a.fingerprint.remote() for a in actors]):
            theirs = {k: v for k, v in fp.items() if k not in LOCATION_KEYS}
            if theirs != mine:
                diff = sorted(k for k in mine if mine[k] != theirs.get(k))
                raise StcError(f"a Ray worker loaded {cfg.model} with other values than the driver ({', '.join(diff)}):"
                               f" every node must have the same model files and the same stcstore and transformers")
        return actors

    def __call__(self, plan: Plan, store: Store, cfg: ExtractConfig, lm: LoadedModel) -> ChunkRun:
        from ray.util import ActorPool

        n_chunks = -(-plan.todo // plan.chunk_rows)
        if not n_chunks:
            return ChunkRun(0, 0, 0, 0.0)
        n = min(self.opts.n_workers(self.ray), n_chunks)
        check_resources(self.ray, self.opts, n)
        eprint(f"Ray: {n} workers of {self.opts.cpus_per_worker:g} CPUs and {self.opts.gpus_per_worker:g} GPUs")
        t0 = time.perf_counter()
        actors = self._actors(plan, cfg, lm, n)
        self.startup_seconds = time.perf_counter() - t0
        self.workers_used = n
        pool = ActorPool(actors)
        first = len(plan.fs.chunks())
        run = ChunkRun(0, 0, 0, 0.0)
        ready: dict[int, ChunkDone] = {}
        try:
            with progress(plan.todo, f"extract {cfg.dataset} (Ray)", "text") as bar:
                self._loop(pool, chunks_to_do(store, cfg.dataset, plan.done, plan.chunk_rows), plan, first, n, ready,
                           run, bar)
        finally:
            for done in ready.values():  # staged but not committed (a failure before their turn)
                shutil.rmtree(done.tmp, ignore_errors=True)
            for a in actors:
                self.ray.kill(a)
        # what attempts that died mid-chunk left behind (their retries were committed); the lock is ours and
        # every task of this run has returned, so no temp here belongs to a live writer
        remove_stale_temps(plan.fs.path)
        return run

    def _loop(self, pool: Any, chunks: Any, plan: Plan, first: int, n: int, ready: dict[int, ChunkDone],
              run: ChunkRun, bar: Any) -> None:
        """Keep every actor busy (two chunks each in flight, at most 4 per actor staged ahead of the next
        commit), commit chunks as soon as all before them are committed."""
        submitted, in_flight, next_commit, exhausted, rows = 0, 0, first, False, 0
        t0 = time.perf_counter()
        while True:
            t_it = time.perf_counter()
            while not exhausted and in_flight < 2 * n and first + submitted - next_commit < 4 * n:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                index = first + submitted
                pool.submit(lambda a, v: a.chunk.remote(*v), (str(chunk_path(plan.fs, index)), index, chunk))
                submitted += 1
                in_flight += 1
            if not in_flight:
                break
            t_wait = time.perf_counter()
            done: ChunkDone = pool.get_next_unordered()
            waited = time.perf_counter() - t_wait
            in_flight -= 1
            ready[done.index] = done
            while next_commit in ready:
                d = ready.pop(next_commit)
                commit(Path(d.tmp), chunk_path(plan.fs, next_commit))
                run.written += 1
                run.truncated += d.truncated
                run.clipped += d.clipped
                run.forward_seconds += d.forward_seconds
                self.per_worker[d.worker] = self.per_worker.get(d.worker, 0) + 1
                bar.update(d.rows)
                rows += d.rows
                if bar.disable:
                    eprint(f"chunk {next_commit - first + 1}: committed from {d.worker}, "
                           f"{rows / (time.perf_counter() - t0):.1f} texts/s")
                next_commit += 1
            self.driver_seconds += time.perf_counter() - t_it - waited


def ray_extract(cfg: ExtractConfig, *args: Any, opts: RayOptions | None = None,
                lm: LoadedModel | None = None) -> ExtractResult:
    """`extract(cfg)` with the chunks computed on Ray: `ray_extract(cfg, opts)` (0.2's `ray_extract(store, cfg,
    opts)` still works). `lm`: a built model (tests), shipped to the actors through Ray's object store;
    otherwise every actor loads `cfg.model` itself."""
    cfg, rest = stage_config(cfg, args, ExtractConfig, ("store",))
    opts, lm = positional(rest, opts, lm)
    opts = opts or RayOptions()
    # actors may start in another working directory, or on another node
    cfg = replace(cfg, store=str(Path(require_store(cfg.store, "extract")).resolve()))
    with ray_session(opts) as ray:
        runner = RayChunkRunner(ray, opts, ship_model=lm is not None)
        result = extract(cfg, lm=lm, runner=runner)
    if runner.workers_used:
        result.messages.append(f"Ray: {runner.workers_used} workers; chunks committed per worker: "
                               + ", ".join(f"{w} {k}" for w, k in sorted(runner.per_worker.items())))
    return result
