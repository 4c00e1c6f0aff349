"""`stcstore report`: the page, JSON and neuron table agree with the fit's tables, the classifier's arrays
and the stored features; bad input is refused clearly; the output appears atomically."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from stcstore import Store, load_classifier
from stcstore.classifier import FeatureGroup
from stcstore.core.errors import StcError
from stcstore.fit import FitConfig, fit
from stcstore.ingest import IngestConfig, ingest
from stcstore.report import ReportConfig, report
from stcstore.report.stage import neuron_rows
from stcstore.report.svg import nice_ticks
from stcstore.score import ScoreConfig, score

from .conftest import FAST, cli, tiny_bert_store, write_jsonl


@pytest.fixture(scope="module")
def reported(tmp_path_factory, bert_tokenizer):
    """A 3-class tiny-BERT store, a classifier fitted on it (ffn, max and mean), its predictions in
    STORE/predictions, and its report."""
    tmp = tmp_path_factory.mktemp("report")
    st, lm = tiny_bert_store(tmp, bert_tokenizer, classes=("0", "1", "2"), n=240)
    fit(st, FitConfig("d", model="tiny-bert", kinds=("ffn",), poolings=("max", "mean"), **FAST), out=tmp / "clf")
    score(ScoreConfig((str(tmp / "clf"),), str(st / "predictions"), store=str(st), dataset="d", chunk_rows=100),
          models={"tiny-bert": lm})
    result = report(ReportConfig(store=str(st), classifier=str(tmp / "clf"), out=str(tmp / "rep"), top=10))
    return st, tmp / "clf", tmp / "rep", result


def test_report_agrees_with_the_fit_tables_and_the_classifier(reported):
    st, clf_dir, out, result = reported
    assert sorted(p.name for p in out.iterdir()) == ["neurons.parquet", "report.html", "report.json"]
    doc = json.loads((out / "report.json").read_text())
    clf = load_classifier(clf_dir)
    m = clf.manifest
    for k in ("kind", "pooling", "eta", "l_temp", "blocks_run"):
        assert doc["classifier"][k] == m[k]
    assert doc["classifier"]["fingerprint"] == clf.fingerprint and doc["results"] == m["metrics"]

    fit_dir = st / "fits" / "dataset=d" / f"fit={m['fit']['fit_id']}"
    probes = pq.read_table(fit_dir / "probes.parquet").to_pylist()
    chosen = {(p["kind"], p["pooling"], p["layer"]): p["val_accuracy"] for p in probes if p["chosen"]}
    assert len(chosen) == 6  # ffn x (max, mean) x 3 blocks
    assert {(p["kind"], p["pooling"], p["layer"]): p["val_accuracy"] for p in doc["probes"]} == chosen
    aggs = pq.read_table(fit_dir / "aggregates.parquet").to_pylist()
    assert len(doc["aggregates"]) == len(aggs)
    # the chosen rows are the ensemble's members, one per kind/pooling
    picked = {(a["kind"], a["pooling"], a["eta"], a["l_temp"]) for a in doc["aggregates"] if a["chosen"]}
    assert picked == {(e["kind"], e["pooling"], e["eta"], e["l_temp"]) for e in m["head"]["members"]}
    assert m["l_temp"] == max(e["l_temp"] for e in m["head"]["members"])

    # every classifier column once, with its own weights, ranked by share of ||w||^2
    t = pq.read_table(out / "neurons.parquet").to_pylist()
    assert len(t) == clf.coef_.shape[1]
    assert [r["rank"] for r in t] == list(range(1, len(t) + 1))
    assert sorted(r["column"] for r in t) == list(range(len(t)))
    assert abs(sum(r["importance"] for r in t) - 1) < 1e-9
    assert all(a["importance"] >= b["importance"] for a, b in zip(t, t[1:]))
    for r in t:
        np.testing.assert_array_equal(r["weights"], clf.coef_[:, r["column"]])
        if any(r["weights"]):
            assert r["toward"] == m["classes"][int(np.argmax(r["weights"]))]
    used = {(g.kind, g.pooling, g.layer, n) for g in clf.groups for n in g.neurons}
    assert {(r["kind"], r["pooling"], r["layer"], r["neuron"]) for r in t} == used
    keys = ("rank", "kind", "pooling", "layer", "neuron", "column", "weights")
    assert [{k: r[k] for k in keys} for r in doc["top_neurons"]] == [{k: r[k] for k in keys} for r in t[:10]]
    assert sum(d["neurons"] for d in doc["layers"]) == len(t)
    assert abs(sum(d["importance"] for d in doc["layers"]) - 1) < 1e-9
    assert result.summary["neurons"] == len(t)


def test_per_label_statistics_equal_the_stored_features(reported):
    """The neuron_stats join is right: per-label count and mean of each neuron equal numpy on the stored
    train features of the classifier's columns."""
    st, clf_dir, out, _ = reported
    clf = load_classifier(clf_dir)
    ids, X = clf.store_features(Store(st), "d", split="train")
    texts = {r["id"]: r["label"] for f in (st / "ingest" / "dataset=d").glob("batch=*/texts.parquet")
             for r in pq.read_table(f, columns=["id", "label"]).to_pylist()}
    labels = np.array([texts[i] for i in ids])
    t = pq.read_table(out / "neurons.parquet").to_pylist()
    for r in t:
        got = {s["label"]: s for s in r["label_stats"]}
        assert set(got) == {"0", "1", "2"}
        for lab, s in got.items():
            col = X[labels == lab, r["column"]].astype(np.float64)
            assert s["count"] == len(col)
            np.testing.assert_allclose(s["mean"], col.mean(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(s["std"], col.std(ddof=1), rtol=1e-3, atol=1e-5)
        assert r["effect_size"] is None or r["effect_size"] >= 0
    # the histograms of the top neurons are those of the same stored values
    hists = json.loads((out / "report.json").read_text())["histograms"]
    assert [(h["rank"], h["neuron"]) for h in hists] == [(r["rank"], r["neuron"]) for r in t[:8]]
    for h, r in zip(hists, t):
        x = X[:, r["column"]].astype(np.float64)
        edges = np.asarray(h["edges"])
        assert len(edges) == 25 and np.all(np.diff(edges) > 0)
        for lab, fr in h["fractions"].items():
            col = np.clip(x[labels == lab], edges[0], edges[-1])
            np.testing.assert_allclose(fr, np.histogram(col, edges)[0] / len(col), atol=1e-12)
            assert abs(sum(fr) - 1) < 1e-9


def test_predictions_section_counts_the_store_predictions(reported):
    st, clf_dir, out, _ = reported
    doc = json.loads((out / "report.json").read_text())
    want = Counter()
    for f in (st / "predictions").glob("run_date=*/part-*.parquet"):
        want.update(pq.read_table(f).column("label").to_pylist())
    assert sum(want.values()) == 240
    assert {p["label"]: p["texts"] for p in doc["predictions"]} == dict(want)
    assert abs(sum(p["share"] for p in doc["predictions"]) - 1) < 1e-9


def test_page_is_self_contained_with_well_formed_charts(reported):
    _, _, out, _ = reported
    html = (out / "report.html").read_text()
    assert "<script" not in html and not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    svgs = re.findall(r"<svg .*?</svg>", html, flags=re.S)
    # layer curves, one grid per pooling, the neuron count grid, the layer bars, 8 neuron histograms
    assert len(svgs) == 1 + 2 + 1 + 1 + 8
    for s in svgs:
        root = ET.fromstring(s)  # well-formed XML
        assert root.findall(".//{http://www.w3.org/2000/svg}path") or root.findall(".//{http://www.w3.org/2000/svg}rect")
    for h in ("results", "layers", "grid", "neurons", "predictions"):
        assert f'id="{h}"' in html


def test_binary_weights_point_to_the_class_they_favour():
    coef = np.array([[0.5, -2.0, 0.0]])
    clf = SimpleNamespace(classes_=np.array(["neg", "pos"]), column_importance=lambda: ((coef ** 2).sum(0), coef),
                          groups=[FeatureGroup("ffn", "mean", 1, [7, 3]), FeatureGroup("ffn", "mean", 2, [4])])
    rows = neuron_rows(clf)
    assert [(r["layer"], r["neuron"], r["rank"], r["toward"]) for r in rows] == \
        [(1, 3, 1, "neg"), (1, 7, 2, "pos"), (2, 4, 3, None)]
    assert [round(r["importance"], 6) for r in rows] == [round(4 / 4.25, 6), round(0.25 / 4.25, 6), 0.0]


def test_refusals_are_clear_and_replacing_needs_force(reported, tmp_path):
    st, clf_dir, _, _ = reported
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(StcError, match="not empty.*--force"):
        report(ReportConfig(store=str(st), classifier=str(clf_dir), out=str(out)))
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(StcError, match="not a report directory.*--force replaces only an earlier report"):
        report(ReportConfig(store=str(st), classifier=str(clf_dir), out=str(out), force=True))
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    report(ReportConfig(store=str(st), classifier=str(clf_dir), out=str(out)))
    report(ReportConfig(store=str(st), classifier=str(clf_dir), out=str(out), force=True))  # an earlier report
    assert sorted(p.name for p in out.iterdir()) == ["neurons.parquet", "report.html", "report.json"]
    assert not list(tmp_path.glob(".tmp-*"))

    other = tmp_path / "other"
    ingest(other, [write_jsonl(tmp_path / "x.jsonl", [{"id": "1", "text": "hello", "label": "a"}])],
           IngestConfig("d"))
    fit_id = load_classifier(clf_dir).manifest["fit"]["fit_id"]
    with pytest.raises(StcError, match=f"no tables of fit {fit_id} on dataset 'd'"):
        report(ReportConfig(store=str(other), classifier=str(clf_dir), out=str(tmp_path / "r2")))
    assert not (tmp_path / "r2").exists()
    with pytest.raises(StcError, match="not a classifier directory"):
        report(ReportConfig(store=str(st), classifier=str(tmp_path), out=str(tmp_path / "r3")))
    with pytest.raises(StcError, match="--top 0"):
        ReportConfig(store=str(st), classifier=str(clf_dir), out=str(tmp_path / "r4"), top=0)
    with pytest.raises(StcError, match="--split 'valid': dataset 'd' has splits test, train, validation"):
        report(ReportConfig(store=str(st), classifier=str(clf_dir), out=str(tmp_path / "r4"), split="valid"))
    with pytest.raises(StcError, match="--histograms -1"):
        ReportConfig(store=str(st), classifier=str(clf_dir), out=str(tmp_path / "r4"), histograms=-1)
    none = report(ReportConfig(store=str(st), classifier=str(clf_dir), out=str(tmp_path / "r5"), histograms=0))
    assert json.loads((Path(none.out) / "report.json").read_text())["histograms"] == []


def test_cli_report_json_and_exit_codes(reported, tmp_path):
    st, clf_dir, _, _ = reported
    p = cli("report", "--store", st, "--classifier", clf_dir, "--out", tmp_path / "r", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert Path(doc["out"]) == tmp_path / "r" and len(doc["files"]) == 3
    p = cli("report", "--store", st, "--classifier", clf_dir, "--out", tmp_path / "r")
    assert p.returncode == 1 and "--force" in p.stderr


def test_nice_ticks_cover_the_range_with_round_steps():
    for lo, hi in [(0.0, 1.0), (0.4321, 0.8765), (-3.0, 250.0), (0.0, 0.003)]:
        ticks = nice_ticks(lo, hi)
        assert 2 <= len(ticks) <= 11 and ticks == sorted(ticks)
        assert lo <= ticks[0] and ticks[-1] <= hi + 1e-12
        steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:])}
        assert len(steps) == 1
        step = steps.pop()
        mant = step / 10 ** np.floor(np.log10(step))
        assert any(abs(mant - m) < 1e-9 for m in (1, 2, 2.5, 5))


