"""`stcstore extract`: pooled per-layer neuron features into resumable, atomic Arrow chunks.

Plan: the dataset's texts in ingest order, minus those already in a committed chunk of this feature
set, cut into chunks of `chunk_rows`. Each chunk is tokenized once, batched by length under a token
budget, run through the model only as deep as needed, and written as one directory
(features.arrow + stats.parquet) that appears by an atomic rename. A killed run re-plans the same
remaining texts into the same chunks, so the finished store is identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from . import __version__
from .blocks import KINDS, POOLINGS, BlockKey, check_kinds_poolings
from .capture import Capturer, length_batches, pad_batch
from .errors import FingerprintMismatchError, StcError
from .fsutil import commit, eprint, remove_stale_temps, store_lock, tmp_name, write_json_atomic
from .models import LoadedModel, load_model
from .stats import StatsAccumulator
from .store import FeatureSet, Store, check_name, read_chunk_columns

FEATURE_FORMAT_VERSION = 1  # bump when stored values would change for the same inputs
FLOAT16_MAX = 65504.0
DTYPES = {"float16": (np.float16, pa.float16()), "float32": (np.float32, pa.float32())}


@dataclass(frozen=True)
class ExtractConfig:
    """Options of one extract run; validated without I/O."""

    dataset: str
    model: str = "default"  # hub name, local path, or "default" (the packaged MiniLM)
    layers: str = "all"  # "all", "A-B", ":B" (0..B) or "A,B,C"; applies to h{l} and a{l}
    kinds: tuple[str, ...] = KINDS
    poolings: tuple[str, ...] = POOLINGS
    max_length: int | None = None  # tokens per text; None: min(model limit, 512)
    batch_size: int = 64  # most rows per forward batch
    max_tokens: int = 8192  # token budget per batch (rows x longest row)
    dtype: str = "float16"  # stored feature dtype
    torch_dtype: str = "float32"  # model compute dtype
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    chunk_rows: int | None = None  # rows per chunk; None: about `chunk_mb` per chunk
    chunk_mb: int = 128
    bucket: bool = True  # sort by length inside a chunk (off only for benchmarks)
    gguf_file: str | None = None

    def __post_init__(self) -> None:
        check_name(self.dataset, "--dataset")
        check_kinds_poolings(self.kinds, self.poolings)
        if self.dtype not in DTYPES:
            raise StcError(f"--dtype must be float16 or float32, not {self.dtype!r}")
        for name in ("batch_size", "max_tokens", "chunk_mb"):
            if getattr(self, name) < 1:
                raise StcError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_length is not None and self.max_length < 2:
            raise StcError("--max-length must be at least 2")
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise StcError("--chunk-rows must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise StcError("--threads must be at least 1")


def parse_layers(spec: str, n_layers: int) -> tuple[list[int], list[int]]:
    """Layer spec -> (hidden layers within 0..L, ffn layers within 0..L-1)."""
    spec = spec.strip()
    if spec in ("", "all"):
        wanted = list(range(n_layers + 1))
    else:
        wanted = []
        try:
            for part in spec.split(","):
                if "-" in part or ":" in part:
                    a, b = part.replace(":", "-").split("-")
                    wanted += list(range(int(a) if a else 0, int(b) + 1))
                else:
                    wanted.append(int(part))
        except ValueError:
            raise StcError(f"--layers {spec!r}: use all, A-B, :B or A,B,C (e.g. 0-6)") from None
    bad = [l for l in wanted if l < 0 or l > n_layers]
    if bad:
        raise StcError(f"--layers {spec!r}: layer {bad[0]} is out of range; this model has hidden states "
                       f"h0..h{n_layers} and FFN activations a0..a{n_layers - 1}")
    wanted = sorted(set(wanted))
    return wanted, [l for l in wanted if l < n_layers]


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


@dataclass
class ExtractResult:
    dataset: str
    feature_set: str
    model: str
    texts_total: int
    texts_present_before: int
    texts_extracted: int
    chunks_written: int
    chunks_total: int
    seconds: float
    forward_seconds: float
    texts_per_s: float
    estimated_bytes: int
    store_bytes: int
    truncated: int
    clipped_values: int
    blocks: int
    new_feature_set: bool
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(lm: LoadedModel, cfg: ExtractConfig, max_length: int, columns: list[str]) -> dict[str, Any]:
    """Everything that defines the stored values. Same fingerprint <=> same feature set directory."""
    return {**lm.fingerprint_fields(), "max_length": max_length, "dtype": cfg.dtype,
            "torch_dtype": cfg.torch_dtype, "columns": columns, "feature_format": FEATURE_FORMAT_VERSION}


def _row_bytes(blocks: list[BlockKey], widths: dict[str, int], itemsize: int) -> int:
    return sum(widths[b.kind] for b in blocks) * itemsize + 48  # + id/split/label, roughly


def _open_feature_set(store: Store, cfg: ExtractConfig, fp: dict, widths: dict[str, int],
                      chunk_rows: int) -> tuple[FeatureSet, bool]:
    fs_id = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    path = store.features_dir(cfg.dataset) / f"fs={fs_id}"
    manifest_path = path / "featureset.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["fingerprint"] != fp:  # a hash collision or a hand-edited store
            raise FingerprintMismatchError(f"{manifest_path} does not match this run's fingerprint; "
                                           f"refusing to mix rows. Move that directory away.")
        return FeatureSet(path, manifest), False
    others = store.feature_sets(cfg.dataset)
    manifest = {
        "id": fs_id, "dataset": cfg.dataset, "fingerprint": fp, "columns": fp["columns"], "widths": widths,
        "chunk_rows": chunk_rows, "stcstore_version": __version__,
        "created_with": {k: v for k, v in asdict(cfg).items() if k in ("batch_size", "max_tokens", "device",
                                                                       "threads", "layers", "kinds", "poolings")},
    }
    write_json_atomic(manifest_path, manifest)
    if others:
        differs = [s.id[:12] for s in others]
        eprint(f"note: new feature set {fs_id[:12]} (its fingerprint differs from {', '.join(differs)}); "
               f"existing feature sets are left untouched")
    return FeatureSet(path, manifest), True


def _done_ids(fs: FeatureSet) -> set[str]:
    done: set[str] = set()
    for chunk in fs.chunks():
        done.update(read_chunk_columns(chunk, ["id"]).column("id").to_pylist())
    return done


class _ChunkRunner:
    """Tokenize, batch, forward and pool one chunk into dense [n, width] buffers per block."""

    def __init__(self, lm: LoadedModel, cfg: ExtractConfig, hidden: list[int], ffn: list[int],
                 max_length: int) -> None:
        self.lm, self.cfg, self.max_length = lm, cfg, max_length
        self.capturer = Capturer(lm.adapter, hidden if "hidden" in cfg.kinds else [],
                                 ffn if "ffn" in cfg.kinds else [], cfg.poolings)
        self.np_dtype = DTYPES[cfg.dtype][0]
        self.device = torch.device(cfg.device)
        self.forward_seconds = 0.0
        self.clipped = 0

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], int]:
        enc = self.lm.tokenizer(texts, truncation=True, max_length=self.max_length, add_special_tokens=True,
                                return_attention_mask=False, return_token_type_ids=False)
        seqs = enc["input_ids"]
        encodings = getattr(enc, "encodings", None)
        if encodings:  # fast tokenizers say exactly which texts lost tokens
            truncated = sum(1 for e in encodings if e.overflowing)
        else:  # slow tokenizers: an upper bound
            truncated = sum(1 for s in seqs if len(s) >= self.max_length)
        return seqs, truncated

    def run(self, texts: list[str], groups: list[int], blocks: list[BlockKey], widths: dict[str, int],
            stats: StatsAccumulator, progress: tqdm | None) -> tuple[dict[str, np.ndarray], int]:
        """Features of one chunk: {column: [n, width]} in the stored dtype, rows in the given order.

        groups: [n] index of each row's (split, label) group in `stats`."""
        seqs, truncated = self.tokenize(texts)
        n = len(seqs)
        bufs = {b.column: np.empty((n, widths[b.kind]), dtype=self.np_dtype) for b in blocks}
        offsets = np.cumsum([0] + [widths[b.kind] for b in blocks])
        lengths = [len(s) for s in seqs]
        if self.cfg.bucket:
            batches = list(length_batches(lengths, self.cfg.batch_size, self.cfg.max_tokens))
        else:
            batches = [list(range(i, min(i + self.cfg.batch_size, n))) for i in range(0, n, self.cfg.batch_size)]
        pad_id = self.lm.tokenizer.pad_token_id
        side = getattr(self.lm.tokenizer, "padding_side", "right")
        group_t = torch.tensor(groups, dtype=torch.long)
        store_torch = torch.float16 if self.np_dtype == np.float16 else torch.float32
        for rows in batches:
            ids, mask = pad_batch([seqs[i] for i in rows], pad_id, side)
            t0 = time.perf_counter()
            out = self.capturer.run(ids.to(self.device), mask.to(self.device))
            self.forward_seconds += time.perf_counter() - t0
            # one [B, total_width] tensor per batch: a single clamp, cast and copy for all blocks
            x = torch.cat([out[(b.kind, b.layer)][b.pooling] for b in blocks], dim=1)
            # two fast reductions instead of abs() (a full copy); count and clip only when needed
            if store_torch == torch.float16 and (float(x.amax()) > FLOAT16_MAX or float(x.amin()) < -FLOAT16_MAX):
                self.clipped += int((x > FLOAT16_MAX).sum() + (x < -FLOAT16_MAX).sum())
                x = x.clamp(-FLOAT16_MAX, FLOAT16_MAX)
            stored = x.to("cpu", dtype=store_torch)
            index = np.asarray(rows)
            stats.add(stored.float(), group_t[index])  # statistics of the values as stored
            values = stored.numpy()
            for b, c0, c1 in zip(blocks, offsets[:-1], offsets[1:]):
                bufs[b.column][index] = values[:, c0:c1]
            if progress is not None:
                progress.update(len(rows))
        return bufs, truncated


