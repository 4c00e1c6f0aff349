"""How many train rows a per-layer probe needs: fit time and validation accuracy of one probe per block on
seeded, stratified samples of train, against all rows, in the same run (chooses `fit --probe-rows`).

    python bench/probe_rows.py --store ST --dataset D [--model default] [--blocks ffn.mean.3]
                               [--rows 5000,10000,20000,40000]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from stcstore import Store  # noqa: E402
from stcstore.core.names import FeatureBlock  # noqa: E402
from stcstore.fit import FitConfig  # noqa: E402
from stcstore.fit.probe import PathConfig, apply_standardization, fit_path, standardize_  # noqa: E402
from stcstore.fit.splits import plan_splits, stratified_sample  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--blocks", default="ffn.mean.3")
    ap.add_argument("--rows", default="5000,10000,20000,40000")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    store = Store(args.store)
    fs = store.feature_set(args.dataset, args.model)
    splits = plan_splits(store, fs, FitConfig(dataset=args.dataset, model=args.model))
    ytr, yva = splits.y["train"], splits.y["validation"]
    k = len(splits.classes)
    print(f"train {len(ytr)}, validation {len(yva)}, {k} classes")
    print(f"{'block':16s} {'rows':>7s} {'seconds':>8s} {'val acc':>8s} {'neurons':>8s}")
    for b in (FeatureBlock.parse(x) for x in args.blocks.split(",")):
        for n in [int(r) for r in args.rows.split(",")] + [len(ytr)]:
            plan, y = (splits.plans["train"], ytr) if n >= len(ytr) else \
                stratified_sample(splits.plans["train"], ytr, n, seed=0)
            Xtr = store.gather(fs, [(b.column, None)], plan)[1]
            mean, scale = standardize_(Xtr)
            Xva = apply_standardization(store.gather(fs, [(b.column, None)], splits.plans["validation"])[1],
                                        mean, scale)
            t0 = time.perf_counter()
            res = fit_path(Xtr, y, Xva, yva, k, "accuracy", PathConfig())
            print(f"{b.column:16s} {len(y):7d} {time.perf_counter() - t0:8.2f} {res.validation['accuracy']:8.4f} "
                  f"{res.chosen.n_nonzero:8d}", flush=True)


if __name__ == "__main__":
    main()
