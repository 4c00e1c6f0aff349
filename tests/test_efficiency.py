"""The paper's efficiency tables (section 5.2) for a fit: its published Table 6 figures reproduced by the
formulas, and the parameter counts and lower-layer scores of a real fit."""

from __future__ import annotations

import pytest

from stcstore import Store, load_classifier
from stcstore.features.stage import model_parameters
from stcstore.fit import FitConfig, fit
from stcstore.fit.efficiency import model_parameters as estimated_parameters
from stcstore.fit.efficiency import training_flops

from .conftest import FAST, build_tiny, cli, tiny_bert_store


def test_training_flops_reproduce_the_papers_table_6():
    """DistilBERT on IMDb (66M parameters, 6 layers, D 768, d_ff 3072, 25,000 texts): fine-tuning 9.90T per
    epoch, the frozen forward pass 3.43T (paper, Table 6), speed-up 2.86 (one epoch)."""
    t = training_flops(66_000_000, 6, 768, 3072, 512, 25_000)
    assert t["fine_tuning_per_epoch"] == pytest.approx(9.90e12, rel=0.005)
    assert t["forward"] == pytest.approx(3.43e12, rel=0.01)
    assert t["speedup_1_epoch"] == pytest.approx(2.86, abs=0.05)
    assert t["speedup_2_epochs"] == pytest.approx(2 * t["speedup_1_epoch"], abs=0.02)


def test_a_fit_reports_parameters_flops_and_lower_layers(tmp_path, bert_tokenizer):
    st, lm = tiny_bert_store(tmp_path, bert_tokenizer)
    fs = Store(st).feature_sets("d")[0]
    counted = fs.manifest["model_parameters"]
    assert counted == model_parameters(build_tiny("bert", bert_tokenizer))
    assert 0 < counted["non_embedding"] < counted["total"]
    res = fit(st, FitConfig("d", model="tiny-bert", **FAST), out=tmp_path / "clf")
    eff = res.efficiency
    p = eff["parameters"]
    assert p["fine_tuning"] == counted["non_embedding"] and p["fine_tuning_source"] == "counted"
    # binary: one weight per neuron and an intercept per member of the ensemble
    assert p["stc_classifier"] == res.chosen["n_neurons"] + len(res.chosen["members"])
    widths = fs.manifest["widths"]
    assert p["stc_probes"] == sum(widths[c.split(".")[0]] + 1 for c in fs.manifest["columns"])
    assert p["stc"] == p["stc_probes"] + p["stc_classifier"]
    assert eff["training_flops"]["texts"] == res.n_train
    rows = eff["lower_layers"]
    assert [r["share"] for r in rows] == [0.2, 0.4, 0.6, 0.8, 1.0]
    scores = [r["validation"] for r in rows if r["validation"] is not None]
    assert scores == sorted(scores)  # more layers allowed: never worse on validation
    assert rows[-1]["validation"] == res.stc["validation"]["accuracy"]  # all layers: the chosen classifier
    assert load_classifier(tmp_path / "clf").manifest["efficiency"] == eff  # saved as plain data
    r = cli("report", "--store", str(st), "--classifier", str(tmp_path / "clf"), "--out", str(tmp_path / "rep"))
    page = (tmp_path / "rep" / "report.html").read_text()
    assert r.returncode == 0 and "Trainable parameters (Table 5)" in page and "lower layers (Table 7)" in page
    # a feature set without a count (0.1.0, synthetic) gets the estimate from its shape
    n, how = estimated_parameters(fs.manifest["fingerprint"], None)
    assert how == "estimated from the shape" and n == pytest.approx(counted["non_embedding"], rel=0.1)
