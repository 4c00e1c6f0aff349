"""The report's HTML page: the results table, the paper's figures as inline SVG, and the neuron table."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..core.version import __version__
from ..classifier.classifier import Classifier
from ..core.html import PALETTE, class_colour, esc
from ..core.names import shown
from .svg import CSS, Series, bar_chart, line_chart, scatter


def _aggregator(clf: Classifier) -> str:
    return "consolidation" if clf.head == "consolidation" else "lr"


def _focus(clf: Classifier) -> dict[str, Any]:
    """The aggregate the figures follow: the classifier's own, or an ensemble's validation-best member (its
    other members are marked chosen in the grids too)."""
    m = clf.manifest
    if clf.head == "ensemble":
        return m.members[0]
    return {"kind": m.kind, "pooling": m.pooling, "eta": m.eta, "l_temp": m.l_temp}


def _fig_layers(clf: Classifier, data: dict[str, Any], metric: str) -> str:
    """Paper Figure 2: every probe's validation score by layer, and the chosen aggregate by L_temp."""
    results = clf.manifest.metrics or {}
    f = _focus(clf)
    col = f"val_{metric}"
    series: list[Series] = []
    curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for p in data["probes"]:
        curves.setdefault((p["kind"], p["pooling"]), []).append((p["layer"], p[col]))
    for i, ((kind, pooling), pts) in enumerate(sorted(curves.items())):
        chosen = kind == f["kind"] and pooling == f["pooling"]
        series.append(Series(f"probe {kind}.{pooling}", pts, PALETTE[(i + 2) % len(PALETTE)],
                             width=2.0 if chosen else 1.1, marker=2.4 if chosen else 1.6))
    mine = _aggregator(clf)

    def curve(aggregator: str, kind: str, pooling: str, eta: float) -> list[tuple[float, float]]:
        return [(a["l_temp"], a[col]) for a in data["aggregates"] if a.get("aggregator", "lr") == aggregator
                and a["kind"] == kind and a["pooling"] == pooling and a["eta"] == eta]

    agg = curve(mine, f["kind"], f["pooling"], f["eta"])
    what = "consolidation head" if mine == "consolidation" else "STC"
    series.append(Series(f"{what} {f['kind']}.{f['pooling']} η {f['eta']:g}", agg, PALETTE[0], width=3.0, marker=3.2,
                         titles=[f"{what} of layers 0..{int(x)}: {y:.4f}" for x, y in agg]))
    lr = ((results.get("aggregators") or {}).get("lr") or {}).get("chosen")
    if mine == "consolidation" and lr:  # the LR aggregate it was compared with
        pts = curve("lr", lr["kind"], lr["pooling"], lr["eta"])
        series.append(Series(f"LR aggregate {lr['kind']}.{lr['pooling']} η {lr['eta']:g}", pts, PALETTE[1], width=2.2,
                             marker=2.6, dash="6 3", titles=[f"LR aggregate of layers 0..{int(x)}: {y:.4f}" for x, y in pts]))
    rings = [(x, y, f"chosen: L_temp {int(x)}, {y:.4f}") for x, y in agg if x == f["l_temp"]]
    base = results["baseline"]["validation"].get(metric)
    layers = [x for s in series for x, _ in s.points]
    if base is not None and layers:
        series.append(Series(f"baseline {results['baseline']['what'].split(' ')[0]}",
                             [(min(layers), base), (max(layers), base)], "#444444", width=1.2, dash="5 4",
                             marker=0))
    return line_chart(series, title=f"Validation {metric} by layer: per-layer probes and the STC aggregate",
                      x_label="layer (probe: that layer alone; STC: layers 0..L_temp aggregated)",
                      y_label=f"validation {metric}", marks=[(f["l_temp"], f"chosen L_temp {f['l_temp']}")],
                      rings=rings)


