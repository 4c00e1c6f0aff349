"""Extract's chunks: the missing texts cut into chunks in ingest order, each computed through the feature
path and committed as one directory (features.arrow + stats.parquet) by an atomic rename, with one
background writer so a chunk is written while the next one runs through the model."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import torch

from ..core.atomic import commit, fsync_dir, fsync_tree, staging
from ..core.console import eprint, progress
from ..core.errors import StcError
from ..core.names import FeatureBlock
from ..core.schemas import chunk_schema
from ..store.chunks import INT8_SCALES, write_int8_scales
from ..store.store import FeatureSet, Store
from .compute import FeatureComputer
from .neuron_stats import PARQUET_OPTIONS, NeuronStats

if TYPE_CHECKING:
    from .config import ExtractConfig
    from .stage import Plan

ARROW_TYPE = {"float16": pa.float16(), "float32": pa.float32(), "int8": pa.int8()}


def chunks_to_do(store: Store, dataset: str, done: set[str], size: int) -> Iterator[pa.Table]:
    """The texts without features (id, text, split, label), in ingest order, cut into tables of `size` rows.
    Streamed from the ingest batches: memory holds about one chunk of texts, whatever the dataset size."""
    pending: list[pa.Table] = []
    n = 0
    for batch in store.text_batches(dataset, ["id", "text", "split", "label"]):
        keep = [i for i, x in enumerate(batch.column("id").to_pylist()) if x not in done]
        if not keep:
            continue
        pending.append(pa.Table.from_batches([batch]).take(keep))
        n += len(keep)
        while n >= size:
            table = pa.concat_tables(pending)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, n = ([rest] if rest.num_rows else []), rest.num_rows
    if n:
        yield pa.concat_tables(pending)


def chunk_buffers(computer: FeatureComputer, rows: int) -> dict[str, np.ndarray]:
    """Empty {column: [rows, width]} host buffers of the stored dtype for one chunk's features."""
    return {b.column: np.empty((rows, w), dtype=computer.host_dtype) for b, w in zip(computer.blocks, computer.widths)}


def chunk_features(computer: FeatureComputer, texts: list[str], keys: list[tuple[str, str | None]],
                   stats: NeuronStats, bar: Any, values: bool = True, into: dict[str, np.ndarray] | None = None
                   ) -> tuple[dict[str, np.ndarray], int]:
    """Features of one chunk: {column: [n, width]} in the stored dtype, rows in the given order, and the
    number of truncated texts. keys: [n] (split, label) of each row, the groups of `stats`. values=False: the
    statistics only ({} for the features: nothing is copied off the device or kept). into: `chunk_buffers` of
    at least n rows to fill (the features are then views of their first n rows), else new ones."""
    seqs, truncated = computer.tokenize(texts)
    group_of = {key: i for i, key in enumerate(stats.groups)}
    group_t = torch.tensor([group_of[k] for k in keys], dtype=torch.long)
    if not values:
        bufs = {}
    elif into is not None and all(len(into[b.column]) >= len(seqs) for b in computer.blocks):
        bufs = {b.column: into[b.column][:len(seqs)] for b in computer.blocks}
    else:
        bufs = chunk_buffers(computer, len(seqs))
    for batch in computer.iter_batches(seqs, host=values):
        stats.add(batch.device_values.float(), group_t[batch.rows])  # of the values as stored, on the device
        if values:
            host = batch.values.numpy()
            for b, c0, c1 in zip(computer.blocks, computer.offsets[:-1], computer.offsets[1:]):
                bufs[b.column][batch.rows] = host[:, c0:c1]
        if bar is not None:
            bar.update(len(batch.rows))
    return bufs, truncated


