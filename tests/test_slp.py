"""SLP probes (`fit --probe slp`, STC paper appendix A.2): early stopping on validation, seeded, their
importances driving sparsification, and their rows in the probes table beside the LR probes'."""

from __future__ import annotations

import numpy as np

from stcstore.fit import FitConfig, fit
from stcstore.fit.slp import SLPConfig, fit_slp
from stcstore.fit.sparsify import select_neurons
from stcstore.store.query import run_query

from .conftest import FAST, cli, tiny_bert_store


def _problem(n=600, d=36, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[:, 0] += 2.0 * (y - 0.5) * (X[:, 1] > 0)  # a non-linear signal in neurons 0 and 1
    X[:, 2] += 1.5 * (y - 0.5)
    return X, y


def test_slp_learns_and_ranks_the_informative_inputs_first():
    X, y = _problem()
    net, res = fit_slp(X[:400], y[:400], X[400:], y[400:], 2, "accuracy", seed=0)
    assert net.W1.shape == (6, 36)  # round(√36) hidden units
    assert res.validation["accuracy"] > 0.75
    assert set(np.argsort(-net.importance())[:3].tolist()) >= {0, 2}
    assert res.rows[res.step - 1]["chosen"] and sum(r["chosen"] for r in res.rows) == 1
    # early stopping: the run ends `patience` epochs after the best one (or at max_epochs)
    assert len(res.rows) == min(res.step + SLPConfig().patience, SLPConfig().max_epochs)
    again, res2 = fit_slp(X[:400], y[:400], X[400:], y[400:], 2, "accuracy", seed=0)
    np.testing.assert_array_equal(net.W1, again.W1)  # seeded
    assert select_neurons(res.chosen.coef, 0.5).tolist()[0] == int(np.argmax(net.importance()))


def test_fit_with_slp_probes(tmp_path, bert_tokenizer):
    st, lm = tiny_bert_store(tmp_path, bert_tokenizer)
    lr = fit(st, FitConfig("d", model="tiny-bert", **FAST))
    slp = fit(st, FitConfig("d", model="tiny-bert", probe="slp", **FAST), out=tmp_path / "clf")
    assert slp.fit_id != lr.fit_id and "SLP" in slp.best_probe["what"]
    assert slp.stc["validation"]["accuracy"] > 0.7 and slp.best_probe["test"]["accuracy"] > 0.6
    q = run_query(st, "select probe, count(distinct kind||pooling||layer) as blocks, sum(chosen::int) as chosen "
                      "from probes group by probe order by probe").rows
    assert [r["probe"] for r in q] == ["lr", "slp"] and q[0]["blocks"] == q[1]["blocks"] == q[1]["chosen"]
    r = cli("report", "--store", str(st), "--classifier", str(tmp_path / "clf"), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    r = cli("fit", "--store", str(st), "--dataset", "d", "--model", "tiny-bert", "--probe", "mlp")
    assert r.returncode == 1 and "--probe" in r.stderr