def test_report_without_a_baseline_block(tmp_path, bert_tokenizer):
    """A store extracted with --kinds ffn --poolings mean has no hidden.single.L: the report says the baseline
    is not available instead of failing."""
    from stcstore.features import ExtractConfig, extract
    from stcstore.ingest import IngestConfig, ingest

    from .conftest import build_tiny, learnable_corpus

    st = tmp_path / "st"
    ingest(st, [learnable_corpus(tmp_path / "c.jsonl", 150, ("0", "1"))], IngestConfig("d", split_field="split"))
    extract(st, ExtractConfig("d", kinds=("ffn",), poolings=("mean",), batch_size=16), lm=build_tiny("bert", bert_tokenizer))
    res = fit(st, FitConfig("d", model="tiny-bert", **FAST), out=tmp_path / "clf")
    assert res.baseline["validation"]["accuracy"] is None
    r = report(ReportConfig(store=str(st), classifier=str(tmp_path / "clf"), out=str(tmp_path / "r")))
    html = (Path(r.out) / "report.html").read_text()
    assert "unavailable: the feature set has no hidden.single.3 block" in html
    p = cli("report", "--store", st, "--classifier", tmp_path / "clf", "--out", tmp_path / "r2")
    assert p.returncode == 0, p.stderr


def test_every_page_gives_a_class_the_same_colour():
    """Class 0 (e.g. negative) has one colour on the report's histograms and on the token explanations (the
    0.2 pages disagreed: red on one, blue on the other); the palette is Okabe & Ito's, colour-blind safe."""
    from stcstore.core.html import CLASS_PALETTE, class_colour, rgba
    from stcstore.report.page import _fig_histograms
    from stcstore.score.explain import _tint

    hists = [{"fractions": {"1": [0.5, 0.5], "0": [0.2, 0.8]}, "edges": [0.0, 0.5, 1.0], "rank": 1, "kind": "ffn",
              "pooling": "mean", "layer": 0, "neuron": 3, "toward": "1"}]
    page = _fig_histograms(hists, ["0", "1"])
    assert f'color:{class_colour(0)}">&#9644; label 0' in page and f'color:{class_colour(1)}">&#9644; label 1' in page
    token = {"label": "0", "margin": 1.0}
    assert _tint(["0", "1"], token, 1.0) == rgba(class_colour(0), 0.8)
    assert len(set(CLASS_PALETTE)) == len(CLASS_PALETTE) == 8