def _fig_grid(clf: Classifier, data: dict[str, Any], metric: str) -> list[str]:
    """Paper Figure 3 ("what-which-where"): each pooling's validation score by L_temp, one line per η, and
    the number of neurons the chosen pooling aggregates."""
    f = _focus(clf)
    col = f"val_{metric}"
    aggs = [a for a in data["aggregates"] if a["kind"] == f["kind"] and a.get("aggregator", "lr") == _aggregator(clf)]
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
        figs.append(line_chart(series, title=f"{f['kind']}.{pooling}: validation {metric} of the aggregate by "
                               "L_temp and η", x_label="L_temp (deepest layer aggregated)",
                               y_label=f"validation {metric}", y_range=(lo - pad, hi + pad), height=280,
                               rings=rings))
    series = [Series(f"η {e:g}", [(a["l_temp"], a["n_neurons"]) for a in aggs
                                  if a["pooling"] == f["pooling"] and a["eta"] == e], colour[e]) for e in etas]
    figs.append(line_chart(series, title=f"{f['kind']}.{f['pooling']}: neurons aggregated by L_temp and η",
                           x_label="L_temp", y_label="neurons", height=260,
                           marks=[(f["l_temp"], "chosen")]))
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


def _score(v: Any) -> str:
    """A metric cell: a number, or a dash where the state was not available (e.g. no baseline block)."""
    return f"{v:.4f}" if isinstance(v, (int, float)) and v == v else "–"


def _results_table(clf: Classifier) -> str:
    m = clf.manifest.metrics or {}
    names = ("r2", "mae", "pearson") if clf.is_regression else ("accuracy", "macro_f1")
    what = {"consolidation": "consolidation head", "ensemble": "ensemble of aggregates"}.get(clf.head, "aggregate")
    rows = [("baseline", "last-layer single-token baseline"),
            ("embedding_baseline", "sentence embedding + L2 logistic regression (without stcstore)"),
            ("best_probe", "best single-layer probe"), ("stc", f"STC {what} (this classifier)")]
    entries = [(name, m.get(key) or {}) for key, name in rows]
    # `fit --aggregator consolidation` also fits the paper's LR aggregate: both, each chosen on validation
    for key, name in (("lr", "LR aggregate (the paper's)"), ("consolidation", "consolidation head (the tweet-analysis preprint)")):
        if key in (m.get("aggregators") or {}):
            entries.append((name + " · compared", m["aggregators"][key]))
    html = []
    for name, r in entries:
        cells = "".join(f"<td>{_score(r.get(s, {}).get(k))}</td>" for s in ("validation", "test") for k in names)
        html.append(f"<tr><td>{esc(name)}</td><td>{esc(r.get('what', 'not available'))}</td>{cells}</tr>")
    heads = "".join(f"<th>{s} {k.replace('_', '-')}</th>" for s in ("val", "test") for k in names)
    table = "<table><tr><th></th><th>what</th>" + heads + "</tr>" + "".join(html) + "</table>"
    noise = m.get("noise") or {}
    if noise.get("validation_se"):  # fits before 0.3 have none
        se = noise["validation_se"]
        notes = [f"validation {esc(noise['metric'])} ± bootstrap standard error ({noise['resamples']} resamples of "
                 "the validation rows): " + ", ".join(f"{esc(k.replace('_', ' '))} {v:.4f}" for k, v in se.items())]
        for k, mg in noise.get("margins", {}).items():
            verdict = "within noise (under twice its standard error)" if mg["within_noise"] else "beyond noise"
            notes.append(f"STC − {esc(k.replace('_', ' '))}: {mg['margin']:+.4f} ± {mg['se']:.4f}, {verdict}")
        table += "<p>" + "<br>".join(notes) + "</p>"
    return table


def _label_cell(r: dict[str, Any], labels: list[str]) -> str:
    stats = {s["label"]: s for s in r["label_stats"]}
    parts = []
    for lab in labels:
        s = stats.get(lab)
        parts.append(f"{esc(lab)}: –" if s is None else
                     f"{esc(lab)}: {s['mean']:.3g}" + ("" if s["std"] is None else f" ± {s['std']:.2g}"))
    return "<br>".join(parts)


