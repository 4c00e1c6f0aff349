"""`stcstore extract`: pooled per-layer neuron features into resumable, atomic Arrow chunks.

Plan: the dataset's texts in ingest order, minus those already in a committed chunk of this feature
set, cut into chunks of `chunk_rows`. Each chunk goes through the feature path (`compute.py`: tokenize,
length batches, forward only as deep as needed, pool, clip and cast) and is written as one directory
(features.arrow + stats.parquet) that appears by an atomic rename. A killed run re-plans the same
remaining texts into the same chunks, so the finished store is identical to an uninterrupted one.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..core.version import __version__
from ..core.atomic import remove_stale_temps, store_lock
from ..core.console import eprint
from ..core.errors import FingerprintMismatchError, StcError
from ..core.fingerprint import fingerprint
from ..core.names import FeatureBlock, labels_look_like_values
from ..core.result import positional, require_store, stage_config
from ..models.loading import LoadedModel, load_model
from ..store.featureset import FEATURE_FORMAT_VERSION, MANIFEST_NAME, FeatureSet, FeatureSetManifest
from ..store.store import Store
from .chunking import run_chunks
from .compute import FeatureComputer
from .config import ExtractConfig, ExtractResult, parse_layers
from .noop import missing_texts, model_files, present_ids, request, unchanged_feature_set

# a chunk is about --chunk-mb of features but never fewer rows than this (GPT2-XL, all 441 blocks: 2.3 MB a
# row, so 256 rows are 590 MB; memory holds at most two chunks, one computing and one being written)
MIN_CHUNK_ROWS = 256
STATS_ONLY_CHUNKS = 8  # a stats-only chunk holds this many values-chunks' texts (a kill loses at most one)
STATS_BYTES = 200  # stats.parquet bytes per neuron and chunk, about (zstd; a few (split, label) groups)


def default_max_length(lm: LoadedModel) -> int:
    cfg = lm.model.config
    limits = [512]
    tml = getattr(lm.tokenizer, "model_max_length", None)
    if isinstance(tml, int) and tml < 1_000_000:
        limits.append(tml)
    for attr in ("max_position_embeddings", "n_positions"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int):
            # RoBERTa-style position ids start after padding_idx
            limits.append(v - (cfg.pad_token_id + 1) if lm.adapter.spec.family == "roberta" else v)
    return min(limits)


def feature_fingerprint(lm: LoadedModel, cfg: ExtractConfig, max_length: int, columns: list[str]) -> dict[str, Any]:
    """Everything that defines the stored values (plus where the model came from, recorded only)."""
    fp = {**lm.fingerprint_fields(), "max_length": max_length, "dtype": cfg.dtype,
          "torch_dtype": cfg.torch_dtype, "columns": columns, "feature_format": FEATURE_FORMAT_VERSION}
    if cfg.stats_only:  # its own feature set: statistics of these values, no values (feature sets before 0.3: absent)
        fp["stats_only"] = True
    return fp


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


@dataclass
class Plan:
    """What one extract run does: the feature set, its blocks and widths, and the texts still missing."""

    fs: FeatureSet
    created: bool
    blocks: list[FeatureBlock]
    hidden: list[int]
    ffn: list[int]
    widths: dict[str, int]
    max_length: int
    chunk_rows: int
    row_bytes: int
    done: set[str]  # ids that already have features in the feature set
    todo: int  # texts without features
    total: int
    stats_by_label: bool = True  # neuron statistics per (split, label); per split for labels that are values


def model_parameters(lm: LoadedModel) -> dict[str, int]:
    """The model's parameters, all and without the embeddings (what fine-tuning would update, as the STC
    paper counts them; recorded in a new feature set for the fit's efficiency tables)."""
    total = emb = 0
    for name, p in lm.model.named_parameters():
        total += p.numel()
        if "embed" in name or name.split(".")[0] in ("wte", "wpe") or ".wte." in name or ".wpe." in name:
            emb += p.numel()
    return {"total": total, "non_embedding": total - emb}


