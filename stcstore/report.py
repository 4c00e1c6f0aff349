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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .classifier import Classifier, load_classifier
from .errors import StcError
from .fsutil import commit_replacing, eprint, tmp_name
from .query import StoreSQL, sql_dir
from .store import Store, neuron_picks
from .svg import CSS, PALETTE, Series, bar_chart, esc, line_chart

NEURONS_SCHEMA = pa.schema([
    ("rank", pa.int32()), ("kind", pa.string()), ("pooling", pa.string()), ("layer", pa.int32()),
    ("neuron", pa.int32()), ("column", pa.int32()), ("importance", pa.float64()), ("weights", pa.list_(pa.float64())),
    ("toward", pa.string()), ("effect_size", pa.float64()),
    ("label_stats", pa.list_(pa.struct([("label", pa.string()), ("count", pa.int64()), ("mean", pa.float64()),
                                         ("std", pa.float64())]))),
])


@dataclass
class ReportConfig:
    store: str
    classifier: str
    out: str
    top: int = 30          # neurons listed in the page and the JSON (neurons.parquet has all of them)
    histograms: int = 8    # top neurons whose per-label value distributions are drawn (read from the store)
    split: str | None = None  # split of the neuron statistics [default: the fit's train split]
    force: bool = False    # replace an existing, non-empty out directory

    def __post_init__(self) -> None:
        if self.top < 1:
            raise StcError(f"--top {self.top}: give at least 1")
        if self.histograms < 0:
            raise StcError(f"--histograms {self.histograms}: give 0 or more")


@dataclass
class ReportResult:
    out: str
    files: list[str]
    classifier: str
    summary: dict[str, Any]
    seconds: float
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        s = self.summary
        lines = [f"report of classifier {self.classifier}: {s['model']} on {s['dataset']}, "
                 f"{s['what']}, {s['neurons']} neurons",
                 f"  probes {s['probes']}, aggregates {s['aggregates']}, neuron statistics from split "
                 f"{s['stats_split']!r}, predictions {s['predictions']}"]
        lines += [f"  note: {m}" for m in self.messages]
        lines += [f"  wrote {f}" for f in self.files]
        lines.append(f"open {Path(self.out) / 'report.html'} in a browser ({self.seconds:.1f}s)")
        return "\n".join(lines)


def _sql(name: str) -> str:
    return (sql_dir() / "report" / f"{name}.sql").read_text()


def _neuron_rows(clf: Classifier) -> list[dict[str, Any]]:
    """One row per classifier column: its neuron, weights (on standardised values) and share of ‖w‖²."""
    classes = [str(c) for c in clf.classes_]
    coef = clf.coef_  # [K, n_columns]
    energy = (coef ** 2).sum(axis=0)
    total = float(energy.sum()) or 1.0
    rows, col = [], 0
    for g in clf.groups:
        for n in g.neurons:
            w = coef[:, col]
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
    dataset, fs_id, fit_id = m["features"]["dataset"], m["features"]["feature_set"], m["fit"]["fit_id"]
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
    m = clf.manifest
    fs = store.feature_set(m["features"]["dataset"], m["features"]["feature_set"])
    blocks: dict[tuple[str, str, int], list[int]] = {}  # one pick per block: gather reads each block once
    for r in top:
        blocks.setdefault((r["kind"], r["pooling"], r["layer"]), []).append(r["neuron"])
    _, X, y = store._gather(fs, split, neuron_picks(fs, [(*b, ns) for b, ns in blocks.items()]))
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
    model = clf.manifest["model"]
    width = {"hidden": model.get("hidden_size"), "ffn": model.get("ffn_size")}
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in neurons:
        k = (r["kind"], r["pooling"], r["layer"])
        d = out.setdefault(k, {"kind": r["kind"], "pooling": r["pooling"], "layer": r["layer"],
                               "width": width.get(r["kind"]), "neurons": 0, "importance": 0.0})
        d["neurons"] += 1
        d["importance"] += r["importance"]
    return [out[k] for k in sorted(out)]


