"""How fit chooses (issue 22): the ensemble of each kind/pooling's validation-best aggregate by default, ties
decided by simplicity rather than float rounding, the same choice on any thread count and CPU kernel, the
embedding baseline a user would build without stcstore, and how sure the validation comparison is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from stcstore import Store, load_classifier
from stcstore.fit import FitConfig, fit
from stcstore.fit.baselines import C_GRID
from stcstore.fit.probe import TIE_TOLERANCE, standardize_, apply_standardization
from stcstore.fit.selection import best_state, noise_report

from .conftest import FAST, cli, tiny_bert_store


@pytest.fixture(scope="module")
def store(tmp_path_factory, bert_tokenizer):
    return tiny_bert_store(tmp_path_factory.mktemp("sel"), bert_tokenizer, n=300)


def _state(acc: float, loss: float, l_temp: int, n: int, eta: float = 0.8):
    return SimpleNamespace(result=SimpleNamespace(validation={"accuracy": acc, "log_loss": loss}), l_temp=l_temp,
                           n_neurons=n, eta=eta)


def test_ties_within_the_tolerance_go_to_the_simpler_whatever_the_last_bits():
    deep = _state(0.85, 0.40, l_temp=5, n=400)
    shallow = _state(0.85 - TIE_TOLERANCE / 10, 0.40 + TIE_TOLERANCE / 10, l_temp=2, n=100)
    for states in ([deep, shallow], [shallow, deep]):
        assert best_state(states, "accuracy") is shallow
    # a real difference still wins: one row of 10,000 on the metric, or a lower log-loss at an equal metric
    better = _state(0.85 + 1e-4, 0.45, l_temp=5, n=400)
    assert best_state([deep, shallow, better], "accuracy") is better
    calibrated = _state(0.85, 0.39, l_temp=6, n=500)
    assert best_state([deep, shallow, calibrated], "accuracy") is calibrated
    # MAE: lower is better
    lo = SimpleNamespace(result=SimpleNamespace(validation={"mae": 0.1, "mse": 0.02}), l_temp=3, n_neurons=9, eta=0.3)
    hi = SimpleNamespace(result=SimpleNamespace(validation={"mae": 0.2, "mse": 0.01}), l_temp=1, n_neurons=1, eta=0.3)
    assert best_state([hi, lo], "mae") is lo


def test_noise_report_says_when_a_margin_is_within_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = np.where(y == 1, 2.0, -2.0)[:, None] + rng.normal(0, 1, (400, 1))
    same = good + 1e-3
    chance = rng.normal(0, 1, (400, 1))
    r = noise_report({"stc": good, "best_probe": same, "baseline": chance}, y, 2, "accuracy")
    assert set(r["validation_se"]) == {"stc", "best_probe", "baseline"}
    assert 0.005 < r["validation_se"]["stc"] < 0.05  # about sqrt(p (1 - p) / n)
    assert r["margins"]["best_probe"]["within_noise"] and not r["margins"]["baseline"]["within_noise"]
    assert r["margins"]["baseline"]["margin"] > 0.3


def test_the_default_fit_saves_an_ensemble_that_scores_as_the_fit_did(store, tmp_path):
    st, lm = store
    res = fit(st, FitConfig("d", model="tiny-bert", **FAST), out=tmp_path / "clf")
    c = res.chosen
    assert res.selection == "ensemble" and c["selection"] == "ensemble"
    members = c["members"]
    assert len(members) == len({(m["kind"], m["pooling"]) for m in members}) == 6
    assert c["l_temp"] == max(m["l_temp"] for m in members) and c["n_neurons"] == sum(m["n_neurons"] for m in members)
    # members: the validation-best aggregate of each kind/pooling, the overall best first
    vals = [m["validation"]["accuracy"] for m in members]
    assert vals[0] == max(vals)
    clf = load_classifier(tmp_path / "clf")
    assert clf.head == "ensemble" and clf.manifest["version"] == 3
    assert clf.manifest["blocks_run"] == res.chosen["l_temp"] + 1 or clf.manifest["blocks_run"] <= 4
    ids, X = clf.store_features(Store(st), "d", "test")
    labels = dict(zip(*[Store(st).texts("d", columns=["id", "label"]).column(k).to_pylist() for k in ("id", "label")]))
    y = np.array([labels[i] for i in ids])
    assert (clf.predict_features(X) == y).mean() == pytest.approx(res.stc["test"]["accuracy"], abs=1e-12)
    p = clf.predict_proba_features(X)
    assert np.allclose(p.sum(1), 1) and ((p > 0) & (p < 1)).all()
    # the members' probabilities, averaged, are the ensemble's
    single = [load_classifier(tmp_path / "clf")]  # loading twice gives the same scores
    np.testing.assert_array_equal(single[0].predict_proba_features(X), p)


def test_selection_best_saves_one_linear_classifier_as_before(store, tmp_path):
    st, _ = store
    res = fit(st, FitConfig("d", model="tiny-bert", selection="best", **FAST), out=tmp_path / "clf")
    assert "members" not in res.chosen and res.selection == "best"
    clf = load_classifier(tmp_path / "clf")
    assert clf.head == "linear" and clf.manifest["version"] == 1  # what 0.1 and 0.2 read
    r = cli("fit", "--store", st, "--dataset", "d", "--model", "tiny-bert", "--selection", "nonsense")
    assert r.returncode != 0 and "--selection" in r.stderr


def test_an_ensemble_manifest_that_does_not_add_up_is_refused(store, tmp_path):
    st, _ = store
    fit(st, FitConfig("d", model="tiny-bert", **FAST), out=tmp_path / "clf")
    m = json.loads((tmp_path / "clf" / "manifest.json").read_text())
    m["head"]["members"][0]["groups"] += 1
    (tmp_path / "clf" / "manifest.json").write_text(json.dumps(m))
    r = cli("score", "--classifier", tmp_path / "clf", "--store", st, "--dataset", "d", "--output", tmp_path / "p")
    assert r.returncode == 1 and "head.members hold" in r.stderr and "Traceback" not in r.stderr


def test_the_embedding_baseline_is_what_scikit_learn_gives(store):
    """Last-layer mean pooling for an encoder, an L2 logistic regression on the standardised embedding with C
    chosen on validation: the same validation score as scikit-learn's own fit at that C."""
    st, _ = store
    res = fit(st, FitConfig("d", model="tiny-bert", kinds=("hidden",), poolings=("mean",), **FAST))
    e = res.embedding_baseline
    assert e["what"].startswith("hidden.mean.3 ") and e["C"] in C_GRID
    assert set(e["validation"]) == set(e["test"]) == {"accuracy", "macro_f1"}
    s = Store(st)
    _, Xtr, ytr = s.matrix("d", "tiny-bert", "hidden", "mean", 3, "train")
    _, Xva, yva = s.matrix("d", "tiny-bert", "hidden", "mean", 3, "validation")
    mean, scale = standardize_(Xtr)
    apply_standardization(Xva, mean, scale)
    classes = sorted(set(ytr))
    m = LogisticRegression(C=e["C"], max_iter=2000).fit(Xtr, [classes.index(v) for v in ytr])
    acc = (m.predict(Xva) == np.array([classes.index(v) for v in yva])).mean()
    assert e["validation"]["accuracy"] == pytest.approx(acc, abs=1.5 / len(yva))  # warm start vs cold: one row
    assert set(res.noise["validation_se"]) == {"stc", "best_probe", "baseline", "embedding_baseline"}
    assert set(res.noise["margins"]) == {"best_probe", "baseline", "embedding_baseline"}


