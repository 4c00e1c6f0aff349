"""The fit's tables in the store: every visited point of the probe paths and every aggregate tried
(STORE/fits/dataset=NAME/fit=ID/{probes,aggregates}.parquet; schemas in core.schemas)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from ..core import schemas
from ..core.atomic import commit_replacing, staging
from ..store.store import FIT_TABLES_KEY, FIT_TABLES_VERSION, FeatureSet, Store

if TYPE_CHECKING:
    from .records import AggState, HeadState, ProbeState


def probe_rows(fit_id: str, fs: FeatureSet, probes: list["ProbeState"]) -> pa.Table:
    rows = []
    for p in probes:
        for r in p.result.rows:
            rows.append({"fit_id": fit_id, "feature_set": fs.id, "kind": p.block.kind,
                         "pooling": p.block.pooling, "layer": p.block.layer, **r,
                         "probe": "slp" if p.slp is not None else "lr"})
    return pa.Table.from_pylist(rows, schema=schemas.PROBES)


def aggregate_rows(fit_id: str, fs: FeatureSet, aggs: list["AggState | HeadState"], chosen: "AggState | HeadState"
                   ) -> pa.Table:
    """One row per aggregate tried: LR aggregates (their chosen strength), and consolidation heads (no
    strength; path_points: the epochs their cross-layer network trained). `chosen` marks the saved one, or
    every member of a saved ensemble."""
    rows = []
    for a in aggs:
        c = a.result.chosen
        head = hasattr(a, "head")
        rows.append({"fit_id": fit_id, "feature_set": fs.id, "kind": a.kind,
                     "pooling": a.pooling, "eta": a.eta, "l_temp": a.l_temp, "n_neurons": a.n_neurons,
                     "n_nonzero": a.n_neurons if head else c.n_nonzero, "lam": None if head else c.lam,
                     "C": None if head else c.C, "aggregator": "consolidation" if head else "lr",
                     **{f"val_{k}": v for k, v in a.result.validation.items()},
                     "train_accuracy": a.result.train.get("accuracy"), "path_points": len(a.result.rows),
                     "seconds": a.result.seconds, "chosen": any(a is c for c in getattr(chosen, "members", [chosen]))})
    return pa.Table.from_pylist(rows, schema=schemas.AGGREGATES)


def write_tables(store: Store, dataset: str, fit_id: str, probes: pa.Table, aggs: pa.Table) -> bool:
    """Commit both tables by one rename. The same fit (same feature set, data and options) has the same id
    and replaces its own earlier tables; returns whether it did."""
    final = store.table_dir("fits", dataset) / f"fit={fit_id}"
    final.parent.mkdir(parents=True, exist_ok=True)
    meta = {FIT_TABLES_KEY: str(FIT_TABLES_VERSION).encode()}
    with staging(final, directory=True) as tmp:
        pq.write_table(probes.replace_schema_metadata(meta), tmp / "probes.parquet")
        pq.write_table(aggs.replace_schema_metadata(meta), tmp / "aggregates.parquet")
        return commit_replacing(tmp, final)