def _write_chunk(fs: FeatureSet, index: int, meta: pa.Table, bufs: dict[str, np.ndarray],
                 blocks: list[BlockKey], arrow_dtype: pa.DataType, stats: StatsAccumulator) -> Path:
    final = fs.path / f"chunk-{index:06d}"
    tmp = tmp_name(final)
    tmp.mkdir()
    arrays = [meta.column("id").combine_chunks(), meta.column("split").combine_chunks(),
              meta.column("label").combine_chunks()]
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("split", pa.string(), nullable=False),
              pa.field("label", pa.string())]
    for b in blocks:
        buf = bufs[b.column]
        values = pa.array(buf.reshape(-1), type=arrow_dtype)
        arrays.append(pa.FixedSizeListArray.from_arrays(values, buf.shape[1]))
        fields.append(pa.field(b.column, pa.list_(arrow_dtype, buf.shape[1]), nullable=False))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    with pa.OSFile(str(tmp / "features.arrow"), "wb") as sink:
        with ipc.new_file(sink, table.schema, options=ipc.IpcWriteOptions(compression=None)) as w:
            w.write_table(table)
    pq.write_table(stats.table(), tmp / "stats.parquet", compression="zstd")
    commit(tmp, final)
    return final


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def extract(store_path: str | Path, cfg: ExtractConfig, lm: LoadedModel | None = None) -> ExtractResult:
    """Extract the missing features of `cfg.dataset`. `lm` lets tests and notebooks pass a built model."""
    t_start = time.perf_counter()
    store = Store(store_path)
    store.require()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    with store_lock(store.root, "stcstore extract"):
        remove_stale_temps(store.root / "features")
        texts = store.texts(cfg.dataset, columns=["id", "text", "split", "label"])
        if texts.num_rows == 0:
            raise StcError(f"dataset {cfg.dataset!r} has no texts in {store.root}; run `stcstore ingest` first")
        if lm is None:
            eprint(f"loading model {cfg.model} ...")
            lm = load_model(cfg.model, torch_dtype=cfg.torch_dtype, device=cfg.device, gguf_file=cfg.gguf_file)
        else:
            lm.model.to(cfg.device)
        hidden, ffn = parse_layers(cfg.layers, lm.adapter.n_layers)
        blocks = sorted(BlockKey(k, p, l) for k in cfg.kinds for p in cfg.poolings
                        for l in (hidden if k == "hidden" else ffn))
        if not blocks:
            raise StcError(f"--layers {cfg.layers!r} with --kinds {','.join(cfg.kinds)} selects no features")
        widths = {"hidden": lm.adapter.hidden_size, "ffn": lm.adapter.ffn_size}
        max_length = cfg.max_length or default_max_length(lm)
        itemsize = np.dtype(DTYPES[cfg.dtype][0]).itemsize
        row_bytes = _row_bytes(blocks, widths, itemsize)
        chunk_rows = cfg.chunk_rows or max(16, min(100_000, cfg.chunk_mb * 2**20 // row_bytes))
        fp = fingerprint(lm, cfg, max_length, [b.column for b in blocks])
        fs, created = _open_feature_set(store, cfg, fp, widths, chunk_rows)
        done = _done_ids(fs)
        ids = texts.column("id").to_pylist()
        todo = [i for i, x in enumerate(ids) if x not in done]
        messages = []
        n_existing = len(fs.chunks())
        est = len(todo) * row_bytes
        if not todo:
            messages.append(f"nothing to do: all {len(ids)} texts of {cfg.dataset!r} already have features "
                            f"in feature set {fs.id[:12]}")
        else:
            messages.append(f"{len(todo)}/{len(ids)} texts missing in feature set {fs.id[:12]}; "
                            f"{len(blocks)} blocks, {row_bytes:,} bytes per text, estimated store size "
                            f"{est / 2**20:,.1f} MiB in {-(-len(todo) // chunk_rows)} chunks of {chunk_rows} rows")
        for m in messages:
            eprint(m)
        runner = _ChunkRunner(lm, cfg, hidden, ffn, max_length)
        truncated = 0
        written = 0
        t_run = time.perf_counter()
        # One background writer: chunk k is written (stats, Arrow, fsync, rename) while chunk k+1 runs
        # through the model. At most one write is pending, so memory holds at most two chunks, and
        # chunks still become visible strictly in order (resume relies on that).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stcstore-writer") as writer, \
                tqdm(total=len(todo), unit="text", file=sys.stderr, disable=None, dynamic_ncols=True,
                     desc=f"extract {cfg.dataset}") as bar:
            pending: Future | None = None
            n_chunks = -(-len(todo) // chunk_rows)
            for k, c0 in enumerate(range(0, len(todo), chunk_rows)):
                rows = todo[c0:c0 + chunk_rows]
                meta = texts.take(rows).select(["id", "split", "label"])
                chunk_texts = texts.column("text").take(rows).to_pylist()
                keys = list(zip(meta.column("split").to_pylist(), meta.column("label").to_pylist()))
                group_of = {key: i for i, key in enumerate(dict.fromkeys(keys))}
                stats = StatsAccumulator(blocks, [widths[b.kind] for b in blocks], list(group_of))
                bufs, trunc = runner.run(chunk_texts, [group_of[key] for key in keys], blocks, widths, stats, bar)
                truncated += trunc
                if pending is not None:
                    pending.result()  # re-raises a failed write here, before anything else is written
                    written += 1
                pending = writer.submit(_write_chunk, fs, n_existing + k, meta, bufs, blocks, DTYPES[cfg.dtype][1],
                                        stats)
                if bar.disable:  # no TTY (a log file): one line per chunk instead of a bar
                    done_now = min(c0 + chunk_rows, len(todo))
                    eprint(f"chunk {k + 1}/{n_chunks}: {done_now}/{len(todo)} texts, "
                           f"{done_now / (time.perf_counter() - t_run):.1f} texts/s")
            if pending is not None:
                pending.result()
                written += 1
        seconds_run = time.perf_counter() - t_run
        if truncated:
            messages.append(f"{truncated} texts were longer than --max-length {max_length} tokens and were truncated")
        if runner.clipped:
            messages.append(f"{runner.clipped} values exceeded the float16 range and were clipped to ±65504; "
                            f"use --dtype float32 to keep them")
    return ExtractResult(
        dataset=cfg.dataset, feature_set=fs.id, model=fs.model, texts_total=len(ids),
        texts_present_before=len(ids) - len(todo), texts_extracted=len(todo), chunks_written=written,
        chunks_total=n_existing + written, seconds=time.perf_counter() - t_start,
        forward_seconds=runner.forward_seconds,
        texts_per_s=(len(todo) / seconds_run) if todo and seconds_run > 0 else 0.0,
        estimated_bytes=est, store_bytes=dir_bytes(fs.path), truncated=truncated, clipped_values=runner.clipped,
        blocks=len(blocks), new_feature_set=created, messages=messages,
    )