def compute_chunk(computer: FeatureComputer, chunk: pa.Table, bar: Any = None, by_label: bool = True,
                  values: bool = True, into: dict[str, np.ndarray] | None = None
                  ) -> tuple[pa.Table, dict[str, np.ndarray], NeuronStats, int]:
    """One chunk of texts (id, text, split, label) -> (its id/split/label, features, neuron statistics,
    truncated texts): what `stage_chunk` writes. Statistics are per (split, label), or per split only
    (label null) when `by_label` is off: labels that are values (a regression target) would make a group
    of nearly every text."""
    meta = chunk.select(["id", "split", "label"])
    labels = meta.column("label").to_pylist() if by_label else [None] * meta.num_rows
    keys = list(zip(meta.column("split").to_pylist(), labels))
    stats = NeuronStats(computer.blocks, computer.widths, list(dict.fromkeys(keys)), computer.device)
    bufs, trunc = chunk_features(computer, chunk.column("text").to_pylist(), keys, stats, bar, values, into)
    return meta, bufs, stats, trunc


def encode_int8(x: np.ndarray, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None,
                work: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[n, w] float values of one chunk -> (codes [n, w] int8, [2, w] float32 (lo, step)): q = round((x - lo) /
    step) - 128 with lo, step = each neuron's minimum and (maximum - minimum) / 255 in the chunk (step 0: a
    constant neuron, every code -128). lo, hi: [w] the chunk's minimum and maximum per neuron when known (its
    statistics hold them: two passes fewer). work: a float32 buffer of >= n * w values to compute in, reused
    from block to block (a fresh 4-byte-a-value tensor per block cost page faults: bench/sink.py, 2-3x slower).
    In torch, in place, on every intra-op thread (numpy took twice as long)."""
    v = torch.from_numpy(np.ascontiguousarray(x))
    if not len(v):
        return np.zeros(x.shape, np.int8), np.zeros((2, x.shape[1]), np.float32)
    if lo is None or hi is None:
        lo, hi = v.amin(dim=0), v.amax(dim=0)  # both NaN where a NaN is
    lo, hi = lo.float().cpu(), hi.float().cpu()
    nan = torch.isnan(lo) | torch.isnan(hi)
    if bool(nan.any()):  # no code stands for NaN: refuse rather than store another value
        raise StcError(f"the model produced NaN for {int(nan.sum())} neurons of this chunk; int8 codes cannot hold "
                       f"NaN: extract with --dtype float16 (it stores NaN as NaN)")
    step = (hi - lo) / 255
    inv = torch.where(step > 0, 1 / step, torch.zeros_like(step))  # 1 / 0 is inf, never picked
    q = (work if work is not None and work.numel() >= v.numel() else torch.empty(v.numel()))[:v.numel()].view(v.shape)
    # (x - lo) / step - 128 as x * inv + (-lo * inv - 128): the rounding can differ from the quotient's by one code
    # at a half step (within the decoding's step / 2 + float32 rounding), never beyond the range: clamped
    q.copy_(v).mul_(inv).add_(-lo * inv - 128).round_().clamp_(-128, 127)
    return q.to(torch.int8).numpy(), torch.stack([lo, step]).numpy()


def chunk_path(fs: FeatureSet, index: int) -> Path:
    return fs.path / f"chunk-{index:06d}"


def write_chunk(fs: FeatureSet, index: int, meta: pa.Table, bufs: dict[str, np.ndarray],
                blocks: list[FeatureBlock], dtype: str, stats: NeuronStats) -> Path:
    final = chunk_path(fs, index)
    commit(stage_chunk(final, meta, bufs, blocks, dtype, stats), final)
    return final


def stage_chunk(final: Path, meta: pa.Table, bufs: dict[str, np.ndarray], blocks: list[FeatureBlock], dtype: str,
                stats: NeuronStats) -> Path:
    """Write one chunk, complete and fsynced, into a hidden temp sibling of `final` and return it; the
    caller commits it (a rename). Readers never see a temp; a killed writer's temp is swept later. Without
    `bufs` (a stats-only chunk) features.arrow holds the rows' id, split and label only."""
    value_type = ARROW_TYPE[dtype]
    blocks = [b for b in blocks if b.column in bufs]
    schema = chunk_schema([(b.column, bufs[b.column].shape[1]) for b in blocks], value_type)
    arrays = [meta.column(c).combine_chunks() for c in ("id", "split", "label")]
    steps = {}
    if dtype == "int8":
        ranges = stats.ranges()  # each neuron's minimum and maximum in this chunk
        work = torch.empty(max((bufs[b.column].size for b in blocks), default=0))
    for b in blocks:
        buf = bufs[b.column]
        if dtype == "int8":
            buf, steps[b.column] = encode_int8(buf, *ranges.get(b.column, (None, None)), work=work)
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(buf.reshape(-1), type=value_type), buf.shape[1]))
    table = pa.Table.from_arrays(arrays, schema=schema)
    with staging(final, directory=True) as tmp, ThreadPoolExecutor(1, thread_name_prefix="stcstore-stats") as aside:
        # the statistics' table (one row per neuron and group: 2.3 M rows a chunk at GPT2-XL widths) is built
        # and encoded beside the values' write (both release the GIL): bench/sink.py
        def write_stats() -> None:
            pq.write_table(stats.table(), tmp / "stats.parquet", **PARQUET_OPTIONS)
            fsync_tree(tmp / "stats.parquet")

        stats_written = aside.submit(write_stats)
        with pa.OSFile(str(tmp / "features.arrow"), "wb") as sink:
            # int8 codes are zstd-compressed (lossless, ~0.89 of their bytes; a column is decompressed alone
            # when read); float values stay uncompressed and memory-mapped
            with ipc.new_file(sink, table.schema, options=ipc.IpcWriteOptions(
                    compression="zstd" if dtype == "int8" else None)) as w:
                w.write_table(table)
        if steps:
            write_int8_scales(tmp / INT8_SCALES, steps)
            fsync_tree(tmp / INT8_SCALES)
        fsync_tree(tmp / "features.arrow")  # while the statistics are still being written
        stats_written.result()
        fsync_dir(tmp)
    return tmp