def _summary(clf: Classifier, data: dict[str, Any], split: str) -> dict[str, Any]:
    m = clf.manifest
    return {"model": m["model"].get("model"), "dataset": m["features"]["dataset"],
            "what": m["metrics"]["stc"]["what"], "neurons": int(clf.coef_.shape[1]),
            "probes": len(data["probes"]), "aggregates": len(data["aggregates"]), "stats_split": split,
            "predictions": sum(int(p["texts"]) for p in data["predictions"])}


# ---------------------------------------------------------------------------------------------- page


def _fig_layers(clf: Classifier, data: dict[str, Any], metric: str) -> str:
    """Paper Figure 2: every probe's validation score by layer, and the chosen aggregate by L_temp."""
    m = clf.manifest
    col = f"val_{metric}"
    series: list[Series] = []
    curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for p in data["probes"]:
        curves.setdefault((p["kind"], p["pooling"]), []).append((p["layer"], p[col]))
    for i, ((kind, pooling), pts) in enumerate(sorted(curves.items())):
        chosen = kind == m["kind"] and pooling == m["pooling"]
        series.append(Series(f"probe {kind}.{pooling}", pts, PALETTE[(i + 2) % len(PALETTE)],
                             width=2.0 if chosen else 1.1, marker=2.4 if chosen else 1.6))
    agg = [(a["l_temp"], a[col]) for a in data["aggregates"]
           if a["kind"] == m["kind"] and a["pooling"] == m["pooling"] and a["eta"] == m["eta"]]
    series.append(Series(f"STC {m['kind']}.{m['pooling']} η {m['eta']:g}", agg, PALETTE[0], width=3.0, marker=3.2,
                         titles=[f"aggregate of layers 0..{int(x)}: {y:.4f}" for x, y in agg]))
    rings = [(x, y, f"chosen: L_temp {int(x)}, {y:.4f}") for x, y in agg if x == m["l_temp"]]
    base = m["metrics"]["baseline"]["validation"].get(metric)
    layers = [x for s in series for x, _ in s.points]
    if base is not None and layers:
        series.append(Series(f"baseline {m['metrics']['baseline']['what'].split(' ')[0]}",
                             [(min(layers), base), (max(layers), base)], "#444444", width=1.2, dash="5 4",
                             marker=0))
    return line_chart(series, title=f"Validation {metric} by layer: per-layer probes and the STC aggregate",
                      x_label="layer (probe: that layer alone; STC: layers 0..L_temp aggregated)",
                      y_label=f"validation {metric}", marks=[(m["l_temp"], f"chosen L_temp {m['l_temp']}")],
                      rings=rings)


def _fig_grid(clf: Classifier, data: dict[str, Any], metric: str) -> list[str]:
    """Paper Figure 3 ("what-which-where"): each pooling's validation score by L_temp, one line per η, and
    the number of neurons the chosen pooling aggregates."""
    m = clf.manifest
    col = f"val_{metric}"
    aggs = [a for a in data["aggregates"] if a["kind"] == m["kind"]]
    etas = sorted({a["eta"] for a in aggs})
    colour = {e: PALETTE[i % len(PALETTE)] for i, e in enumerate(etas)}
    lo = min(a[col] for a in aggs)
    hi = max(a[col] for a in aggs)
    pad = (hi - lo) * 0.08 or 0.01
    figs = []
    for pooling in sorted({a["pooling"] for a in aggs}):
        series = []
        for e in etas:
            pts = [a for a in aggs if a["pooling"] == pooling and a["eta"] == e]
            series.append(Series(f"η {e:g}", [(a["l_temp"], a[col]) for a in pts], colour[e],
                                 titles=[f"η {e:g}, L_temp {a['l_temp']}: {a[col]:.4f}, {a['n_neurons']} neurons"
                                         + (" (chosen)" if a["chosen"] else "") for a in pts]))
        rings = [(a["l_temp"], a[col], f"chosen: η {a['eta']:g}, L_temp {a['l_temp']}, {a['n_neurons']} neurons")
                 for a in aggs if a["pooling"] == pooling and a["chosen"]]
        figs.append(line_chart(series, title=f"{m['kind']}.{pooling}: validation {metric} of the aggregate by "
                               "L_temp and η", x_label="L_temp (deepest layer aggregated)",
                               y_label=f"validation {metric}", y_range=(lo - pad, hi + pad), height=280,
                               rings=rings))
    series = [Series(f"η {e:g}", [(a["l_temp"], a["n_neurons"]) for a in aggs
                                  if a["pooling"] == m["pooling"] and a["eta"] == e], colour[e]) for e in etas]
    figs.append(line_chart(series, title=f"{m['kind']}.{m['pooling']}: neurons aggregated by L_temp and η",
                           x_label="L_temp", y_label="neurons", height=260,
                           marks=[(m["l_temp"], "chosen")]))
    return figs


