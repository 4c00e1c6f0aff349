"""The chunk writer against the disk: does `extract` write at the speed of the machine's storage?

Drives the real chunk writer (`features.chunking.write_chunk`: Arrow IPC, the neuron statistics' Parquet,
fsync of every file, the atomic rename) with pooled batches of GPT2-XL's widths (hidden 1,600 x 49 states,
FFN 6,400 x 48 blocks, three poolings: 2.3 MB a text in float16) made without a model, and measures the same
disk's sequential write bandwidth in the same run: one plain large write of the same bytes + fsync, into the
same folder. Runs alternate (plain, writer, plain, writer, ...); medians.

    python bench/sink.py                          # 3 chunks of 256 texts, all GPT2-XL blocks (1.8 GB a run)
    python bench/sink.py --rows 128 --chunks 2 --dtype int8 --repeats 2
    python bench/sink.py --dtype float16,int8      # both, one after the other (texts/s comparable)
    python bench/sink.py --dir /mnt/fast          # another disk

Prints bytes written, seconds and MB/s of each, and writer ÷ plain (goal >= 0.8). Then the step before the
writer: scattering a chunk's length-sorted batches into its per-column host buffers, into fresh buffers (as
extract did until 0.3) and into the two sets extract now allocates once and reuses in turn.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from stcstore.core.names import POOLINGS, FeatureBlock
from stcstore.features.chunking import write_chunk
from stcstore.features.neuron_stats import NeuronStats
from stcstore.store.featureset import FEATURE_FORMAT_VERSION, MANIFEST_NAME, FeatureSet, FeatureSetManifest

GPT2_XL = {"hidden": (1600, 49), "ffn": (6400, 48)}  # width, layers (h0..h48; a0..a47)

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--rows", type=int, default=256, help="texts per chunk (extract's minimum at GPT2-XL widths)")
ap.add_argument("--chunks", type=int, default=3, help="chunks per writer run")
ap.add_argument("--dtype", default="float16", help="float16, float32, int8, or several: float16,int8 (each against "
                "a plain write of its own bytes, in the same run)")
ap.add_argument("--layers", type=int, default=None, help="fewer layers per kind (a smaller, faster run)")
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--dir", default=None, help="folder on the disk to measure [default: $TMPDIR]")


def blocks_of(layers: int | None) -> tuple[list[FeatureBlock], dict[str, int]]:
    blocks = [FeatureBlock(k, p, l) for k, (w, n) in GPT2_XL.items() for p in POOLINGS
              for l in range(min(n, layers or n))]
    return sorted(blocks), {k: w for k, (w, _) in GPT2_XL.items()}


def feature_set(root: Path, blocks: list[FeatureBlock], widths: dict[str, int], dtype: str, rows: int) -> FeatureSet:
    path = root / "features" / "dataset=bench" / "fs=0000000000000000"
    path.mkdir(parents=True)
    fp = {"model": "bench", "max_length": 64, "dtype": dtype, "torch_dtype": "float32", "n_layers": 48,
          "columns": [b.column for b in blocks], "feature_format": FEATURE_FORMAT_VERSION}
    manifest = FeatureSetManifest({"id": "0" * 16, "dataset": "bench", "fingerprint": fp, "columns": fp["columns"],
                                   "widths": widths, "chunk_rows": rows})
    manifest.write(path / MANIFEST_NAME)
    return FeatureSet(path, manifest)


def batches(blocks: list[FeatureBlock], widths: dict[str, int], rows: int, seed: int
            ) -> tuple[pa.Table, dict[str, np.ndarray], NeuronStats]:
    """One chunk of pooled values (as extract holds them before writing: float16 on the host) and its
    statistics, made without a model."""
    rng = np.random.default_rng(seed)
    meta = pa.table({"id": [f"t{seed}-{i}" for i in range(rows)], "split": ["train"] * rows,
                     "label": [str(i % 2) for i in range(rows)]})
    bufs = {b.column: rng.standard_normal((rows, widths[b.kind]), dtype=np.float32).astype(np.float16)
            for b in blocks}
    stats = NeuronStats(blocks, [widths[b.kind] for b in blocks], [("train", "0"), ("train", "1")])
    import torch

    x = torch.from_numpy(np.concatenate([bufs[b.column] for b in blocks], axis=1)).float()
    stats.add(x, torch.tensor([i % 2 for i in range(rows)]))
    return meta, bufs, stats


def scatter(chunks: list, blocks: list[FeatureBlock], rows: int, repeats: int, batch: int = 64) -> None:
    """Seconds to scatter one chunk's batches (rows in a shuffled order, as length buckets come) into
    per-column buffers: fresh ones each chunk against two sets reused in turn (`features.chunking.run_chunks`)."""
    bufs = chunks[0][1]
    host = np.concatenate([bufs[b.column] for b in blocks], axis=1)  # [rows, total width]: batches side by side
    offsets = np.cumsum([0] + [bufs[b.column].shape[1] for b in blocks])
    order = np.random.default_rng(2).permutation(rows)
    parts = [(order[i:i + batch], host[i:i + batch]) for i in range(0, rows, batch)]

    def fill(into: list[np.ndarray]) -> float:
        t0 = time.perf_counter()
        for idx, values in parts:
            for k, out in enumerate(into):
                out[idx] = values[:, offsets[k]:offsets[k + 1]]
        return time.perf_counter() - t0

    def fresh() -> list[np.ndarray]:
        return [np.empty((rows, bufs[b.column].shape[1]), np.float16) for b in blocks]

    kept: list = []
    fresh_s = []
    for _ in range(repeats + 1):
        into = fresh()
        fresh_s.append(fill(into))
        kept = [into, *kept][:2]  # two chunks alive (one computing, one writing), as in extract
    sets = [fresh(), fresh()]
    for s in sets:
        fill(s)  # their first touch, once per extract
    reused_s = [fill(sets[i % 2]) for i in range(repeats + 1)]
    f, r = statistics.median(fresh_s[1:]), statistics.median(reused_s[1:])
    print(f"scatter of one chunk's batches into its buffers ({rows} texts, {host.nbytes / 2**20:,.0f} MiB): fresh "
          f"buffers {f:.3f} s, reused {r:.3f} s ({f / r:.1f}x)", flush=True)


def plain_write(path: Path, nbytes: int, block: bytes) -> float:
    """Seconds for a sequential write of nbytes + fsync (the disk's bandwidth, as a program sees it)."""
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            n = f.write(block[:min(len(block), left)])
            left -= n
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    path.unlink()
    return seconds


def main() -> None:
    args = ap.parse_args()
    dtypes = args.dtype.split(",")
    bad = [d for d in dtypes if d not in ("float16", "float32", "int8")]
    if bad:
        ap.error(f"--dtype {bad[0]!r}: float16, float32 or int8")
    blocks, widths = blocks_of(args.layers)
    base = Path(tempfile.mkdtemp(prefix="stcstore-sink-", dir=args.dir))
    try:
        chunks = [batches(blocks, widths, args.rows, s) for s in range(args.chunks)]
        block = np.random.default_rng(1).bytes(64 << 20)  # incompressible, as float16 features are
        for dtype in dtypes:
            measure(args, dtype, blocks, widths, chunks, base, block)
        scatter(chunks, blocks, args.rows, args.repeats)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def measure(args: argparse.Namespace, dtype: str, blocks: list[FeatureBlock], widths: dict[str, int],
            chunks: list, base: Path, block: bytes) -> None:
    plain, writer, sizes = [], [], []
    for r in range(args.repeats):
        root = base / f"run-{dtype}-{r}"
        fs = feature_set(root, blocks, widths, dtype, args.rows)
        t0 = time.perf_counter()
        for i, (meta, bufs, stats) in enumerate(chunks):
            write_chunk(fs, i, meta, bufs, blocks, dtype, stats)
        writer.append(time.perf_counter() - t0)
        size = sum(p.stat().st_size for c in fs.chunks() for p in c.iterdir())
        sizes.append(size)
        shutil.rmtree(root)
        plain.append(plain_write(base / "plain.bin", size, block))
    size = statistics.median(sizes)
    p, w = statistics.median(plain), statistics.median(writer)
    width = sum(widths[b.kind] for b in blocks)
    print(f"{len(blocks)} blocks, {width:,} values a text ({dtype}); {args.chunks} chunks of {args.rows} texts "
          f"a run, {size / 2**20:,.0f} MiB written; folder {base.parent}; medians of {args.repeats}")
    print(f"  plain write + fsync   {p:7.2f} s  {size / p / 2**20:8.1f} MiB/s")
    print(f"  chunk writer          {w:7.2f} s  {size / w / 2**20:8.1f} MiB/s   "
          f"{args.chunks * args.rows / w:8.1f} texts/s")
    print(f"  writer / plain        {p / w:.3f}   (goal >= 0.8)", flush=True)

if __name__ == "__main__":
    main()
