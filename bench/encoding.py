"""Compact encodings: bytes per text and STC's validation score of `extract --dtype int8` against float16, on
the same texts, in the same run.

For each labelled dataset folder (train / validation / test Parquet files, as in ../shared/datasets), the
texts are ingested into a fresh store, extracted twice with the default MiniLM (float16, then int8) and
fitted twice with default options. Prints per dataset: bytes per text of each feature set and their ratio
(goal <= 0.5), extract seconds, and STC's validation and test scores of each fit (goal: int8's validation
within 0.3 points of float16's). `--dtypes float16,int8,float32` also fits the unrounded float32 values: how far
float16's own rounding moves the fit (the noise floor that int8's difference is read against).

    python bench/encoding.py ../shared/datasets/tweeteval-irony ../shared/datasets/tweeteval-emotion
    python bench/encoding.py ../shared/datasets/sst2 --train-rows 6000 --validation-rows 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow.parquet as pq  # noqa: E402

from stcstore.features import ExtractConfig, extract  # noqa: E402
from stcstore.fit import FitConfig, fit  # noqa: E402
from stcstore.ingest import IngestConfig, ingest  # noqa: E402
from stcstore.store.featureset import FeatureSet  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("datasets", nargs="+", help="dataset folders holding train/validation/test .parquet")
ap.add_argument("--train-rows", type=int, default=None, help="first N train rows (after a seeded shuffle)")
ap.add_argument("--validation-rows", type=int, default=None, help="N rows of validation; with --train-rows and "
                "no more validation rows, the rest of the shuffled train")
ap.add_argument("--threads", type=int, default=None)
ap.add_argument("--dtypes", default="float16,int8", help="stored dtypes to compare, the first the reference "
                "[float16,int8]; add float32 for float16's own rounding")
ap.add_argument("--splits", type=int, default=1, help="also N-1 other train/validation splits of the same texts "
                "(seeded), to see the spread of the difference")


def split_files(folder: Path, work: Path, train_rows: int | None, val_rows: int | None, seed: int = 0) -> list[Path]:
    """The dataset's split files, train (and validation) cut to the given sizes (seeded shuffle of train).
    seed > 0: train and validation pooled and split again at the same sizes (another split of the same texts)."""
    import numpy as np
    import pyarrow as pa

    train = pq.read_table(folder / "train.parquet")
    val = pq.read_table(folder / "validation.parquet") if (folder / "validation.parquet").exists() else None
    if train_rows:
        order = np.random.default_rng(0).permutation(train.num_rows)
        rest = train.take(order[train_rows:])
        train = train.take(order[:train_rows])
        if val_rows and (val is None or val.num_rows < val_rows):
            val = rest.slice(0, val_rows)
    if val is not None and val_rows:
        val = val.slice(0, val_rows)
    if seed and val is not None:
        pool = pa.concat_tables([train, val.cast(train.schema)])
        order = np.random.default_rng(seed).permutation(pool.num_rows)
        train, val = pool.take(order[:train.num_rows]), pool.take(order[train.num_rows:])
    out = []
    for name, table in (("train", train), ("validation", val)):
        if table is not None:
            path = work / f"{name}.parquet"
            pq.write_table(table, path)
            out.append(path)
    if (folder / "test.parquet").exists():
        out.append(folder / "test.parquet")
    return out


def bytes_per_text(fs: FeatureSet) -> float:
    """Bytes per text of the values and ids (features.arrow, and int8.arrow's scales), not the statistics."""
    from stcstore.store.chunks import chunk_rows

    n = sum(chunk_rows(c) for c in fs.chunks())
    size = sum(p.stat().st_size for c in fs.chunks() for p in c.iterdir() if p.name != "stats.parquet")
    return size / n


def main() -> None:
    args = ap.parse_args()
    dtypes = args.dtypes.split(",")
    ref = dtypes[0]
    rows = []
    for folder, seed in ((Path(f), k) for f in args.datasets for k in range(args.splits)):
        work = Path(tempfile.mkdtemp(prefix="stcstore-encoding-"))
        try:
            st = str(work / "store")
            files = split_files(folder, work, args.train_rows, args.validation_rows, seed)
            ingest(IngestConfig("d", store=st, sources=tuple(str(f) for f in files)))
            row = {"dataset": folder.name + (f" (split {seed})" if seed else "")}
            for dtype in dtypes:
                t0 = time.perf_counter()
                ext = extract(ExtractConfig("d", dtype=dtype, threads=args.threads, store=st))
                row[f"{dtype} extract s"] = time.perf_counter() - t0
                fs = FeatureSet.read(work / "store" / "features" / "dataset=d" / f"fs={ext.feature_set}")
                row[f"{dtype} bytes"] = bytes_per_text(fs)
                res = fit(FitConfig("d", model=ext.feature_set, threads=args.threads, store=st))
                row[f"{dtype} val"] = res.stc["validation"][res.metric]
                row[f"{dtype} test"] = res.stc["test"][res.metric]
            rows.append(row)
            print(f"{row['dataset']}: reference {ref}: {row[ref + ' bytes']:,.0f} bytes per text, STC validation "
                  f"{row[ref + ' val']:.4f}, test {row[ref + ' test']:.4f}, extract {row[ref + ' extract s']:.1f} s",
                  flush=True)
            for dtype in dtypes[1:]:
                goal = ", goal <= 0.5" if dtype == "int8" else ""
                print(f"  {dtype}: {row[dtype + ' bytes']:,.0f} bytes per text (ratio {row[dtype + ' bytes'] / row[ref + ' bytes']:.3f}"
                      f"{goal}), extract {row[dtype + ' extract s']:.1f} s; STC validation {row[dtype + ' val']:.4f} "
                      f"(diff {100 * (row[dtype + ' val'] - row[ref + ' val']):+.2f} points"
                      f"{', goal within 0.3' if dtype == 'int8' else ''}), test {row[dtype + ' test']:.4f} (diff "
                      f"{100 * (row[dtype + ' test'] - row[ref + ' test']):+.2f})", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.splits > 1:
        import statistics

        for name in args.datasets:
            mine = [r for r in rows if r["dataset"].startswith(Path(name).name)]
            for dtype in dtypes[1:]:
                diffs = [100 * (r[dtype + " val"] - r[ref + " val"]) for r in mine]
                tests = [100 * (r[dtype + " test"] - r[ref + " test"]) for r in mine]
                print(f"{Path(name).name}: {dtype} - {ref} over {len(diffs)} splits, validation "
                      f"{statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs):.2f} points (mean ± sd), test "
                      f"{statistics.mean(tests):+.2f} ± {statistics.stdev(tests):.2f}")

if __name__ == "__main__":
    main()
