"""The knowledge-consolidation head (`fit --aggregator consolidation`, tweet-analysis preprint): guided
dropout of the SLP probes' low-importance inputs, frozen sub-networks, a cross-layer network chosen on
validation beside the LR aggregate; saved as plain data, scored with early exit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from stcstore.classifier.classifier import groups_blocks_run
from stcstore.classifier.classifier import load_classifier
from stcstore.classifier.heads import ConsolidationHead
from stcstore.core.errors import StcError
from stcstore.fit import FitConfig, fit
from stcstore.score import ScoreConfig, score
from stcstore.store.query import run_query
from stcstore.store.store import Store

from .conftest import FAST, cli, tiny_bert_store


def _head(rng, units=(3, 2), sizes=(4, 5), top=3, k=1):
    h = sum(units)
    return ConsolidationHead(list(units), list(sizes), {
        "sub_weight": rng.standard_normal(sum(a * b for a, b in zip(units, sizes))),
        "sub_bias": rng.standard_normal(h), "hidden_mean": rng.standard_normal(h),
        "hidden_scale": rng.uniform(0.5, 2, h), "coef1": rng.standard_normal((top, h)),
        "intercept1": rng.standard_normal(top), "coef": rng.standard_normal((k, top)), "intercept": rng.standard_normal(k)})


def test_head_is_the_frozen_sub_networks_then_the_cross_layer_network():
    rng = np.random.default_rng(0)
    head = _head(rng)
    Z = rng.standard_normal((7, 9)).astype(np.float32)
    a = head.arrays
    W1, W2 = a["sub_weight"][:12].reshape(3, 4), a["sub_weight"][12:].reshape(2, 5)
    H = np.concatenate([np.maximum(Z[:, :4] @ W1.T + a["sub_bias"][:3], 0),
                        np.maximum(Z[:, 4:] @ W2.T + a["sub_bias"][3:], 0)], axis=1)
    H = (H - a["hidden_mean"]) / a["hidden_scale"]
    want = np.maximum(H @ a["coef1"].T + a["intercept1"], 0) @ a["coef"].T + a["intercept"]
    np.testing.assert_allclose(head.decision(Z), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(head.input_importance()[:4], np.sqrt((W1 ** 2).sum(0)))


def test_guided_dropout_equals_the_full_probe_with_dropped_inputs_silenced():
    """A group's frozen sub-network on its kept inputs is the phase-1 network's first layer with every
    dropped input at its train mean (standardised value 0)."""
    rng = np.random.default_rng(1)
    W1, b1 = rng.standard_normal((4, 10)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    kept = np.array([7, 2, 5])
    Z = rng.standard_normal((6, 10)).astype(np.float32)
    head = ConsolidationHead([4], [3], {"sub_weight": W1[:, kept].astype(np.float64).ravel(), "sub_bias": b1})
    silenced = Z.copy()
    silenced[:, np.setdiff1d(np.arange(10), kept)] = 0
    full = torch.relu(torch.from_numpy(silenced) @ torch.from_numpy(W1).T + torch.from_numpy(b1)).numpy()
    np.testing.assert_allclose(head.hidden(Z[:, kept]).numpy(), full, rtol=1e-5, atol=1e-6)


def _accuracy(clf, st, ids, X) -> float:
    """The classifier's accuracy on stored feature rows X of these text ids."""
    y = Store(st).texts("d", columns=["id", "label"]).to_pydict()
    label = dict(zip(y["id"], y["label"]))
    return float(np.mean(clf.predict_features(X) == np.array([label[i] for i in ids])))


@pytest.fixture(scope="module")
def consolidated(tmp_path_factory, bert_tokenizer):
    tmp = tmp_path_factory.mktemp("kc")
    st, lm = tiny_bert_store(tmp, bert_tokenizer, n=250)
    res = fit(st, FitConfig("d", model="tiny-bert", aggregator="consolidation", **FAST), out=tmp / "clf")
    return tmp, st, lm, res