def _fig_neurons(layers: list[dict[str, Any]]) -> str:
    cats = [f"{'h' if d['kind'] == 'hidden' else 'a'}{d['layer']}" + ("" if len({x['pooling'] for x in layers}) == 1 else f".{d['pooling']}")
            for d in layers]
    share = [100 * d["importance"] for d in layers]
    kept = [100 * d["neurons"] / d["width"] if d["width"] else 0.0 for d in layers]
    tips = [[f"{c}: {s:.1f} % of ‖w‖², {d['neurons']} neurons" for c, s, d in zip(cats, share, layers)],
            [f"{c}: {d['neurons']} of {d['width']} neurons ({k:.1f} %)" for c, k, d in zip(cats, kept, layers)]]
    return bar_chart(cats, [("share of ‖w‖² (%)", share, PALETTE[0]),
                            ("neurons kept (%)", kept, PALETTE[2])],
                     title="Where the classifier's weight sits, layer by layer", x_label="layer",
                     y_label="percent", titles=tips)


def _results_table(clf: Classifier) -> str:
    m = clf.manifest["metrics"]
    rows = []
    for key, name in (("baseline", "last-layer single-token baseline"), ("best_probe", "best single-layer probe"),
                      ("stc", "STC aggregate (this classifier)")):
        r = m[key]
        cells = "".join(f"<td>{r[s].get(k, float('nan')):.4f}</td>" for s in ("validation", "test")
                        for k in ("accuracy", "macro_f1"))
        rows.append(f"<tr><td>{esc(name)}</td><td>{esc(r['what'])}</td>{cells}</tr>")
    return ("<table><tr><th></th><th>what</th><th>val accuracy</th><th>val macro-F1</th><th>test accuracy</th>"
            "<th>test macro-F1</th></tr>" + "".join(rows) + "</table>")


def _label_cell(r: dict[str, Any], labels: list[str]) -> str:
    stats = {s["label"]: s for s in r["label_stats"]}
    parts = []
    for lab in labels:
        s = stats.get(lab)
        parts.append(f"{esc(lab)}: –" if s is None else
                     f"{esc(lab)}: {s['mean']:.3g}" + ("" if s["std"] is None else f" ± {s['std']:.2g}"))
    return "<br>".join(parts)


def _neuron_table(neurons: list[dict[str, Any]], classes: list[str], top: int) -> str:
    labels = sorted({s["label"] for r in neurons for s in r["label_stats"]}, key=lambda x: (len(x), x))
    wcols = ["weight"] if len(neurons[0]["weights"]) == 1 else [f"w[{c}]" for c in classes]
    head = ("<tr><th>#</th><th>block</th><th>neuron</th><th>share of ‖w‖²</th>"
            + "".join(f"<th>{esc(c)}</th>" for c in wcols)
            + "<th>toward</th><th>per-label mean ± std</th><th>effect size</th></tr>")
    rows = []
    for r in neurons[:top]:
        es = "–" if r["effect_size"] is None else f"{r['effect_size']:.2f}"
        rows.append(f"<tr><td>{r['rank']}</td><td>{r['kind']}.{r['pooling']}.{r['layer']}</td><td>{r['neuron']}</td>"
                    f"<td>{100 * r['importance']:.2f} %</td>"
                    + "".join(f"<td>{w:+.3f}</td>" for w in r["weights"])
                    + f"<td>{esc(r['toward'] or '–')}</td><td>{_label_cell(r, labels)}</td><td>{es}</td></tr>")
    return "<table>" + head + "".join(rows) + "</table>"


