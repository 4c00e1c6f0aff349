"""`stcstore score --engine ray`: chunks of texts scored on Ray actors, each writing its own part file.

The driver reads the texts (store dataset or input file, validated and deduplicated as in a local run),
takes the output directory's lock, and knows which texts already have predictions. It sends each chunk,
with the predictions its texts already have, to an actor that holds the classifiers and their models
(loaded once, on its GPU when it asked for one). The actor scores the chunk exactly as a local run does
(`score.stage.ScoreRun.chunk`) and commits one part file, `part-RUN-cNNNNNN-000000.parquet`, named by the
chunk: a retried chunk (its actor died) writes the same name again, so a chunk never lands twice. Part files
are independent, so they commit in any order; a killed driver leaves whole part files only, and the next
run scores what has no prediction yet. Only a directory `--output` is supported (a single .parquet file has
one writer), and `--explain` stays local.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import remove_stale_temps
from ..core.console import eprint, progress
from ..core.errors import StcError
from ..models.loading import LoadedModel
from ..score.groups import Group, Models, load_classifiers, make_groups
from ..score.sink import PredictionsSink
from ..score.sources import Chunks, Rejects
from ..score.config import ClassifierRun, ScoreConfig, ScoreResult
from ..score.stage import ScoreRun, score
from .engine import RayOptions, check_resources, ray_session


@dataclass
class ChunkScored:
    """What an actor did with one chunk: the run's counters, to add up on the driver."""

    index: int
    per_classifier: list[dict[str, int]]
    texts: int
    scored_texts: int
    forward_seconds: float
    work_seconds: float
    truncated: int
    files: int
    rejects: list[dict]
    reasons: dict[str, int]
    groups: list[dict[str, Any]]  # each group's info, its texts and truncated counts for this chunk only


class ScoreWorker:
    """A Ray actor: the classifiers and their models, loaded once."""

    def __init__(self, cfg: ScoreConfig, models: dict[str, LoadedModel] | None, device: str, threads: int) -> None:
        torch.set_num_threads(threads)
        self.cfg = replace(cfg, device=device)
        self.clfs = load_classifiers(cfg.classifiers)
        self.groups = make_groups(self.clfs)
        self.models = Models(dict(models or {}), cfg.model, device, cfg.gguf_file)

    def chunk(self, index: int, ids: list[str], texts: list[str], done: dict[str, dict[str, int | None]],
              run_id: str, scored_at: dt.datetime, source: str) -> ChunkScored:
        before = [(g.info.get("texts", 0), g.info.get("truncated", 0)) for g in self.groups]
        runs = [ClassifierRun(c.name, "", c.fingerprint, "", c.l_temp, 0) for c in self.clfs]
        sink = PredictionsSink(Path(self.cfg.output), False, f"{run_id}-c{index:06d}", scored_at, asdict(self.cfg))
        rejects = Rejects(Path(self.cfg.output) / "rejects")  # rows only: the driver writes them
        run = ScoreRun(self.cfg, self.clfs, runs, done, sink, None, self.models, rejects, source)
        run.chunk(self.groups, ids, texts)
        groups = [{**g.info, "texts": g.info.get("texts", 0) - t0, "truncated": g.info.get("truncated", 0) - tr0}
                  for g, (t0, tr0) in zip(self.groups, before)]
        return ChunkScored(index, [{"scored": r.scored, "already": r.already, "changed": r.changed} for r in runs],
                           run.texts, run.scored_texts, run.forward_seconds, run.work_seconds, run.truncated,
                           sink.files, rejects.rows, rejects.reasons, groups)