def test_the_embedding_of_a_decoder_is_its_last_token(tmp_path, tiny_gpt2_dir):
    from stcstore.features import ExtractConfig, extract
    from stcstore.ingest import IngestConfig, ingest

    from .conftest import learnable_corpus

    st = tmp_path / "st"
    ingest(st, [learnable_corpus(tmp_path / "c.jsonl", 160, ("0", "1"), splits=True)], IngestConfig("d", split_field="split"))
    extract(st, ExtractConfig("d", model=str(tiny_gpt2_dir), batch_size=16, kinds=("hidden",), poolings=("mean", "single")))
    res = fit(st, FitConfig("d", model=str(tiny_gpt2_dir), kinds=("hidden",), poolings=("mean",), **FAST))
    assert res.embedding_baseline["what"].startswith("hidden.single.")


_FIT = """
import json, sys
from stcstore.fit import FitConfig, fit
from stcstore.fit.probe import PathConfig
r = fit(sys.argv[1], FitConfig("d", model="tiny-bert", etas=(0.3, 0.8), path=PathConfig(n_lambdas=10, min_ratio=1e-3),
                               threads=int(sys.argv[2])))
print(json.dumps({"chosen": r.chosen, "stc": r.stc, "fit_id": r.fit_id}))
"""


def test_the_same_choice_on_any_thread_count_and_cpu_kernel(store):
    """ATen's CPU kernels (default: no vector units; avx2) change the element-wise arithmetic as another CPU
    would, and thread counts the split of the work: the configuration chosen is the same, and the scores agree
    within a validation row. (Blocks of real size: the next test.)"""
    st, _ = store
    runs = {}
    for cap in ("default", "avx2"):
        for threads in (1, 2):
            env = dict(os.environ, ATEN_CPU_CAPABILITY=cap, HF_HUB_OFFLINE="1")
            p = subprocess.run([sys.executable, "-c", _FIT, str(st), str(threads)], env=env, capture_output=True,
                               text=True, timeout=600)
            assert p.returncode == 0, p.stderr[-2000:]
            runs[(cap, threads)] = json.loads(p.stdout.strip().splitlines()[-1])
    first = next(iter(runs.values()))
    config = ("kind", "pooling", "eta", "l_temp", "n_neurons")
    want = [{k: m[k] for k in config} for m in first["chosen"]["members"]]
    for key, r in runs.items():
        assert r["fit_id"] == first["fit_id"]  # how it ran (threads) is not part of what it is
        assert [{k: m[k] for k in config} for m in r["chosen"]["members"]] == want, key
        for split in ("validation", "test"):
            assert r["stc"][split]["accuracy"] == pytest.approx(first["stc"][split]["accuracy"], abs=1.01 / 60), key