def test_fit_reports_both_aggregators_each_chosen_on_validation(consolidated):
    tmp, st, _, res = consolidated
    assert set(res.aggregators) == {"lr", "consolidation"} and res.chosen["aggregator"] == "consolidation"
    assert res.stc == {k: v for k, v in res.aggregators["consolidation"].items() if k != "chosen"}
    assert res.aggregators["consolidation"]["chosen"] == res.chosen
    assert "consolidation head" in res.stc["what"] and res.stc["validation"]["accuracy"] > 0.7
    lr_chosen = res.aggregators["lr"]["chosen"]  # what `--aggregator lr` saves: an ensemble by default
    assert lr_chosen["aggregator"] == "lr" and all(m["C"] > 0 for m in lr_chosen["members"])
    rows = run_query(st, "select aggregator, kind, pooling, eta, l_temp, val_accuracy, val_log_loss, chosen, lam "
                         "from aggregates where fit_id = $f", params={"f": res.fit_id}).rows
    by = {a: [r for r in rows if r["aggregator"] == a] for a in ("lr", "consolidation")}
    assert len(by["lr"]) == len(by["consolidation"]) > 0  # the same (kind, pooling, η, L_temp) grid
    assert [r["aggregator"] for r in rows if r["chosen"]] == ["consolidation"]  # what was saved
    assert all(r["lam"] is None for r in by["consolidation"])
    # each reported one is the best of its own aggregator on validation
    # (the LR side's best member)
    top = {name: max(r["val_accuracy"] for r in by[name]) for name in by}
    assert res.aggregators["consolidation"]["validation"]["accuracy"] == pytest.approx(top["consolidation"])
    assert lr_chosen["members"][0]["validation"]["accuracy"] == pytest.approx(top["lr"])
    assert res.seconds["consolidation"] > 0
    assert res.efficiency["parameters"]["stc_classifier"] == sum(
        np.load(tmp / "clf" / f"{n}.npy").size for n in ("coef1", "intercept1", "coef", "intercept"))
    # phase 1 is SLP probes, implied by the aggregator (an explicit --probe lr is refused); the LR side is
    # exactly what `--aggregator lr` gives on the same data: its own LR probes and their aggregate
    assert {r["probe"] for r in run_query(st, "select distinct probe from probes where fit_id = $f",
                                          params={"f": res.fit_id}).rows} == {"lr", "slp"}
    assert "SLP" in res.best_probe["what"] and res.seconds["lr_probes"] > 0
    plain = fit(st, FitConfig("d", model="tiny-bert", **FAST))
    lr = res.aggregators["lr"]
    assert (lr["what"], lr["validation"], lr["test"]) == (plain.stc["what"], plain.stc["validation"], plain.stc["test"])
    assert {k: v for k, v in lr["chosen"].items()} == plain.chosen
    with pytest.raises(StcError, match="--probe slp"):
        FitConfig("d", aggregator="consolidation", probe="lr")


def test_saved_head_scores_exactly_as_the_fit_did_and_exits_early(consolidated):
    tmp, st, lm, res = consolidated
    clf = load_classifier(tmp / "clf")
    m = clf.manifest
    assert m["version"] == 2 and m["head"]["type"] == "consolidation" and clf.head == "consolidation"
    assert m["blocks_run"] == groups_blocks_run(clf.groups) <= m["model"]["n_layers"]
    assert m["metrics"]["aggregators"]["lr"]["validation"] == res.aggregators["lr"]["validation"]
    ids, X = clf.store_features(Store(st), "d", "test")
    acc = _accuracy(clf, st, ids, X)
    assert acc == pytest.approx(res.stc["test"]["accuracy"], abs=1e-12)  # test scored with the saved head
    again = load_classifier(tmp / "clf")
    np.testing.assert_array_equal(again.predict_proba_features(X), clf.predict_proba_features(X))
    assert again.fingerprint == clf.fingerprint
    # texts: the model runs only through the head's deepest block, and gives the stored features' answers
    clf.attach(lm)
    texts = Store(st).texts("d", columns=["id", "text"]).to_pydict()
    text_of = dict(zip(texts["id"], texts["text"]))
    p_text = clf.predict_proba([text_of[i] for i in ids])
    assert np.abs(p_text - clf.predict_proba_features(X)).max() < 2e-3
    assert clf.computer().n_blocks_run == m["blocks_run"]


def test_a_damaged_or_edited_head_is_refused(consolidated, tmp_path):
    import shutil

    tmp, *_ = consolidated
    bad = tmp_path / "bad"
    shutil.copytree(tmp / "clf", bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["head"]["hidden_units"] = m["head"]["hidden_units"][:-1]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StcError, match="hidden_units"):
        load_classifier(bad)
    m["head"]["hidden_units"] = [u + 1 for u in json.loads((tmp / "clf" / "manifest.json").read_text())["head"]["hidden_units"]]
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StcError, match="sub_weight.*shape"):
        load_classifier(bad)
    m = json.loads((tmp / "clf" / "manifest.json").read_text())
    m["version"] = 1  # an 0.2 reader's format cannot hold a head
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StcError, match="format 2"):
        load_classifier(bad)
    shutil.copy(tmp / "clf" / "manifest.json", bad / "manifest.json")
    np.save(bad / "coef1.npy", np.load(bad / "coef1.npy") * 2)
    with pytest.raises(StcError, match="coef1.npy does not match the checksum"):
        load_classifier(bad)


