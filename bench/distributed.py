"""Distributed extraction benchmark: the same texts extracted locally and on a local Ray cluster with 1 and
2 workers, in the same run, on the same CPUs.

Prints, for each engine, the extraction throughput (texts/s over the chunk loop, and over the whole command
with actor start-up and model loading), the ratio to the local run, Ray's start-up (actors started, models
loaded) and the driver's own work per chunk (reading texts, submitting, committing: the overhead Ray adds
on the driver's side). On a 2-core machine Ray cannot be faster than a local run that already uses both
cores; the point is the overhead (goal: ≥ 0.85 of local throughput).

    python bench/distributed.py [--texts 3000] [--chunk-rows 250] [--model default] [--cpus 2]

Engines: local (--threads = --cpus), Ray with 1 worker of --cpus CPUs, Ray with --cpus workers of 1 CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract import realistic_texts  # noqa: E402

from stcstore.features.stage import ExtractConfig, extract  # noqa: E402
from stcstore.ingest import IngestConfig, ingest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--chunk-rows", type=int, default=250)
    ap.add_argument("--model", default="default")
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    try:
        import ray
    except ImportError:
        sys.exit("needs Ray: pip install 'stcstore[ray]'")
    from stcstore.cluster import RayOptions
    from stcstore.cluster.extract import RayChunkRunner

    tmp = Path(tempfile.mkdtemp(prefix="stcstore-distributed-"))
    texts = realistic_texts(args.texts)
    src = tmp / "texts.parquet"
    pq.write_table(pa.table({"id": [f"t{i}" for i in range(len(texts))], "text": texts,
                             "label": [str(i % 2) for i in range(len(texts))]}), src)
    runs = [("local", None), ("ray, 1 worker", RayOptions(workers=1, cpus_per_worker=args.cpus)),
            (f"ray, {args.cpus} workers", RayOptions(workers=args.cpus, cpus_per_worker=1))]
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, log_to_driver=False, include_dashboard=False, configure_logging=False)
    ray_start = time.perf_counter() - t0
    print(f"{len(texts)} texts, chunks of {args.chunk_rows}, model {args.model}, {args.cpus} CPUs; "
          f"ray.init {ray_start:.1f} s (once)")
    print(f"{'engine':16s} {'texts/s':>8s} {'ratio':>6s} {'whole cmd':>10s} {'ratio':>6s} {'start-up s':>10s} "
          f"{'driver ms/chunk':>15s}")
    base = base_whole = None
    try:
        for name, opts in runs:
            st = tmp / name.replace(" ", "").replace(",", "-")
            ingest(st, [src], IngestConfig("d", split="train"))
            threads = args.cpus if opts is None else opts.worker_threads(None)
            cfg = ExtractConfig("d", model=args.model, chunk_rows=args.chunk_rows, threads=threads)
            runner = None if opts is None else RayChunkRunner(ray, opts, ship_model=False)
            t = time.perf_counter()
            r = extract(st, cfg, runner=runner)
            whole = r.texts_extracted / (time.perf_counter() - t)
            # the chunk loop only: Ray's actor start-up and model loading counted out
            loop = r.texts_extracted / (r.texts_extracted / r.texts_per_s - (runner.startup_seconds if runner else 0))
            base = base or loop
            base_whole = base_whole or whole
            startup = "" if runner is None else f"{runner.startup_seconds:.1f}"
            per_chunk = "" if runner is None else f"{1000 * runner.driver_seconds / max(r.chunks_written, 1):.1f}"
            print(f"{name:16s} {loop:8.1f} {loop / base:6.2f} {whole:10.1f} {whole / base_whole:6.2f} "
                  f"{startup:>10s} {per_chunk:>15s}", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