def _open_feature_set(store: Store, cfg: ExtractConfig, fp: dict, widths: dict[str, int],
                      chunk_rows: int, params: dict[str, int] | None = None) -> tuple[FeatureSet, bool]:
    """The feature set these values belong in: the one with this fingerprint, one whose fingerprint
    differs only in where the model was loaded from, or a new one."""
    fs_id = fingerprint(fp)
    path = store.features_dir(cfg.dataset) / f"fs={fs_id}"
    manifest_path = path / MANIFEST_NAME
    others = store.feature_sets(cfg.dataset)
    if manifest_path.exists():
        fs = next((s for s in others if s.path == path), None)
        if fs is None or fs.manifest.fingerprint != fp:  # a hash collision or a hand-edited store
            raise FingerprintMismatchError(f"{manifest_path} does not match this run's fingerprint; "
                                           f"refusing to mix rows. Move that directory away.")
        req, files = request(cfg), model_files(cfg)
        if fs.manifest.request != req or fs.manifest.model_files != files:
            # the same values from these files: a later no-op need not load them
            fs.manifest = fs.manifest.updated(request=req, model_files=files)
            fs.manifest.write(manifest_path)
        return fs, False
    # the same weights loaded from another path (a moved venv, a hub cache): extended, not duplicated
    same = [s for s in others if s.manifest.model.same_values(fp)]
    if same:
        eprint(f"note: feature set {same[0].id[:12]} was extracted from the same model weights loaded from "
               f"{same[0].manifest.model.source}; extending it")
        return same[0], False
    manifest = FeatureSetManifest({
        "id": fs_id, "dataset": cfg.dataset, "fingerprint": fp, "columns": fp["columns"], "widths": widths,
        "chunk_rows": chunk_rows, "stcstore_version": __version__,
        "stats_by_label": not _labels_are_values(store, cfg.dataset), "model_parameters": params,
        "created_with": {k: v for k, v in asdict(cfg).items() if k in ("batch_size", "max_tokens", "device",
                                                                       "threads", "layers", "kinds", "poolings", "pack")},
        "request": request(cfg), "model_files": model_files(cfg),  # a later no-op skips loading (noop.py)
    }, str(manifest_path))
    manifest.write(manifest_path)
    if others:
        eprint(f"note: new feature set {fs_id[:12]} (its fingerprint differs from "
               f"{', '.join(s.id[:12] for s in others)}); existing feature sets are left untouched")
    return FeatureSet(path, manifest), True