def _neuron_table(neurons: list[dict[str, Any]], classes: list[str], top: int, names: dict[str, str]) -> str:
    labels = sorted({s["label"] for r in neurons for s in r["label_stats"]}, key=lambda x: (len(x), x))
    n_w = len(neurons[0]["weights"])  # 0: a consolidation head, whose neurons have no linear weight
    wcols = [] if n_w == 0 else ["weight"] if n_w == 1 else [f"w[{c}]" for c in classes]
    head = ("<tr><th>#</th><th>block</th><th>neuron</th><th>share of ‖w‖²</th>"
            + "".join(f"<th>{esc(c)}</th>" for c in wcols)
            + "<th>toward</th><th>per-label mean ± std</th><th>effect size</th></tr>")
    rows = []
    for r in neurons[:top]:
        es = "–" if r["effect_size"] is None else f"{r['effect_size']:.2f}"
        rows.append(f"<tr><td>{r['rank']}</td><td>{r['kind']}.{r['pooling']}.{r['layer']}</td><td>{r['neuron']}</td>"
                    f"<td>{100 * r['importance']:.2f} %</td>"
                    + "".join(f"<td>{w:+.3f}</td>" for w in r["weights"])
                    + f"<td>{esc(shown(r['toward'], names) if r['toward'] else '–')}</td><td>{_label_cell(r, labels)}</td><td>{es}</td></tr>")
    return "<table>" + head + "".join(rows) + "</table>"


def _fig_histograms(hists: list[dict[str, Any]], classes: list[str], names: dict[str, str] | None = None) -> str:
    """Per top neuron, the distribution of its stored values by label: each label in its class's colour
    (`core.html.class_colour`, as on the explanation pages)."""
    if not hists:
        return ""
    names = names or {}
    labels = list(hists[0]["fractions"])
    order = {c: i for i, c in enumerate(classes)}
    colour = {lab: class_colour(order.get(lab, len(classes) + i)) for i, lab in enumerate(labels)}
    figs = []
    for h in hists:
        mids = [(a + b) / 2 for a, b in zip(h["edges"], h["edges"][1:])]
        series = [Series(f"label {lab}", list(zip(mids, fr)), colour[lab], marker=0) for lab, fr in h["fractions"].items()]
        figs.append(line_chart(series, title=f"#{h['rank']} {h['kind']}.{h['pooling']}.{h['layer']} neuron "
                               f"{h['neuron']} → {shown(h['toward'], names)}", x_label="stored value",
                               y_label="share of label", width=330, height=190, legend=False))
    key = " ".join(f'<span style="color:{colour[lab]}">&#9644; label {esc(shown(lab, names))}</span>'
                   for lab in labels)
    return f'<p>{key}</p><div class="multiples">{"".join(figs)}</div>'


def _fig_regression(points: list[dict[str, Any]]) -> str:
    """Predicted vs true values and residuals of a regression classifier, per split (validation, test)."""
    if not points:
        return ""
    figs = []
    for k, p in enumerate(points):
        colour = PALETTE[k % len(PALETTE)]
        tips = [f"{i}: true {t:.4f}, predicted {v:.4f}" for i, t, v in zip(p["ids"], p["true"], p["predicted"])]
        figs.append(scatter([Series(p["split"], list(zip(p["true"], p["predicted"])), colour, titles=tips)],
                            title=f"{p['split']}: predicted vs true ({len(p['true'])} texts)", x_label="true value",
                            y_label="predicted", diagonal=True))
        figs.append(scatter([Series(p["split"], list(zip(p["predicted"], p["residual"])), colour, titles=tips)],
                            title=f"{p['split']}: residuals (true − predicted)", x_label="predicted",
                            y_label="residual", zero_line=True))
    return ("<h2 id=\"regression\">Predicted vs true values</h2><p>The chosen classifier on the fit's "
            "validation and test rows, from the stored features; on the diagonal, a prediction equals the true "
            "value. Hover a point for its id.</p>" + "".join(figs))


