"""Benchmark: stcstore's probe stage vs the authors' recipe, on the same blocks of one store.

Authors' recipe (their code, per probe): scikit-learn LogisticRegression(penalty="l1", solver="saga"),
C in {0.1, 0.2, 1, 10, 100}, 64 epochs (max_iter=64), the best C per probe on validation.
stcstore: `probe.fit_path` (OWL-QN on the active set along a lam path, chosen on validation).
Both get the same standardised train/validation matrices; reading the store is not timed.

    python bench/probes.py                                    # the demo store (built if missing)
    python bench/probes.py --store ST --dataset sst2 --blocks ffn.mean.3,hidden.single.6 --threads 2

Prints per block and in total: seconds of each, stcstore ÷ authors' time ratio (the speed-up is its
inverse), and both validation accuracies. Goal: >= 10x faster with equal or better validation accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from stcstore.core.names import FeatureBlock  # noqa: E402
from stcstore.fit import FitConfig
from stcstore.fit.metrics import scores  # noqa: E402
from stcstore.fit.probe import PathConfig, apply_standardization, fit_path, standardize_  # noqa: E402
from stcstore.fit.splits import plan_splits  # noqa: E402
from stcstore.store import Store  # noqa: E402

AUTHORS_C = (0.1, 0.2, 1.0, 10.0, 100.0)


def authors(Xtr, ytr, Xva, yva, k):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    best = (-1.0, None)
    for C in AUTHORS_C:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(l1_ratio=1.0, solver="saga", C=C, max_iter=64).fit(Xtr, ytr)
        acc = scores(yva, clf.predict(Xva), k)["accuracy"]
        if acc > best[0]:
            best = (acc, C)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="store directory [default: a demo store, built if missing]")
    ap.add_argument("--dataset", default="sst2-sample")
    ap.add_argument("--model", default="default")
    ap.add_argument("--blocks", default="ffn.mean.3,ffn.max.5,hidden.mean.4,hidden.single.6")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    store_path = args.store
    if store_path is None:
        store_path = str(Path(os.environ.get("TMPDIR", "/tmp")) / "stcstore-bench-demo")
        if not (Path(store_path) / "store.json").exists():
            from stcstore.demo import DEMO_DATASET, demo_files
            from stcstore.features import ExtractConfig, extract
            from stcstore.ingest import IngestConfig, ingest

            print(f"building the demo store in {store_path} ...", file=sys.stderr)
            ingest(store_path, demo_files(), IngestConfig(dataset=DEMO_DATASET))
            extract(store_path, ExtractConfig(dataset=DEMO_DATASET))
    store = Store(store_path)
    fs = store.feature_set(args.dataset, args.model)
    cfg = FitConfig(dataset=args.dataset, model=args.model)
    splits = plan_splits(store, fs, cfg)
    k = len(splits.classes)
    ytr, yva = splits.y["train"], splits.y["validation"]
    print(f"store {store_path}, dataset {args.dataset}: train {len(ytr)}, validation {len(yva)}, {k} classes, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'block':18s} {'stcstore s':>10s} {'authors s':>10s} {'ratio':>7s} {'val acc stc':>12s} "
          f"{'val acc authors':>16s}  chosen C (stc / authors)")
    t_ours = t_theirs = 0.0
    wins = 0
    acc_ours = acc_all = 0.0
    blocks = [FeatureBlock.parse(b) for b in args.blocks.split(",")]
    for b in blocks:
        Xtr = store.gather(fs, [(b.column, None)], splits.plans["train"])[1]
        mean, scale = standardize_(Xtr)
        Xva = apply_standardization(store.gather(fs, [(b.column, None)], splits.plans["validation"])[1], mean, scale)
        t0 = time.perf_counter()
        res = fit_path(Xtr, ytr, Xva, yva, k, "accuracy", PathConfig())
        ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc_theirs, c_theirs = authors(Xtr, ytr, Xva, yva, k)
        theirs = time.perf_counter() - t0
        t_ours += ours
        t_theirs += theirs
        wins += res.validation["accuracy"] >= acc_theirs
        acc_ours += res.validation["accuracy"] / len(blocks)
        acc_all += acc_theirs / len(blocks)
        print(f"{b.column:18s} {ours:10.2f} {theirs:10.2f} {ours / theirs:7.3f} {res.validation['accuracy']:12.4f} "
              f"{acc_theirs:16.4f}  {res.chosen.C:.3g} / {c_theirs:g}")
    print(f"{'total':18s} {t_ours:10.2f} {t_theirs:10.2f} {t_ours / t_theirs:7.3f}   "
          f"speed-up {t_theirs / t_ours:.1f}x; stcstore's validation accuracy >= the authors' on {wins}/{len(blocks)} blocks, "
          f"mean {acc_ours:.4f} vs {acc_all:.4f}")


if __name__ == "__main__":
    main()