def _plan(store: Store, cfg: ExtractConfig, lm: LoadedModel) -> Plan:
    hidden, ffn = parse_layers(cfg.layers, lm.adapter.n_layers)
    blocks = sorted(FeatureBlock(k, p, l) for k in cfg.kinds for p in cfg.poolings
                    for l in (hidden if k == "hidden" else ffn))
    if not blocks:
        raise StcError(f"--layers {cfg.layers!r} with --kinds {','.join(cfg.kinds)} selects no features")
    widths = lm.adapter.widths
    max_length = cfg.max_length or default_max_length(lm)
    itemsize = np.dtype(cfg.dtype).itemsize
    row_bytes = sum(widths[b.kind] for b in blocks) * itemsize + 48  # + id/split/label, roughly
    chunk_rows = cfg.chunk_rows or max(MIN_CHUNK_ROWS, min(100_000, cfg.chunk_mb * 2**20 // row_bytes))
    if cfg.stats_only and not cfg.chunk_rows:  # no values held: longer chunks, so fewer statistics files and
        chunk_rows = min(100_000, chunk_rows * STATS_ONLY_CHUNKS)  # length batches over more texts
    fp = feature_fingerprint(lm, cfg, max_length, [b.column for b in blocks])
    fs, created = _open_feature_set(store, cfg, fp, widths, chunk_rows, model_parameters(lm))
    done = present_ids(fs)
    todo = missing_texts(store, cfg.dataset, done)
    return Plan(fs, created, blocks, hidden, ffn, widths, max_length, chunk_rows, row_bytes, done, todo,
                store.text_count(cfg.dataset), fs.manifest.stats_by_label)


def _nothing_to_do(store: Store, cfg: ExtractConfig, fs: FeatureSet, t_start: float) -> ExtractResult:
    """Every text already has features in the feature set of these options and unchanged model files: the
    result of a run that found nothing to do, without loading the model."""
    n = store.text_count(cfg.dataset)
    message = (f"nothing to do: all {n} texts of {cfg.dataset!r} already have features in feature set {fs.id[:12]} "
               f"(model files unchanged; the model was not loaded)")
    eprint(message)
    chunks = len(fs.chunks())
    return ExtractResult(dataset=cfg.dataset, feature_set=fs.id, model=fs.model, texts_total=n, texts_present_before=n,
                         texts_extracted=0, chunks_written=0, chunks_total=chunks, seconds=time.perf_counter() - t_start,
                         forward_seconds=0.0, texts_per_s=0.0, estimated_bytes=0, store_bytes=dir_bytes(fs.path),
                         truncated=0, clipped_values=0, blocks=len(fs.blocks), new_feature_set=False,
                         messages=[message], printed=1)


def _labels_are_values(store: Store, dataset: str) -> bool:
    """Whether the dataset's labels look like a regression target (`labels_look_like_values`); decided
    when its feature set is created and recorded there, so every chunk groups its statistics alike."""
    distinct: set[str] = set()
    for b in store.text_batches(dataset, ["label"]):
        distinct.update(v for v in b.column("label").to_pylist() if v is not None)
        if len(distinct) > 10_000:
            break
    return labels_look_like_values(distinct)


def _check_space(path: Path, needed: int, force: bool, messages: list[str]) -> None:
    """Refuse to start a run whose estimated size exceeds the free space (with force: warn and start; a full
    disk then stops it cleanly at a chunk boundary, and the same command resumes)."""
    free = shutil.disk_usage(path).free
    if needed <= free:
        return
    what = (f"the missing features need about {needed / 2**30:,.2f} GiB but {path} has {free / 2**30:,.2f} GiB "
            f"free")
    if not force:
        raise StcError(f"{what}. Free space, extract fewer --layers/--kinds/--poolings or --dtype float16, or pass "
                       f"--ignore-free-space to start anyway (it stops cleanly when the disk fills and resumes later)")
    messages.append(f"warning: {what}; starting anyway (--ignore-free-space)")


@dataclass
class ChunkRun:
    """What running the chunks of one plan did (locally, or on a cluster: `stcstore.cluster`)."""

    written: int
    truncated: int
    clipped: int
    forward_seconds: float


# runs every chunk of a plan and commits them in order: (plan, store, cfg, the driver's model) -> ChunkRun
ChunkRunner = Callable[[Plan, Store, ExtractConfig, LoadedModel], ChunkRun]


def _run_locally(plan: Plan, store: Store, cfg: ExtractConfig, lm: LoadedModel) -> ChunkRun:
    computer = FeatureComputer(lm, plan.blocks, plan.max_length, cfg.dtype, cfg.batch_size, cfg.max_tokens,
                               cfg.device, bucket=cfg.bucket, pack=cfg.pack)
    written, truncated = run_chunks(plan, store, computer, cfg)
    return ChunkRun(written, truncated, computer.clipped, computer.forward_seconds)


def extract(cfg: ExtractConfig, *legacy: Any, lm: LoadedModel | None = None,
            runner: ChunkRunner | None = None) -> ExtractResult:
    """Extract the missing features of `cfg.dataset` into the store `cfg.store`. `lm` lets tests and notebooks
    pass a built model; `runner` runs the chunks elsewhere (`stcstore.cluster.ray_extract`; the model is then
    loaded here on the CPU only to plan: its fingerprint and widths). 0.2's `extract(store, cfg)` still works."""
    cfg, rest = stage_config(cfg, legacy, ExtractConfig, ("store",))
    lm, runner = positional(rest, lm, runner)
    t_start = time.perf_counter()
    store = Store(require_store(cfg.store, "extract"))
    store.require()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    with store_lock(store.root, "stcstore extract"):
        remove_stale_temps(store.root / "features")
        if store.text_count(cfg.dataset) == 0:
            store.require_dataset(cfg.dataset)
            raise StcError(f"dataset {cfg.dataset!r} has no texts in {store.root}; run `stcstore ingest` first")
        same = unchanged_feature_set(store, cfg) if lm is None else None
        if same is not None and missing_texts(store, cfg.dataset, present_ids(same)) == 0:
            return _nothing_to_do(store, cfg, same, t_start)
        if lm is None:
            eprint(f"loading model {cfg.model} ...")
            lm = load_model(cfg.model, torch_dtype=cfg.torch_dtype, device="cpu" if runner else cfg.device,
                            gguf_file=cfg.gguf_file)
        elif runner is None:
            lm.model.to(cfg.device)
        plan = _plan(store, cfg, lm)
        n_chunks = -(-plan.todo // plan.chunk_rows)
        width = sum(plan.widths[b.kind] for b in plan.blocks)
        if cfg.stats_only:  # ids (~48 bytes a text) and one statistics row per neuron and (split, label) a chunk
            est = plan.todo * 48 + n_chunks * width * STATS_BYTES
        else:
            est = plan.todo * plan.row_bytes
        if not plan.todo:
            messages = [f"nothing to do: all {plan.total} texts of {cfg.dataset!r} already have features "
                        f"in feature set {plan.fs.id[:12]}"]
        else:
            what = (f"statistics only (no values), of {width:,} neurons" if cfg.stats_only else
                    f"{plan.row_bytes:,} bytes per text")
            messages = [f"{plan.todo}/{plan.total} texts missing in feature set {plan.fs.id[:12]}; "
                        f"{len(plan.blocks)} blocks, {what}, estimated store size "
                        f"{est / 2**20:,.1f} MiB in {n_chunks} chunks of {plan.chunk_rows} rows"]
        _check_space(plan.fs.path, est, cfg.ignore_free_space, messages)
        for m in messages:
            eprint(m)
        printed = len(messages)
        n_before = len(plan.fs.chunks())
        t_run = time.perf_counter()
        run = (runner or _run_locally)(plan, store, cfg, lm)
        seconds_run = time.perf_counter() - t_run
        if run.truncated:
            messages.append(f"{run.truncated} texts were longer than --max-length {plan.max_length} tokens and were "
                            f"truncated")
        if cfg.stats_only:
            messages.append(f"feature set {plan.fs.id[:12]} holds neuron statistics only: `stcstore sql` reads them "
                            f"(neuron_stats, neuron_label_gaps); fit and score need values (extract without "
                            f"--stats-only)")
        if run.clipped:
            messages.append(f"{run.clipped} values exceeded the float16 range and were clipped to ±65504; "
                            f"use --dtype float32 to keep them")
    n = plan.todo
    return ExtractResult(
        dataset=cfg.dataset, feature_set=plan.fs.id, model=plan.fs.model, texts_total=plan.total,
        texts_present_before=plan.total - n, texts_extracted=n, chunks_written=run.written,
        chunks_total=n_before + run.written, seconds=time.perf_counter() - t_start,
        forward_seconds=run.forward_seconds, texts_per_s=(n / seconds_run) if n and seconds_run > 0 else 0.0,
        estimated_bytes=est, store_bytes=dir_bytes(plan.fs.path), truncated=run.truncated,
        clipped_values=run.clipped, blocks=len(plan.blocks), new_feature_set=plan.created, messages=messages,
        printed=printed,
    )
