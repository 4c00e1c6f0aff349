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
from ..core.names import MAX_TARGET, labels_look_like_values, parse_number
from ..store.store import FeatureSet, Store

if TYPE_CHECKING:
    from .config import FitConfig


@dataclass
class Splits:
    """Row plans (per chunk, row indices) and class indices for train / validation / test."""

    classes: list[str]  # empty for a regression target
    plans: dict[str, list[np.ndarray]]
    y: dict[str, np.ndarray]  # class index per planned row, -1 for a label unseen in train (regression: values)
    carved_validation: bool
    unlabeled: dict[str, int]
    data_fingerprint: str


def _natural(labels: list[str]) -> list[str]:
    """Classes in numeric order when every label is a number (core.names.parse_number), else as strings."""
    values = [parse_number(s) for s in labels]
    if any(v is None for v in values):
        return sorted(labels)
    return [s for _, s in sorted(zip(values, labels))]


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
    regression = _task(cfg, train_labels) == "regression"
    classes = [] if regression else _natural(sorted(set(train_labels.tolist())))
    if not regression and len(classes) < 2:
        raise StcError(f"split {cfg.train_split!r} of dataset {cfg.dataset!r} has {len(train_labels)} labelled rows "
                       f"and {len(classes)} class(es); fitting needs labelled rows of at least two classes "
                       f"(ingest with --label-field, and --split or a split column)")
    carved = sum(len(r) for r in plans[cfg.val_split]) == 0
    if carved:  # seeded, stratified carve of train, recorded in the classifier
        rng = np.random.default_rng(cfg.seed)
        chunk_of = np.concatenate([np.full(len(r), i) for i, r in enumerate(plans[cfg.train_split])])
        row_of = np.concatenate(plans[cfg.train_split])
        to_val = np.zeros(len(row_of), dtype=bool)
        strata = _strata(_values(train_labels, cfg.train_split, cfg)) if regression else train_labels
        for c in (np.unique(strata) if regression else classes):  # classes in their order: the seed's draws
            members = np.flatnonzero(strata == c)
            n_val = int(round(len(members) * cfg.val_fraction))
            to_val[rng.permutation(members)[:n_val]] = True
        plans[cfg.val_split] = [np.sort(row_of[to_val & (chunk_of == i)]) for i in range(len(metas))]
        plans[cfg.train_split] = [np.sort(row_of[~to_val & (chunk_of == i)]) for i in range(len(metas))]
    if regression:
        y = {name: _values(np.array([v for lab, r in zip(label_col, plan) for v in lab[r]], dtype=object), name, cfg,
                           [m.column("id").take(pa.array(r)).to_pylist() for m, r in zip(metas, plan)])
             for name, plan in plans.items()}
    else:
        index = {c: i for i, c in enumerate(classes)}
        y = {name: np.array([index.get(v, -1) for lab, r in zip(label_col, plan) for v in lab[r]], dtype=np.int64)
             for name, plan in plans.items()}
    for name in (cfg.train_split, cfg.val_split):
        if len(y[name]) == 0:
            raise StcError(f"split {name!r} of dataset {cfg.dataset!r} has no labelled rows")
        if regression:
            _one_value(y[name], name, cfg)
    h = Fingerprint(seed=fs.id)
    for name in (cfg.train_split, cfg.val_split, cfg.test_split):
        ids = [v for m, r in zip(metas, plans[name]) for v in m.column("id").take(pa.array(r)).to_pylist()]
        h.update([name, ids, y[name].tolist()])
    return Splits(classes, plans, y, carved, unlabeled, h.hexdigest())


def _task(cfg: "FitConfig", train_labels: np.ndarray) -> str:
    """The fit's task: --task, else classification, refused for labels that look like a regression target."""
    if cfg.task is not None:
        return cfg.task
    distinct = set(train_labels.tolist())
    if labels_look_like_values(distinct):
        raise StcError(f"the labels of dataset {cfg.dataset!r} are numbers with {len(distinct)} distinct values in "
                       f"{cfg.train_split!r}: that looks like a regression target. Pass --task regression to fit "
                       f"values (R², MAE, Pearson, Spearman), or --task classification to treat each value as a class")
    return "classification"


def _values(labels: np.ndarray, split: str, cfg: "FitConfig", ids: list[list[str]] | None = None) -> np.ndarray:
    """Stored labels of a regression target -> float64 values; refuses labels that are not numbers
    (core.names.parse_number) or lie beyond ±MAX_TARGET, naming the rows."""
    out = np.empty(len(labels))
    bad = []
    for i, v in enumerate(labels.tolist()):
        x = parse_number(v)
        out[i] = np.nan if x is None else x
        if x is None or abs(x) > MAX_TARGET:
            bad.append(i)
    if bad:
        flat = [x for chunk in ids for x in chunk] if ids is not None else None
        named = ", ".join(f"id {flat[i]!r} ({labels[i]!r})" if flat else f"row {i} ({labels[i]!r})" for i in bad[:5])
        raise StcError(f"--task regression: {len(bad)} labelled rows of split {split!r} of dataset {cfg.dataset!r} have "
                       f"a label that is not a number within ±{MAX_TARGET:g}: {named}{' ...' if len(bad) > 5 else ''}. "
                       f"A number is ASCII decimal (\"3\", \"-0.25\", \"1e-3\"; not \"1_0\", \"nan\" or non-ASCII "
                       f"digits). Fix or remove them (re-ingest) and fit again")
    return out


def _one_value(y: np.ndarray, split: str, cfg: "FitConfig") -> None:
    """Refuse a train or validation split whose targets are all equal: nothing can be learnt or chosen on it
    (R² is undefined, every candidate would score alike)."""
    if len(y) and float(np.ptp(y)) == 0.0:
        raise StcError(f"--task regression: every one of the {len(y)} labelled rows of split {split!r} of dataset "
                       f"{cfg.dataset!r} has the value {float(y[0]):g}; fitting needs targets that vary in the train "
                       f"and validation splits")


def _strata(y: np.ndarray, bins: int = 10) -> np.ndarray:
    """Strata for stratified sampling: class indices as they are; values by quantile bin."""
    if y.dtype.kind != "f":
        return y
    edges = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, y, side="right")


def stratified_sample(plan: list[np.ndarray], y: np.ndarray, n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """A seeded sample of about `n` rows of a split, each class (regression: each decile of the values) in its
    own proportion (at least one row of each), in store order. plan: per chunk, row indices; y: [rows] class
    indices (or values) in plan order."""
    rng = np.random.default_rng(seed)
    total = len(y)
    keep = np.zeros(total, dtype=bool)
    strata = _strata(y)
    for c in np.unique(strata):
        members = np.flatnonzero(strata == c)
        k = max(1, int(round(len(members) * n / total)))
        keep[rng.permutation(members)[:k]] = True
    bounds = np.cumsum([0] + [len(r) for r in plan])
    sub = [rows[keep[a:b]] for rows, a, b in zip(plan, bounds[:-1], bounds[1:])]
    return sub, y[keep]