def _efficiency(clf: Classifier, metric: str) -> str:
    """The paper's Tables 5-7 for this fit (recorded in the classifier by `stcstore fit` since 0.3)."""
    eff = clf.manifest.efficiency
    if not eff:
        return "<p>No efficiency record: the classifier was fitted before stcstore 0.3.</p>"
    p, f = eff["parameters"], eff["training_flops"]

    def big(v: float) -> str:
        for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if abs(v) >= scale:
                return f"{v / scale:.3g}{unit}"
        return f"{v:.3g}"

    t5 = (f"<table><tr><th>fine-tuning ({esc(p['fine_tuning_source'])})</th><th>STC: probes + classifier</th>"
          f"<th>ratio</th><th>paper's STC estimate</th></tr><tr><td>{big(p['fine_tuning'])}</td>"
          f"<td>{big(p['stc_probes'])} + {big(p['stc_classifier'])} = {big(p['stc'])}</td><td>{p['ratio']:g}:1</td>"
          f"<td>{big(p['paper_estimate_stc'])}</td></tr></table>")
    t6 = (f"<table><tr><th>fine-tuning, 1 epoch</th><th>forward</th><th>LR probes</th><th>LR aggregation</th>"
          f"<th>Frozen + STC</th><th>speed-up (1 / 2 epochs)</th></tr><tr><td>{big(f['fine_tuning_per_epoch'])}</td>"
          f"<td>{big(f['forward'])}</td><td>{big(f['lr_probes'])}</td><td>{big(f['lr_aggregation'])}</td>"
          f"<td>{big(f['frozen_stc'])}</td><td>{f['speedup_1_epoch']:g} / {f['speedup_2_epochs']:g}</td></tr></table>")
    cells = []
    for r in eff["lower_layers"]:
        chosen = "" if r["l_temp"] is None else f"η {r['eta']:g}, L_temp {r['l_temp']}"
        cells.append(f"<tr><td>{r['share']:.0%}</td><td>{r['blocks']}</td><td>{_score(r['validation'])}</td>"
                     f"<td>{chosen}</td><td>{r['forward_saving']:.0%}</td></tr>")
    rows = "".join(cells)
    t7 = (f"<table><tr><th>lower layers</th><th>blocks</th><th>validation {esc(metric)}</th><th>best aggregate"
          f"</th><th>forward pass saved</th></tr>{rows}</table>")
    return (f"<h3>Trainable parameters (Table 5)</h3>{t5}<h3>Training FLOPs on {f['texts']:,} texts, the "
            f"paper's per-text estimates (Table 6)</h3>{t6}<h3>Using only the lower layers (Table 7)</h3>{t7}")


def _predictions_table(preds: list[dict[str, Any]]) -> str:
    if not preds:
        return ("<p>No predictions of this classifier in the store's <code>predictions</code> table yet "
                "(<code>stcstore score … --output STORE/predictions</code> writes them).</p>")
    rows = "".join(f"<tr><td>{esc(p['run_date'])}</td><td>{esc(p['label'])}</td><td>{int(p['texts']):,}</td>"
                   f"<td>{100 * p['share']:.1f} %</td><td>{p['mean_confidence']:.3f}</td></tr>" for p in preds)
    return ("<table><tr><th>run date</th><th>label</th><th>texts</th><th>share</th><th>mean confidence</th></tr>"
            + rows + "</table>")