def run_chunks(plan: "Plan", store: Store, computer: FeatureComputer, cfg: "ExtractConfig") -> tuple[int, int]:
    """Extract and commit every missing chunk, in order; returns (chunks written, texts truncated).

    One background writer: chunk k is written (stats, Arrow, fsync, rename) while chunk k+1 runs through
    the model. At most one write is pending, so memory holds at most two chunks, and chunks still become
    visible strictly in order (resume relies on that). The two chunks' host buffers are allocated once and
    reused in turn: a chunk's fresh buffers (565 MB at GPT2-XL widths) cost a page fault every 4 KB."""
    todo, size = plan.todo, plan.chunk_rows
    first = len(plan.fs.chunks())
    n_chunks = -(-todo // size)
    written = truncated = done_now = 0
    t_run = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stcstore-writer") as writer, \
            progress(todo, f"extract {cfg.dataset}", "text") as bar:
        pending: Future | None = None
        sets = [] if cfg.stats_only else [chunk_buffers(computer, min(size, todo)) for _ in range(min(2, n_chunks))]
        for k, chunk in enumerate(chunks_to_do(store, cfg.dataset, plan.done, size)):
            # chunk k fills set k % 2: the set of chunk k - 2, whose write has returned
            meta, bufs, stats, trunc = compute_chunk(computer, chunk, bar, plan.stats_by_label, not cfg.stats_only,
                                                     into=sets[k % len(sets)] if sets else None)
            truncated += trunc
            if pending is not None:
                pending.result()  # re-raises a failed write here, before anything else is written
                written += 1
            pending = writer.submit(write_chunk, plan.fs, first + k, meta, bufs, plan.blocks, cfg.dtype, stats)
            done_now += chunk.num_rows
            if bar.disable:  # no TTY (a log file): one line per chunk instead of a bar
                eprint(f"chunk {k + 1}/{n_chunks}: {done_now}/{todo} texts, "
                       f"{done_now / (time.perf_counter() - t_run):.1f} texts/s")
        if pending is not None:
            pending.result()
            written += 1
    return written, truncated