def test_score_and_report_of_a_consolidation_head(consolidated, tmp_path):
    tmp, st, lm, res = consolidated
    out = tmp_path / "pred.parquet"
    assert res.chosen["pooling"] in ("mean", "max")  # (this corpus's choice) has a per-token reading
    r = score(ScoreConfig((str(tmp / "clf"),), str(out), store=str(st), dataset="d", explain="tokens"),
              models={"tiny-bert": lm})
    assert r.scored_texts == 250
    rec = json.loads((tmp_path / "pred.explain.jsonl").read_text().splitlines()[0])
    assert math.isclose(sum(rec["probabilities"]), 1.0, abs_tol=1e-6) and rec["tokens"]
    rep = cli("report", "--store", str(st), "--classifier", str(tmp / "clf"), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 0, rep.stderr
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "consolidation head (the tweet-analysis preprint)" in html and "LR aggregate (the paper" in html
    assert "seed 003" not in html
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["results"]["aggregators"]["consolidation"]["test"] == res.stc["test"]
    bad = cli("fit", "--store", str(st), "--dataset", "d", "--model", "tiny-bert", "--aggregator", "consolidation",
              "--probe", "lr")
    assert bad.returncode == 1 and "--probe slp" in bad.stderr and "Traceback" not in bad.stderr


def test_linear_classifiers_keep_format_1(tmp_path, bert_tokenizer):
    """A single linear aggregate (`--selection best`, or an ensemble of one kind/pooling) is written as format 1,
    which 0.1 and 0.2 read."""
    st, _ = tiny_bert_store(tmp_path, bert_tokenizer, n=120)
    one = fit(st, FitConfig("d", model="tiny-bert", kinds=("ffn",), poolings=("mean",), **FAST), out=tmp_path / "one")
    assert json.loads((tmp_path / "one" / "manifest.json").read_text())["version"] == 1 and "members" not in one.chosen
    res = fit(st, FitConfig("d", model="tiny-bert", selection="best", **FAST), out=tmp_path / "clf")
    m = json.loads((tmp_path / "clf" / "manifest.json").read_text())
    assert m["version"] == 1 and "head" not in m and res.chosen["aggregator"] == "lr" and not res.aggregators
    assert "aggregator" not in m["fit"]["config"]  # the default leaves fit ids as they were


def test_depth_walk_stops_after_its_patience(consolidated, monkeypatch):
    """Per η, L_temp is walked upward and stops once DEPTH_PATIENCE depths bring nothing better."""
    import stcstore.fit.consolidation as kc

    _, st, _, _ = consolidated
    monkeypatch.setattr(kc, "DEPTH_PATIENCE", 1)
    res = fit(st, FitConfig("d", model="tiny-bert", aggregator="consolidation", kinds=("hidden",),
                            poolings=("max",), **FAST))
    rows = run_query(st, "select eta, l_temp, val_accuracy, val_log_loss from aggregates where fit_id = $f and "
                         "aggregator = 'consolidation' order by eta, l_temp", params={"f": res.fit_id}).rows
    n_layers = len({r["l_temp"] for r in run_query(st, "select l_temp from aggregates where fit_id = $f and "
                                                       "aggregator = 'lr'", params={"f": res.fit_id}).rows})
    stopped = 0
    for eta in {r["eta"] for r in rows}:
        keys = [(r["val_accuracy"], -r["val_log_loss"]) for r in rows if r["eta"] == eta]
        assert all(b > a for a, b in zip(keys[:-2], keys[1:-1]))  # each depth before the last improved
        if len(keys) < n_layers:
            stopped += 1
            assert keys[-1] <= max(keys[:-1])  # ... and the last did not: the walk stopped there
    assert stopped > 0


def test_head_searched_on_a_row_sample_is_trained_again_on_every_row(consolidated, capfd, monkeypatch):
    """Under a memory budget the heads are searched on a sample of train rows; the chosen one's cross-layer
    network is then trained on every row (hidden units streamed from the store), and what is saved and
    reported is that network. (The tiny model is too narrow for a real budget to bite: the budget's
    sample is forced here.)"""
    from stcstore.fit.search import Fitter
    from stcstore.fit.splits import stratified_sample

    def budget_sample(self, kind, pooling, width):
        self.agg_rows[(kind, pooling)] = 100
        return stratified_sample(self.splits.plans[self.tr], self.splits.y[self.tr], 100, self.cfg.seed)

    monkeypatch.setattr(Fitter, "agg_plan", budget_sample)
    tmp, st, _, _ = consolidated
    res = fit(st, FitConfig("d", model="tiny-bert", aggregator="consolidation", kinds=("ffn",), poolings=("mean",),
                            **FAST), out=tmp / "clf-budget")
    assert res.n_search_rows < res.n_train
    assert "cross-layer network on every train row" in capfd.readouterr().err
    clf = load_classifier(tmp / "clf-budget")
    ids, X = clf.store_features(Store(st), "d", "test")
    acc = _accuracy(clf, st, ids, X)
    assert acc == pytest.approx(res.stc["test"]["accuracy"], abs=1e-12)
    assert res.stc["validation"]["accuracy"] > 0.7