def _fig_histograms(hists: list[dict[str, Any]]) -> str:
    if not hists:
        return ""
    labels = list(hists[0]["fractions"])
    colour = {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(labels)}
    figs = []
    for h in hists:
        mids = [(a + b) / 2 for a, b in zip(h["edges"], h["edges"][1:])]
        series = [Series(f"label {lab}", list(zip(mids, fr)), colour[lab], marker=0) for lab, fr in h["fractions"].items()]
        figs.append(line_chart(series, title=f"#{h['rank']} {h['kind']}.{h['pooling']}.{h['layer']} neuron "
                               f"{h['neuron']} → {h['toward']}", x_label="stored value",
                               y_label="share of label", width=330, height=190, legend=False))
    key = " ".join(f'<span style="color:{colour[lab]}">&#9644; label {esc(lab)}</span>' for lab in labels)
    return f'<p>{key}</p><div class="multiples">{"".join(figs)}</div>'


def _predictions_table(preds: list[dict[str, Any]]) -> str:
    if not preds:
        return ("<p>No predictions of this classifier in the store's <code>predictions</code> table yet "
                "(<code>stcstore score … --output STORE/predictions</code> writes them).</p>")
    rows = "".join(f"<tr><td>{esc(p['run_date'])}</td><td>{esc(p['label'])}</td><td>{int(p['texts']):,}</td>"
                   f"<td>{100 * p['share']:.1f} %</td><td>{p['mean_confidence']:.3f}</td></tr>" for p in preds)
    return ("<table><tr><th>run date</th><th>label</th><th>texts</th><th>share</th><th>mean confidence</th></tr>"
            + rows + "</table>")


def _page(clf: Classifier, data: dict[str, Any], neurons: list[dict[str, Any]], layers: list[dict[str, Any]],
          hists: list[dict[str, Any]], split: str, top: int) -> str:
    m = clf.manifest
    metric = m["fit"]["config"]["metric"]
    classes = [str(c) for c in clf.classes_]
    model = m["model"]
    n_blocks = model.get("n_layers")
    facts = [("model", f"{model.get('model')} ({model.get('model_type')}, {n_blocks} blocks)"),
             ("dataset / feature set", f"{m['features']['dataset']} / {m['features']['feature_set']}"),
             ("fit", f"{m['fit']['fit_id']}, chosen on validation {metric}"),
             ("classifier", f"{m['kind']}.{m['pooling']}, η {m['eta']:g}, L_temp {m['l_temp']}, "
                            f"{clf.coef_.shape[1]} neurons, classes {', '.join(classes)}"),
             ("early exit", f"scoring runs {m['blocks_run']} of {n_blocks} blocks"),
             ("fingerprint", clf.fingerprint)]
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    chosen_weights = ("Weights apply to standardised neuron values (train mean and std), so their sizes compare "
                      "across neurons.")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stcstore report: {esc(clf.name)}</title>