def test_a_probe_path_is_the_same_to_the_bit_on_one_and_two_threads():
    """On blocks of real size MKL splits the L-BFGS direction's products by thread count; run on one thread,
    the whole path (every visited point, the chosen strength and weights) is the same with 1 and 2 threads."""
    import torch

    from stcstore.fit.probe import PathConfig, fit_path

    rng = np.random.default_rng(0)
    n, d, K = 3000, 1200, 4
    X = rng.standard_normal((n, d)).astype(np.float32)
    W = rng.standard_normal((d, K)) * (rng.random((d, 1)) < 0.05)
    y = (X @ W + rng.gumbel(size=(n, K))).argmax(1)
    Xtr, Xva = X[:2400].copy(), X[2400:].copy()
    mean, scale = standardize_(Xtr)
    apply_standardization(Xva, mean, scale)
    before = torch.get_num_threads()
    runs = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            runs.append(fit_path(Xtr.copy(), y[:2400], Xva.copy(), y[2400:], K, "accuracy", PathConfig()))
    finally:
        torch.set_num_threads(before)
    a, b = runs
    assert a.step == b.step and len(a.rows) == len(b.rows) > 3
    assert [r["objective"] for r in a.rows] == [r["objective"] for r in b.rows]
    np.testing.assert_array_equal(a.chosen.coef, b.chosen.coef)
