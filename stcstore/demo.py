"""`stcstore demo`: ingest the embedded sample, extract with the packaged MiniLM, fit STC, score new texts,
report on the classifier, summarize.

Layout of its folder (`--out`, default ./stcstore-demo): `store/` (the store), `classifier/`, `report/`,
`new-texts-predictions.parquet` and its `.explain.html`; outputs never go inside a store."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .core.errors import StcError
from .core.names import shown
from .core.result import Result
from .features import ExtractConfig, extract
from .fit import FitConfig, FitResult, fit
from .ingest import IngestConfig, ingest
from .score import ScoreConfig, ScoreResult, score

DEMO_DATASET = "sst2-sample"
DEMO_LABEL_NAMES = (("0", "negative"), ("1", "positive"))  # SST-2's labels


def new_texts_file() -> Path:
    """A few unlabelled texts that the demo scores with the classifier it fitted."""
    return Path(str(resources.files("stcstore.data"))) / "new-texts.jsonl"


def demo_files() -> list[Path]:
    base = Path(str(resources.files("stcstore.data"))) / "sst2"
    return [base / f"{s}.parquet" for s in ("train", "validation", "test")]


@dataclass
class DemoResult(Result):
    store: str
    dataset: str
    texts: int
    rejected: int
    feature_set: str
    extracted: int
    texts_per_s: float
    store_bytes: int
    seconds: dict[str, float]
    top_neurons: list[dict[str, Any]] = field(default_factory=list)
    layer_rows: list[dict[str, Any]] = field(default_factory=list)
    fit: FitResult | None = None
    scored: ScoreResult | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    report_html: str | None = None
    label_names: dict[str, str] = field(default_factory=dict)

    def to_text(self) -> str:
        lines = [
            f"store {self.store}, dataset {self.dataset}: {self.texts} texts ({self.rejected} rejected)",
            f"features: feature set {self.feature_set[:12]}, {self.store_bytes / 2**20:,.1f} MiB on disk; "
            + (f"{self.extracted} texts extracted at {self.texts_per_s:.1f} texts/s" if self.extracted
               else "nothing new to extract (re-run of an existing demo store)"),
            "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()),
            "",
            "top neurons by label difference (train split, effect size = mean gap / pooled std):",
        ]
        for r in self.top_neurons:
            lines.append(f"  {r['kind']:6s} {r['pooling']:6s} layer {r['layer']}  neuron {r['neuron']:5d}  "
                         f"higher for label {shown(r['highest_label'], self.label_names)}  effect {r['effect_size']}")
        lines += ["", "per kind and layer: best effect size, neurons with effect > 0.5:"]
        for r in self.layer_rows:
            lines.append(f"  {r['kind']:6s} layer {r['layer']}: {r['best_effect']:<6} {r['neurons_over_half']}")
        if self.fit is not None:
            lines += ["", "Sparsify-then-Classify (stcstore fit), every choice made on validation:", self.fit.to_text()]
        if self.scored is not None:
            g = self.scored.groups[0] if self.scored.groups else None
            depth = f", the model run through block {g['blocks_run'] - 1} of 0..{g['n_layers'] - 1}" if g else ""
            lines += ["", f"new texts scored with the fitted classifier (stcstore score{depth}):"]
            for p in self.predictions:
                lines.append(f"  label {shown(p['label'], self.label_names):14s}  P {max(p['probabilities']):.3f}  "
                             f"{p['text']}")
            lines.append(f"predictions: {self.scored.output}")
            if self.scored.explain_html:
                lines.append(f"token-level explanation page (open it in a browser): {self.scored.explain_html}")
        if self.report_html:
            lines.append(f"classifier report (probe curves, η/L_temp grid, its neurons): {self.report_html}")
        lines += ["", f"explore: stcstore sql --store {self.store} \"select * from neuron_stats limit 5\"",
                  f"         stcstore sql --store {self.store} \"select * from aggregates order by val_accuracy desc "
                  f"limit 10\""]
        return "\n".join(lines)


def run_demo(out: str | Path = "stcstore-demo", threads: int | None = None) -> DemoResult:
    # DuckDB (and the report, which queries through it) load here, not on import: bench/gpu.py takes the
    # sample's files from this module on machines that have no DuckDB
    from .report import ReportConfig, report
    from .store.sql import StoreSQL, named_query
    from .store.store import Store

    work = Path(out)
    if (work / "store.json").exists():
        raise StcError(f"{work} is a demo of stcstore 0.2 or older, which kept its classifier and report inside the "
                       f"store; the demo now keeps the store in {work / 'store'} and its outputs beside it. Run "
                       f"`stcstore demo --out NEW-FOLDER` (the old store still works with every command)")
    store = work / "store"
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    ingest(IngestConfig(dataset=DEMO_DATASET, label_names=DEMO_LABEL_NAMES, store=str(store),
                        sources=tuple(str(f) for f in demo_files())))
    seconds["ingest"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ext = extract(ExtractConfig(dataset=DEMO_DATASET, threads=threads, store=str(store)))
    seconds["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with StoreSQL(Store(store)) as db:
        sql, params = named_query("top_neurons", {"top": "10", "dataset": DEMO_DATASET})
        top = db.run(sql, params).rows
        sql, params = named_query("layer_effects", {"dataset": DEMO_DATASET})
        layers = db.run(sql, params).rows
        n = db.run("SELECT count(*) AS n FROM texts WHERE dataset = $d", {"d": DEMO_DATASET}).rows[0]["n"]
        rej = db.run("SELECT count(*) AS n FROM rejects WHERE dataset = $d", {"d": DEMO_DATASET}).rows[0]["n"]
    seconds["query"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fitted = fit(FitConfig(dataset=DEMO_DATASET, threads=threads, store=str(store), out=str(work / "classifier"),
                           force=True))
    seconds["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = score(ScoreConfig(classifiers=(str(work / "classifier"),),
                               output=str(work / "new-texts-predictions.parquet"), input=str(new_texts_file()),
                               explain="tokens", threads=threads, force=True))
    seconds["score"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = report(ReportConfig(store=str(store), classifier=str(work / "classifier"), out=str(work / "report"),
                              force=True))
    seconds["report"] = time.perf_counter() - t0
    preds = pq.read_table(scored.output).to_pylist()
    with new_texts_file().open(encoding="utf-8") as f:
        text_of = {r["id"]: r["text"] for r in map(json.loads, f)}
    predictions = [{"id": p["id"], "label": p["label"], "probabilities": p["probabilities"], "text": text_of[p["id"]]}
                   for p in preds]
    return DemoResult(str(store), DEMO_DATASET, n, rej, ext.feature_set, ext.texts_extracted, ext.texts_per_s,
                      ext.store_bytes, {k: round(v, 2) for k, v in seconds.items()}, top, layers, fitted, scored,
                      predictions, str(Path(rep.out) / "report.html"), dict(DEMO_LABEL_NAMES))