class RayChunkScorer:
    """`score.stage.ChunkScorer` on Ray."""

    def __init__(self, ray: Any, opts: RayOptions, models: dict[str, LoadedModel] | None) -> None:
        self.ray, self.opts, self.models = ray, opts, models
        self.workers_used = 0

    def __call__(self, run: ScoreRun, groups: list[Group], chunks: Chunks, total: int | None) -> None:
        from ray.util import ActorPool

        ray, opts, cfg = self.ray, self.opts, run.cfg
        n = opts.n_workers(ray)
        check_resources(ray, opts, n)
        eprint(f"Ray: {n} score workers of {opts.cpus_per_worker:g} CPUs and {opts.gpus_per_worker:g} GPUs")
        actor = ray.remote(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker,
                           max_restarts=opts.max_retries, max_task_retries=opts.max_retries)(ScoreWorker)
        self._models_ref = ray.put(self.models) if self.models else None  # kept alive for actor restarts
        actors = [actor.remote(cfg, self._models_ref, opts.worker_device(cfg.device),
                               opts.worker_threads(cfg.threads)) for _ in range(n)]
        self.workers_used = n
        pool = ActorPool(actors)
        run_id = run.sink.run_id
        try:
            with progress(total, "score (Ray)", "text") as bar:
                in_flight = 0
                for index, (ids, texts) in enumerate(chunks):
                    done = {fp: {i: have[i] for i in ids if i in have} for fp, have in run.done.items()}
                    pool.submit(lambda a, v: a.chunk.remote(*v), (index, ids, texts, done, run_id, run.sink.scored_at,
                                                                  run.source))
                    in_flight += 1
                    if in_flight >= 2 * n:
                        self._merge(run, groups, pool.get_next_unordered(), bar)
                        in_flight -= 1
                while in_flight:
                    self._merge(run, groups, pool.get_next_unordered(), bar)
                    in_flight -= 1
        finally:
            for a in actors:
                ray.kill(a)
        remove_stale_temps(Path(cfg.output))  # part files of attempts that died mid-write (their retries landed)

    @staticmethod
    def _merge(run: ScoreRun, groups: list[Group], r: ChunkScored, bar: Any) -> None:
        for c, counts in zip(run.runs, r.per_classifier):
            c.scored += counts["scored"]
            c.already += counts["already"]
            c.changed += counts["changed"]
        run.texts += r.texts
        run.scored_texts += r.scored_texts
        run.forward_seconds += r.forward_seconds
        run.work_seconds += r.work_seconds
        run.truncated += r.truncated
        run.sink.files += r.files
        run.rejects.rows.extend(r.rejects)
        for k, v in r.reasons.items():
            run.rejects.reasons[k] = run.rejects.reasons.get(k, 0) + v
        for g, info in zip(groups, r.groups):
            if not info:
                continue
            if not g.info:
                g.info = {**info, "texts": 0, "truncated": 0}
            g.info["texts"] += info["texts"]
            g.info["truncated"] = g.info.get("truncated", 0) + info["truncated"]
        bar.update(r.texts)


def ray_score(cfg: ScoreConfig, opts: RayOptions = RayOptions(),
              models: dict[str, LoadedModel] | None = None) -> ScoreResult:
    """`score` with the chunks scored on Ray actors (directory output only; no --explain)."""
    if cfg.single_file:
        raise StcError(f"--engine ray writes a predictions directory, one part file per chunk; --output {cfg.output} "
                       f"is a single .parquet file. Give a directory, or score without --engine ray")
    if cfg.explain:
        raise StcError("--explain is not available with --engine ray; score the texts to explain without it")
    def absolute(p: str | None) -> str | None:
        return None if p is None else str(Path(p).resolve())

    # actors may start in another working directory (or on another node): every path absolute
    cfg = replace(cfg, classifiers=tuple(str(Path(c).resolve()) for c in cfg.classifiers), output=absolute(cfg.output),
                  store=absolute(cfg.store), input=absolute(cfg.input),
                  model=absolute(cfg.model) if cfg.model and Path(cfg.model).exists() else cfg.model)
    with ray_session(opts) as ray:
        scorer = RayChunkScorer(ray, opts, models)
        result = score(cfg, models=None, chunk_scorer=scorer)
    result.messages.append(f"Ray: {scorer.workers_used} score workers")
    return result
