"""`stcstore report`: what a fitted classifier learned, and where in the model, as one self-contained HTML
page, a JSON file and a neuron table.

Everything comes from data already written: the classifier directory, the fit's `probes` and `aggregates`
tables, the store's per-neuron statistics and, for the few top neurons drawn as histograms, their stored
values (no model is loaded). The figures follow the STC paper: layer-wise probes against the cross-layer
aggregate (its Figure 2), the (pooling, η, L_temp) grid (Figure 3), and the neurons the classifier kept,
with how they separate the labels (section 5.3, Figure 4a).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.version import __version__
from ..classifier.classifier import Classifier
from ..classifier.classifier import load_classifier
from ..core.atomic import check_output_dir, write_dir
from ..core.console import eprint
from ..core.errors import StcError
from ..core.schemas import REPORT_NEURONS
from ..store.sql import StoreSQL, sql_dir
from ..store.store import Store, neuron_picks
from .config import ReportConfig, ReportResult
from .page import page


def _sql(name: str) -> str:
    return (sql_dir() / "report" / f"{name}.sql").read_text()


def neuron_rows(clf: Classifier) -> list[dict[str, Any]]:
    """One row per classifier column: its neuron, weights (on standardised values) and share of ‖w‖² (a
    consolidation head: share of its frozen first-layer weights, with no weights or direction)."""
    classes = [str(c) for c in clf.classes_]
    energy, coef = clf.column_importance()  # [n_columns], [K, n_columns] or None
    total = float(energy.sum()) or 1.0
    rows, col = [], 0
    for g in clf.groups:
        for n in g.neurons:
            w = coef[:, col] if coef is not None else np.zeros(0)
            if coef is None:
                toward = None
            elif not classes:  # a regression target
                toward = "higher" if w[0] > 0 else "lower"  # the value it pushes the prediction toward
            else:
                toward = (classes[1] if w[0] > 0 else classes[0]) if coef.shape[0] == 1 else classes[int(np.argmax(w))]
            rows.append({"kind": g.kind, "pooling": g.pooling, "layer": g.layer, "neuron": int(n), "column": col,
                         "importance": float(energy[col]) / total, "weights": [float(v) for v in w],
                         "toward": toward if float(energy[col]) > 0 else None})
            col += 1
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["importance"], i))
    for r, i in enumerate(order, 1):
        rows[i]["rank"] = r
    return [rows[i] for i in order]


def _collect(db: StoreSQL, clf: Classifier, neurons: list[dict[str, Any]], split: str) -> dict[str, Any]:
    m = clf.manifest
    dataset, fs_id, fit_id = m.features.dataset, m.features.feature_set, m.fit_id
    probes = db.run(_sql("probes"), {"dataset": dataset, "fit_id": fit_id}).rows
    aggs = db.run(_sql("aggregates"), {"dataset": dataset, "fit_id": fit_id}).rows
    if not probes or not aggs:
        raise StcError(f"store {db.store.root} has no tables of fit {fit_id} on dataset {dataset!r}, which "
                       f"classifier {clf.path} comes from; give the store it was fitted in (or re-run "
                       f"`stcstore fit` there)")
    keys = pa.table({"kind": [r["kind"] for r in neurons], "pooling": [r["pooling"] for r in neurons],
                     "layer": pa.array([r["layer"] for r in neurons], pa.int32()),
                     "neuron": pa.array([r["neuron"] for r in neurons], pa.int32())})
    db.con.register("_report_neurons", keys)
    params = {"dataset": dataset, "feature_set": fs_id, "split": split}
    stats = db.run(_sql("neuron_labels"), params).rows
    gaps = db.run(_sql("neuron_gaps"), params).rows
    preds = db.run(_sql("predictions"), {"fingerprint": clf.fingerprint}).rows
    return {"probes": probes, "aggregates": aggs, "stats": stats, "gaps": gaps, "predictions": preds}


def _attach_stats(neurons: list[dict[str, Any]], stats: list[dict], gaps: list[dict]) -> None:
    key = lambda r: (r["kind"], r["pooling"], int(r["layer"]), int(r["neuron"]))  # noqa: E731
    by_label: dict[tuple, list[dict]] = {}
    for s in stats:
        by_label.setdefault(key(s), []).append({"label": s["label"], "count": int(s["count"]),
                                                "mean": float(s["mean"]),
                                                "std": None if s["std"] is None else float(s["std"])})
    effect = {key(g): g["effect_size"] for g in gaps}
    for r in neurons:
        r["label_stats"] = by_label.get(key(r), [])
        e = effect.get(key(r))
        r["effect_size"] = None if e is None else float(e)


HIST_BINS = 24


def _histograms(store: Store, clf: Classifier, neurons: list[dict[str, Any]], split: str, k: int
                ) -> list[dict[str, Any]]:
    """Per-label distributions of the top-k neurons' stored values in one split (STC paper, Figure 4a):
    shared bin edges over the 0.5-99.5 percentile range (outliers land in the end bins), and per label the
    fraction of its texts in each bin."""
    top = neurons[:k]
    if not top:
        return []
    f = clf.manifest.features
    fs = store.feature_set(f.dataset, f.feature_set)
    blocks: dict[tuple[str, str, int], list[int]] = {}  # one pick per block: gather reads each block once
    for r in top:
        blocks.setdefault((r["kind"], r["pooling"], r["layer"]), []).append(r["neuron"])
    _, X, y = store.gather_split(fs, neuron_picks(fs, [(*b, ns) for b, ns in blocks.items()]), split)
    col, pos = {}, 0
    for b, ns in blocks.items():
        col.update({(*b, n): pos + i for i, n in enumerate(ns)})
        pos += len(ns)
    labelled = np.array([v is not None for v in y], dtype=bool)
    X, y = X[labelled], y[labelled]
    if len(y) == 0:
        return []
    labels = sorted({str(v) for v in y}, key=lambda s: (len(s), s))
    out = []
    for r in top:
        x = X[:, col[(r["kind"], r["pooling"], r["layer"], r["neuron"])]].astype(np.float64)
        lo, hi = np.percentile(x, [0.5, 99.5])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, HIST_BINS + 1)
        fractions = {}
        for lab in labels:
            v = np.clip(x[y == lab], lo, hi)
            fractions[lab] = (np.histogram(v, edges)[0] / max(len(v), 1)).tolist()
        out.append({"rank": r["rank"], "kind": r["kind"], "pooling": r["pooling"], "layer": r["layer"],
                    "neuron": r["neuron"], "toward": r["toward"], "edges": edges.tolist(), "fractions": fractions})
    return out


def _layers(clf: Classifier, neurons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    model = clf.manifest.model
    width = {"hidden": model.hidden_size, "ffn": model.ffn_size}
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in neurons:
        k = (r["kind"], r["pooling"], r["layer"])
        d = out.setdefault(k, {"kind": r["kind"], "pooling": r["pooling"], "layer": r["layer"],
                               "width": width.get(r["kind"]), "neurons": 0, "importance": 0.0})
        d["neurons"] += 1
        d["importance"] += r["importance"]
    return [out[k] for k in sorted(out)]


def regression_points(store: Store, clf: Classifier) -> list[dict[str, Any]]:
    """A regression classifier's predicted and true values on the fit's validation and test splits (from the
    stored features, as the fit scored them): one entry per split with rows."""
    if not clf.is_regression:
        return []
    cfg = clf.manifest.fit_config
    fs = store.feature_set(clf.manifest.features.dataset, clf.manifest.features.feature_set)
    picks = neuron_picks(fs, [(g.kind, g.pooling, g.layer, g.neurons) for g in clf.groups])
    out = []
    for split in (cfg.get("val_split", "validation"), cfg.get("test_split", "test")):
        ids, X, y = store.gather_split(fs, picks, split)
        keep = np.array([v is not None for v in y], dtype=bool)
        if not keep.any():
            continue
        pred = clf.predict_features(X[keep])
        true = np.array([float(v) for v in y[keep]])
        out.append({"split": split, "ids": [str(i) for i in ids[keep]], "true": true.tolist(),
                    "predicted": pred.tolist(), "residual": (true - pred).tolist()})
    return out


def _summary(clf: Classifier, data: dict[str, Any], split: str) -> dict[str, Any]:
    m = clf.manifest
    return {"model": m.model.name, "dataset": m.features.dataset,
            "what": (m.metrics or {})["stc"]["what"], "neurons": clf.n_features,
            "probes": len(data["probes"]), "aggregates": len(data["aggregates"]), "stats_split": split,
            "predictions": sum(int(p["texts"]) for p in data["predictions"])}


# ---------------------------------------------------------------------------------------------- entry


REPORT_FILES = ("report.html", "report.json", "neurons.parquet")


def is_report_dir(path: Path) -> bool:
    """Whether a directory holds a report and nothing else (what `--force` may replace)."""
    names = {p.name for p in path.iterdir()}
    return "report.json" in names and names <= set(REPORT_FILES)


def report(cfg: ReportConfig) -> ReportResult:
    """Write OUT/report.html, OUT/report.json and OUT/neurons.parquet for one classifier of one store."""
    t0 = time.perf_counter()
    clf = load_classifier(cfg.classifier)
    check_output_dir(Path(cfg.out), cfg.force, "--out", "report", is_report_dir,
                     reads=(("classifier", cfg.classifier),))
    m = clf.manifest
    if m.fit_id is None or m.metrics is None:
        raise StcError(f"classifier {cfg.classifier} has no record of the fit that made it (fit, metrics); a report "
                       f"needs a classifier written by `stcstore fit`")
    split = cfg.split or m.fit_config.get("train_split", "train")
    store = Store(cfg.store)
    store.require()
    store.require_dataset(m.features.dataset)  # the classifier was fitted in another store
    if cfg.split is not None:
        have = sorted(set(store.texts(m.features.dataset, columns=["split"]).column("split").to_pylist()))
        if split not in have:
            raise StcError(f"--split {split!r}: dataset {m.features.dataset!r} has splits "
                           f"{', '.join(have) or 'none'}")
    neurons = neuron_rows(clf)
    messages = []
    with StoreSQL(store) as db:
        data = _collect(db, clf, neurons, split)
    _attach_stats(neurons, data["stats"], data["gaps"])
    hists = _histograms(store, clf, neurons, split, cfg.histograms)
    if not data["stats"]:
        messages.append(f"no neuron statistics for split {split!r} of feature set {m.features.feature_set}; "
                        f"the per-label columns are empty")
    layers = _layers(clf, neurons)
    data["regression"] = regression_points(store, clf)
    summary = _summary(clf, data, split)
    doc = {"stcstore_version": __version__, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "classifier": {"name": clf.name, "path": str(clf.path), "fingerprint": clf.fingerprint,
                          "model": dict(m.model), "features": m.to_dict()["features"], "fit_id": m.fit_id,
                          "metric": m.fit_config["metric"], "kind": m.kind, "pooling": m.pooling,
                          "eta": m.eta, "l_temp": m.l_temp, "blocks_run": m.blocks_run,
                          "neurons": clf.n_features, "classes": [str(c) for c in clf.classes_]},
           "results": m.metrics, "stats_split": split, "probes": data["probes"],
           "aggregates": data["aggregates"], "layers": layers, "top_neurons": neurons[:cfg.top], "histograms": hists,
           "predictions": data["predictions"], "regression": data["regression"]}
    table = pa.Table.from_pylist([{k: r.get(k) for k in REPORT_NEURONS.names} for r in neurons],
                                 schema=REPORT_NEURONS)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    files = {"report.html": page(clf, data, neurons, layers, hists, split, cfg.top).encode("utf-8"),
             "report.json": (json.dumps(doc, indent=2, default=str) + "\n").encode("utf-8"),
             "neurons.parquet": sink.getvalue().to_pybytes()}
    out = Path(cfg.out)
    write_dir(out, files, cfg.force, what="report", owned=is_report_dir)
    for msg in messages:
        eprint(msg)
    return ReportResult(out=str(out), files=[str(out / f) for f in files], classifier=clf.name, summary=summary,
                        seconds=time.perf_counter() - t0, messages=messages)