def page(clf: Classifier, data: dict[str, Any], neurons: list[dict[str, Any]], layers: list[dict[str, Any]],
          hists: list[dict[str, Any]], split: str, top: int) -> str:
    m = clf.manifest
    metric = m.fit_config["metric"]
    classes = [str(c) for c in clf.classes_]
    model = m.model
    n_blocks = model.n_layers
    facts = [("model", f"{model.name} ({model.model_type}, {n_blocks} blocks)"),
             ("dataset / feature set", f"{m.features.dataset} / {m.features.feature_set}"),
             ("fit", f"{m.fit_id}, chosen on validation {metric}"),
             ("classifier", f"{m.kind}.{m.pooling}, η {m.eta:g}, L_temp {m.l_temp}, "
                            f"{clf.n_features} neurons, " + (f"classes {', '.join(shown(c, clf.label_names_) for c in classes)}" if classes
                             else "a regression target")),
             ("early exit", f"scoring runs {m.blocks_run} of {n_blocks} blocks" if m.blocks_run != n_blocks else
              f"none: L_temp is the last layer, scoring runs all {n_blocks} blocks"),
             ("classifier directory", clf.name),
             ("fingerprint", clf.fingerprint)]
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    slp = m.fit_config.get("probe", "lr") == "slp"
    probe_text = ("an SLP probe (one hidden layer, early-stopped on validation)" if slp else
                  "an L1 logistic probe (strength chosen on validation)")
    agg_text = ("a consolidation head on the η-kept neurons of layers 0..L_temp (the dashed line: the LR aggregate "
                "it was compared with)" if clf.head == "consolidation" else
                "the best member of this ensemble (the validation-best aggregate of each kind and pooling, "
                "probabilities averaged): its η-sparsified neurons of layers 0..L_temp" if clf.head == "ensemble" else
                "the aggregate of the η-sparsified neurons of layers 0..L_temp")
    if clf.head == "consolidation":
        chosen_weights = ("A consolidation head is not linear: a neuron's share is its part of the squared norm of "
                          "the frozen sub-networks' input weights (the SLP importance that kept it), with no single "
                          "class it points to.")
    else:
        chosen_weights = ("Weights apply to standardised neuron values (train mean and std), so their sizes compare "
                          "across neurons. The share of ‖w‖² is the sparsification criterion of the method.")
    title = f"{m.features.dataset}: {'regression' if not classes else 'classifier'} on {model.name}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stcstore report: {esc(title)}</title>
<style>
body {{ font: 14px/1.5 system-ui, sans-serif; max-width: 64em; margin: 2em auto; color: #222; padding: 0 1em; }}
table {{ border-collapse: collapse; margin: .6em 0 1.2em; }}
th, td {{ border-bottom: 1px solid #e3e3e3; padding: .25em .7em; text-align: left; vertical-align: top; }}
th {{ background: #f6f6f6; font-weight: 600; }} .facts th {{ width: 11em; }}
code {{ background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }}
{CSS}</style></head><body>
<h1>{esc(title)}</h1>
<table class="facts">{facts_html}</table>
<h2 id="results">Results</h2>
<p>Every choice (probe strength, pooling, η, L_temp) was made on validation; test was read once, for the
chosen state.</p>
{_results_table(clf)}
{_fig_regression(data.get("regression", []))}
<h2 id="layers">Where the information is: per-layer probes and the aggregate</h2>
<p>Each thin line is {probe_text} on one layer's pooled values, for one kind and pooling; the thick line
is {agg_text} (STC paper, Figure 2).
The dashed line is the last-layer single-token baseline.</p>
{_fig_layers(clf, data, metric)}
<h2 id="grid">What, which, where: pooling, η and L_temp</h2>
<p>Every aggregate the fit tried for {esc(m.kind)} (STC paper, Figure 3). Hover a point for its neuron
count.</p>
{"".join(_fig_grid(clf, data, metric))}
<h2 id="neurons">Which neurons</h2>
<p>{chosen_weights} Per-label statistics
and the effect size (largest gap between label means over the pooled within-label std) come from the
<code>neuron_stats</code> view, on the <b>{esc(split)}</b> split. All {len(neurons)} neurons are in
<code>neurons.parquet</code>; the top {min(top, len(neurons))} are listed.</p>
{_fig_neurons(layers)}
{_neuron_table(neurons, classes, top, clf.label_names_)}
<h3>How the top neurons separate the labels</h3>
<p>Distribution of each top neuron's stored value per label, on the <b>{esc(split)}</b> split (STC paper,
Figure 4a). A neuron can matter in combination with others without separating the labels on its own.</p>
{_fig_histograms(hists, classes, clf.label_names_)}
<h2 id="efficiency">Efficiency (STC paper, section 5.2)</h2>
{_efficiency(clf, metric)}
<h2 id="predictions">Predictions in this store</h2>
{_predictions_table(data['predictions'])}
<p style="color:#777">stcstore {esc(__version__)}, {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>
</body></html>
"""
