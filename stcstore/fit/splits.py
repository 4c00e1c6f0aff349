"""Train / validation / test row plans of a fit: which stored rows each split uses, and their class indices.

Validation is carved from train (seeded, stratified) only when the dataset has none; the data fingerprint
names exactly the rows and labels used, so a fit id changes when they do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..core.errors import StcError
from ..core.fingerprint import Fingerprint
from ..store.store import FeatureSet, Store

if TYPE_CHECKING:
    from .stage import FitConfig


@dataclass
class Splits:
    """Row plans (per chunk, row indices) and class indices for train / validation / test."""

    classes: list[str]
    plans: dict[str, list[np.ndarray]]
    y: dict[str, np.ndarray]  # class index per planned row, -1 for a label unseen in train
    carved_validation: bool
    unlabeled: dict[str, int]
    data_fingerprint: str


def _natural(labels: list[str]) -> list[str]:
    try:
        return sorted(labels, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(labels)


def plan_splits(store: Store, fs: FeatureSet, cfg: "FitConfig") -> Splits:
    metas = store.chunk_meta(fs)
    split_col = [m.column("split").to_numpy(zero_copy_only=False) for m in metas]
    label_col = [np.asarray(m.column("label").to_pylist(), dtype=object) for m in metas]
    has_label = [np.array([v is not None for v in lab], dtype=bool) for lab in label_col]
    unlabeled: dict[str, int] = {}
    plans: dict[str, list[np.ndarray]] = {}
    for name in (cfg.train_split, cfg.val_split, cfg.test_split):
        rows = [np.flatnonzero((s == name) & h) for s, h in zip(split_col, has_label)]
        unlabeled[name] = int(sum(((s == name) & ~h).sum() for s, h in zip(split_col, has_label)))
        plans[name] = rows
    train_labels = np.concatenate([lab[r] for lab, r in zip(label_col, plans[cfg.train_split])]) \
        if plans[cfg.train_split] else np.array([], dtype=object)
    classes = _natural(sorted(set(train_labels.tolist())))
    if len(classes) < 2:
        raise StcError(f"split {cfg.train_split!r} of dataset {cfg.dataset!r} has {len(train_labels)} labelled rows "
                       f"and {len(classes)} class(es); fitting needs labelled rows of at least two classes "
                       f"(ingest with --label-field, and --split or a split column)")
    carved = sum(len(r) for r in plans[cfg.val_split]) == 0
    if carved:  # seeded, stratified carve of train, recorded in the classifier
        rng = np.random.default_rng(cfg.seed)
        chunk_of = np.concatenate([np.full(len(r), i) for i, r in enumerate(plans[cfg.train_split])])
        row_of = np.concatenate(plans[cfg.train_split])
        to_val = np.zeros(len(row_of), dtype=bool)
        for c in classes:
            members = np.flatnonzero(train_labels == c)
            n_val = int(round(len(members) * cfg.val_fraction))
            to_val[rng.permutation(members)[:n_val]] = True
        plans[cfg.val_split] = [np.sort(row_of[to_val & (chunk_of == i)]) for i in range(len(metas))]
        plans[cfg.train_split] = [np.sort(row_of[~to_val & (chunk_of == i)]) for i in range(len(metas))]
    index = {c: i for i, c in enumerate(classes)}
    y = {name: np.array([index.get(v, -1) for lab, r in zip(label_col, plan) for v in lab[r]], dtype=np.int64)
         for name, plan in plans.items()}
    for name in (cfg.train_split, cfg.val_split):
        if len(y[name]) == 0:
            raise StcError(f"split {name!r} of dataset {cfg.dataset!r} has no labelled rows")
    h = Fingerprint(seed=fs.id)
    for name in (cfg.train_split, cfg.val_split, cfg.test_split):
        ids = [v for m, r in zip(metas, plans[name]) for v in m.column("id").take(pa.array(r)).to_pylist()]
        h.update([name, ids, y[name].tolist()])
    return Splits(classes, plans, y, carved, unlabeled, h.hexdigest())


def stratified_sample(plan: list[np.ndarray], y: np.ndarray, n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """A seeded sample of about `n` rows of a split, each class in its own proportion (at least one row of
    each), in store order. plan: per chunk, row indices; y: [rows] class indices in plan order."""
    rng = np.random.default_rng(seed)
    total = len(y)
    keep = np.zeros(total, dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = max(1, int(round(len(members) * n / total)))
        keep[rng.permutation(members)[:k]] = True
    bounds = np.cumsum([0] + [len(r) for r in plan])
    sub = [rows[keep[a:b]] for rows, a, b in zip(plan, bounds[:-1], bounds[1:])]
    return sub, y[keep]