<style>
body {{ font: 14px/1.5 system-ui, sans-serif; max-width: 64em; margin: 2em auto; color: #222; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: .6em 0 1.2em; }}
th, td {{ border-bottom: 1px solid #e3e3e3; padding: .25em .7em; text-align: left; vertical-align: top; }}
th {{ background: #f6f6f6; font-weight: 600; }} .facts th {{ width: 11em; }}
code {{ background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }}
{CSS}</style></head><body>
<h1>Classifier report: {esc(clf.name)}</h1>
<table class="facts">{facts_html}</table>
<h2 id="results">Results</h2>
<p>Every choice (probe strength, pooling, η, L_temp) was made on validation; test was read once, for the
chosen state.</p>
{_results_table(clf)}
<h2 id="layers">Where the information is: per-layer probes and the aggregate</h2>
<p>Each thin line is an L1 logistic probe on one layer's pooled values, for one kind and pooling (strength
chosen on validation); the thick line aggregates the η-sparsified neurons of layers 0..L_temp (STC paper, Figure 2).
The dashed line is the last-layer single-token baseline.</p>
{_fig_layers(clf, data, metric)}
<h2 id="grid">What, which, where: pooling, η and L_temp</h2>
<p>Every aggregate the fit tried for {esc(m['kind'])} (STC paper, Figure 3). Hover a point for its neuron
count.</p>
{"".join(_fig_grid(clf, data, metric))}
<h2 id="neurons">Which neurons</h2>
<p>{chosen_weights} The share of ‖w‖² is the sparsification criterion of the method. Per-label statistics
and the effect size (largest gap between label means over the pooled within-label std) come from the
<code>neuron_stats</code> view, on the <b>{esc(split)}</b> split. All {len(neurons)} neurons are in
<code>neurons.parquet</code>; the top {min(top, len(neurons))} are listed.</p>
{_fig_neurons(layers)}
{_neuron_table(neurons, classes, top)}
<h3>How the top neurons separate the labels</h3>
<p>Distribution of each top neuron's stored value per label, on the <b>{esc(split)}</b> split (STC paper,
Figure 4a). A neuron can matter in combination with others without separating the labels on its own.</p>
{_fig_histograms(hists)}
<h2 id="predictions">Predictions in this store</h2>
{_predictions_table(data['predictions'])}
<p style="color:#777">stcstore {esc(__version__)}, {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>
</body></html>
"""


# ---------------------------------------------------------------------------------------------- entry


def _write(out: Path, files: dict[str, bytes], force: bool) -> None:
    """All files appear together: a temp directory renamed into place (an old report only with force)."""
    if out.exists() and not out.is_dir():
        raise StcError(f"--out {out} is a file; give a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise StcError(f"--out {out} exists and is not empty; pick a new directory or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(out)
    tmp.mkdir()
    for name, blob in files.items():
        (tmp / name).write_bytes(blob)
    commit_replacing(tmp, out)


def report(cfg: ReportConfig) -> ReportResult:
    """Write OUT/report.html, OUT/report.json and OUT/neurons.parquet for one classifier of one store."""
    t0 = time.perf_counter()
    clf = load_classifier(cfg.classifier)
    m = clf.manifest
    split = cfg.split or m["fit"]["config"].get("train_split", "train")
    store = Store(cfg.store)
    store.require()
    if cfg.split is not None:
        have = sorted(set(store.texts(m["features"]["dataset"], columns=["split"]).column("split").to_pylist()))
        if split not in have:
            raise StcError(f"--split {split!r}: dataset {m['features']['dataset']!r} has splits "
                           f"{', '.join(have) or 'none'}")
    neurons = _neuron_rows(clf)
    messages = []
    with StoreSQL(cfg.store) as db:
        data = _collect(db, clf, neurons, split)
    _attach_stats(neurons, data["stats"], data["gaps"])
    hists = _histograms(store, clf, neurons, split, cfg.histograms)
    if not data["stats"]:
        messages.append(f"no neuron statistics for split {split!r} of feature set {m['features']['feature_set']}; "
                        f"the per-label columns are empty")
    layers = _layers(clf, neurons)
    summary = _summary(clf, data, split)
    doc = {"stcstore_version": __version__, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "classifier": {"name": clf.name, "path": str(clf.path), "fingerprint": clf.fingerprint,
                          "model": m["model"], "features": m["features"], "fit_id": m["fit"]["fit_id"],
                          "metric": m["fit"]["config"]["metric"], "kind": m["kind"], "pooling": m["pooling"],
                          "eta": m["eta"], "l_temp": m["l_temp"], "blocks_run": m["blocks_run"],
                          "neurons": int(clf.coef_.shape[1]), "classes": [str(c) for c in clf.classes_]},
           "results": m["metrics"], "stats_split": split, "probes": data["probes"],
           "aggregates": data["aggregates"], "layers": layers, "top_neurons": neurons[:cfg.top], "histograms": hists,
           "predictions": data["predictions"]}
    table = pa.Table.from_pylist([{k: r.get(k) for k in NEURONS_SCHEMA.names} for r in neurons],
                                 schema=NEURONS_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    files = {"report.html": _page(clf, data, neurons, layers, hists, split, cfg.top).encode("utf-8"),
             "report.json": (json.dumps(doc, indent=2, default=str) + "\n").encode("utf-8"),
             "neurons.parquet": sink.getvalue().to_pybytes()}
    out = Path(cfg.out)
    _write(out, files, cfg.force)
    for msg in messages:
        eprint(msg)
    return ReportResult(out=str(out), files=[str(out / f) for f in files], classifier=clf.name, summary=summary,
                        seconds=time.perf_counter() - t0, messages=messages)
