"""`stcstore fit`: the solver against scikit-learn, honest selection, classifier files, bounded memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from stcstore import Store, load_classifier
from stcstore.classifier.linear import decision, probabilities
from stcstore.core.errors import FingerprintMismatchError, StcError
from stcstore.features.synthetic import write_synthetic
from stcstore.fit import FitConfig, fit
from stcstore.fit.solver import L1Logistic
from stcstore.store.query import run_query

from .conftest import FAST, build_tiny, tiny_bert_store


@pytest.fixture(scope="module")
def binary_store(tmp_path_factory, bert_tokenizer):
    return tiny_bert_store(tmp_path_factory.mktemp("bin"), bert_tokenizer)


# ------------------------------------------------------------------------------------------- solver
@pytest.mark.parametrize("n_classes", [2, 4])
def test_solver_reaches_the_l1_optimum_of_sklearn(n_classes):
    """Same objective as scikit-learn's saga run to convergence (mean log-loss + lam * |W|_1)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, d = 400, 30
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[:, 1] = 0.9 * X[:, 0] + 0.1 * X[:, 1]  # correlated columns
    W = np.zeros((d, n_classes))
    W[:5] = rng.standard_normal((5, n_classes)) * 2
    logits = X @ W
    y = np.array([rng.choice(n_classes, p=np.exp(r) / np.exp(r).sum()) for r in logits])
    X = (X - X.mean(0)) / X.std(0)
    solver = L1Logistic(torch.from_numpy(X), y, n_classes, tol=1e-9)
    lam = solver.lambda_max() * 0.05
    pt = solver.fit(lam)
    sk = LogisticRegression(l1_ratio=1.0, solver="saga", C=pt.C, max_iter=20000, tol=1e-10).fit(X, y)

    def objective(coef, intercept):
        z = X @ coef.T + intercept
        if n_classes == 2:
            loss = np.mean(np.logaddexp(0, z[:, 0]) - y * z[:, 0])
        else:
            loss = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(n), y])
        return loss + lam * np.abs(coef).sum()

    ours, theirs = objective(pt.coef, pt.intercept), objective(sk.coef_, sk.intercept_)
    assert ours <= theirs + 1e-6
    assert abs(ours - theirs) < 1e-4
    assert 0 < pt.n_nonzero < d  # L1 made it sparse
    # the same support: OWL-QN's orthant projection leaves exact zeros where saga's weights vanish
    ours_support = np.abs(pt.coef).max(axis=0) > 0
    theirs_support = np.abs(sk.coef_).max(axis=0) > 1e-6
    assert (ours_support == theirs_support).all(), (np.flatnonzero(ours_support), np.flatnonzero(theirs_support))


def test_warm_path_with_carried_curvature_reaches_the_cold_optimum():
    """The L-BFGS pairs carried along the path (and across active sets) must not bias the solution."""
    rng = np.random.default_rng(5)
    n, d, k = 600, 80, 3
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[:, 10:20] += X[:, :10]  # correlated columns, so the active set grows unevenly along the path
    logits = X[:, :6] @ rng.standard_normal((6, k))
    y = np.array([rng.choice(k, p=np.exp(r) / np.exp(r).sum()) for r in logits])  # noisy: a finite optimum
    X = (X - X.mean(0)) / X.std(0)
    warm = L1Logistic(torch.from_numpy(X), y, k, tol=1e-10)
    lam_max = warm.lambda_max()
    prev, lam_prev = None, lam_max
    for i in range(1, 9):
        lam = lam_max * 0.3 ** i
        prev, lam_prev = warm.fit(lam, prev, lam_prev), lam
    cold = L1Logistic(torch.from_numpy(X), y, k, tol=1e-10).fit(lam_prev)
    assert prev.kkt_passes >= 1 and prev.iterations > 0
    assert prev.objective <= cold.objective * (1 + 1e-6)
    assert abs(prev.objective - cold.objective) < 1e-5 * cold.objective
    # softmax ignores a shift of a feature's weights across classes, so compare what the model predicts
    p_warm = probabilities(decision(X, prev.coef, prev.intercept))
    p_cold = probabilities(decision(X, cold.coef, cold.intercept))
    np.testing.assert_allclose(p_warm, p_cold, atol=2e-3)
    assert abs(prev.intercept.sum()) < 1e-6  # softmax's free shift of the intercepts did not drift


def test_lambda_max_gives_all_zero_weights():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 10)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    s = L1Logistic(torch.from_numpy(X), y, 2)
    assert s.fit(s.lambda_max() * 1.01).n_nonzero == 0
    assert s.fit(s.lambda_max() * 0.5).n_nonzero > 0


def test_compact_lbfgs_direction_equals_the_two_loop_recursion():
    """The solver's compact L-BFGS form (a few products with the stacked pairs) is the two-loop recursion's
    matrix, for any number of pairs, classes and a first step without curvature."""
    rng = np.random.default_rng(3)
    for p, shape in ((0, (7, 1)), (1, (7, 1)), (4, (12, 3)), (10, (30, 1))):
        m = shape[0] * shape[1]
        S = rng.standard_normal((p, m))
        Y = S @ np.diag(rng.uniform(0.5, 2.0, m)) + 0.01 * rng.standard_normal((p, m))  # positive curvature
        PG = rng.standard_normal(shape)
        np.testing.assert_allclose(L1Logistic._direction(PG, S, Y), L1Logistic._direction_two_loop(PG, S, Y),
                                   rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------- fit end to end
def test_fit_binary_end_to_end_and_tables(binary_store, tmp_path):
    st, _ = binary_store
    res = fit(st, FitConfig("d", model="tiny-bert", **FAST), out=tmp_path / "clf")
    d = res.to_dict()
    for key in ("baseline", "best_probe", "stc"):
        assert set(d[key]["validation"]) == {"accuracy", "macro_f1"} == set(d[key]["test"])
    assert set(d["chosen"]) >= {"kind", "pooling", "eta", "l_temp", "n_neurons"}
    assert res.stc["validation"]["accuracy"] > 0.8  # the label words are easy
    assert res.baseline["what"].startswith("hidden.single.3")  # the last layer's [CLS]
    # every probe's path is in the store, one chosen point per probe
    q = run_query(st, "select count(*) as n, sum(chosen::int) as c, count(distinct kind||pooling||layer) as b "
                      "from probes where dataset = 'd'").rows[0]
    assert q["c"] == q["b"] == 2 * 3 * 3 + 3 and q["n"] >= q["c"]  # h0..h3 and a0..a2, 3 poolings
    agg = run_query(st, "select count(*) as n, sum(chosen::int) as c, count(distinct case when chosen then "
                        "kind||pooling end) as g from aggregates").rows[0]
    # the default selection: an ensemble of each kind/pooling's validation-best aggregate, all marked chosen
    assert agg["c"] == agg["g"] == 6 and agg["n"] == 2 * (4 + 3) * 3
    assert d["chosen"]["selection"] == "ensemble" and len(d["chosen"]["members"]) == 6


def test_selection_never_reads_test(binary_store, tmp_path):
    """Poisoning every test label changes the test scores and nothing else."""
    st, _ = binary_store
    cfg = FitConfig("d", model="tiny-bert", kinds=("hidden",), poolings=("mean",), **FAST)
    clean = fit(st, cfg)
    poisoned = tmp_path / "poisoned"
    shutil.copytree(st, poisoned)
    for f in poisoned.glob("features/dataset=d/fs=*/chunk-*/features.arrow"):
        import pyarrow.ipc as ipc

        table = ipc.open_file(pa.BufferReader(f.read_bytes())).read_all()  # not memory-mapped: f is rewritten
        labels = [("1" if lab == "0" else "0") if sp == "test" else lab
                  for lab, sp in zip(table.column("label").to_pylist(), table.column("split").to_pylist())]
        table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels))
        with ipc.new_file(str(f), table.schema) as w:
            w.write_table(table)
    bad = fit(poisoned, cfg)
    assert bad.chosen == clean.chosen
    assert bad.best_probe["what"] == clean.best_probe["what"]
    assert bad.stc["validation"] == clean.stc["validation"]
    assert bad.stc["test"]["accuracy"] == pytest.approx(1 - clean.stc["test"]["accuracy"])


def test_multiclass_end_to_end_and_saved_classifier(tmp_path, bert_tokenizer):
    st, lm = tiny_bert_store(tmp_path, bert_tokenizer, classes=("0", "1", "2"), n=240)
    res = fit(st, FitConfig("d", model="tiny-bert", metric="macro_f1", **FAST), out=tmp_path / "clf")
    assert res.classes == ["0", "1", "2"]
    assert res.stc["validation"]["macro_f1"] > 0.6
    clf = load_classifier(tmp_path / "clf", model=lm)
    assert list(clf.classes_) == ["0", "1", "2"] and clf.coef_.shape[0] == 3
    texts = ["a great superb film", "so dull and boring", "monday bus queue", "the film"]
    proba = clf.predict_proba(texts)
    assert proba.shape == (4, 3) and np.allclose(proba.sum(1), 1)
    assert list(clf.predict(texts)[:3]) == ["1", "0", "2"]
    assert clf.decision_function(texts).shape == (4, 3)  # scikit-learn's shapes: [n, K] for K > 2 classes
    # stored features and fresh texts agree (the stored values are float16; the bound covers it)
    s = Store(st)
    ids, X = clf.store_features(s, "d", "test")
    text_of = dict(zip(*[s.texts("d", columns=["id", "text"]).column(c).to_pylist() for c in ("id", "text")]))
    np.testing.assert_allclose(clf.predict_proba([text_of[i] for i in ids]), clf.predict_proba_features(X),
                               atol=2e-3)


def test_save_load_identical_and_plain_data(binary_store, tmp_path):
    st, lm = binary_store
    fit(st, FitConfig("d", model="tiny-bert", kinds=("ffn",), **FAST), out=tmp_path / "clf")
    clf = load_classifier(tmp_path / "clf", model=lm)
    texts = ["good good film", "bad waste", "it was"]
    p1 = clf.predict_proba(texts)
    d = clf.decision_function(texts)  # two classes: [n], the second class's log-odds, as scikit-learn's
    assert d.shape == (3,)
    np.testing.assert_allclose(1 / (1 + np.exp(-d)), p1[:, 1], rtol=1e-6)
    clf.save(tmp_path / "copy")
    clf2 = load_classifier(tmp_path / "copy", model=lm)
    np.testing.assert_array_equal(p1, clf2.predict_proba(texts))
    files = sorted(p.name for p in (tmp_path / "clf").iterdir())
    assert files == ["coef.npy", "intercept.npy", "manifest.json", "mean.npy", "scale.npy"]
    manifest = json.loads((tmp_path / "clf" / "manifest.json").read_text())
    assert manifest["model"]["weights_sha256"] == lm.weights_sha256
    assert manifest["l_temp"] == max(g["layer"] for g in manifest["groups"])
    # a saved classifier is never silently overwritten
    with pytest.raises(StcError, match="not empty"):
        clf.save(tmp_path / "clf")


def test_load_refuses_mismatched_model_and_tampered_files(binary_store, tmp_path, bert_tokenizer):
    st, lm = binary_store
    fit(st, FitConfig("d", model="tiny-bert", kinds=("hidden",), poolings=("max",), **FAST), out=tmp_path / "clf")
    other = build_tiny("distilbert", bert_tokenizer)
    with pytest.raises(FingerprintMismatchError, match="weights_sha256"):
        load_classifier(tmp_path / "clf", model=other)
    # an array replaced by a pickled object array is refused before numpy could unpickle it
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "clf", bad)
    np.save(bad / "coef.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(StcError, match="checksum"):
        load_classifier(bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    from stcstore.core.fingerprint import file_sha256

    manifest["arrays"]["coef"]["sha256"] = file_sha256(bad / "coef.npy")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StcError, match="plain numeric"):
        load_classifier(bad)
    with pytest.raises(StcError, match="no manifest"):
        load_classifier(tmp_path)


def test_no_validation_split_is_carved_with_a_recorded_seed(tmp_path, bert_tokenizer):
    st, _ = tiny_bert_store(tmp_path, bert_tokenizer, n=150, splits=False)  # every row: split "train"
    res = fit(st, FitConfig("d", model="tiny-bert", kinds=("hidden",), poolings=("mean",), seed=3, **FAST),
              out=tmp_path / "clf")
    assert res.carved_validation and res.n_validation == 30 and res.n_train == 120
    manifest = json.loads((tmp_path / "clf" / "manifest.json").read_text())
    assert manifest["fit"]["carved_validation"] and manifest["fit"]["seed"] == 3
    assert res.n_test == 0 and res.stc["test"]["accuracy"] != res.stc["test"]["accuracy"]  # NaN: no test rows


def test_bad_options_are_clear(binary_store):
    st, _ = binary_store
    with pytest.raises(StcError, match="--metric"):
        FitConfig("d", metric="auc")
    with pytest.raises(StcError, match="η"):
        FitConfig("d", etas=(0.0,))
    with pytest.raises(StcError, match="no feature set"):
        fit(st, FitConfig("d", model="nope"))


# ------------------------------------------------------------------------------------------- memory
def _synthetic_store(root: Path, n_layers: int, n: int = 6000, width: int = 1024) -> None:
    """A store written without a model: n rows, hidden.mean.0..n_layers-1 of `width`."""
    write_synthetic(root, "d", rows=n, layers=n_layers - 1, widths={"hidden": width, "ffn": 8}, kinds=("hidden",),
                    poolings=("mean",))


def _peak_rss(store: Path) -> float:
    code = (
        "import resource, sys, torch; torch.set_num_threads(1)\n"
        "from stcstore.fit import FitConfig, fit\nfrom stcstore.fit.probe import PathConfig\n"
        f"fit({str(store)!r}, FitConfig('d', model='synthetic', kinds=('hidden',), poolings=('mean',), etas=(0.5,), "
        "path=PathConfig(n_lambdas=6, min_ratio=1e-2, patience=2)))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_of_fit_does_not_grow_with_depth(tmp_path):
    _synthetic_store(tmp_path / "shallow", n_layers=2)
    _synthetic_store(tmp_path / "deep", n_layers=8)
    shallow, deep = _peak_rss(tmp_path / "shallow"), _peak_rss(tmp_path / "deep")
    block_mb = 6000 * 1024 * 4 / 2**20  # one dense float32 block of all rows: 23 MB
    # holding every block at once would add 6 blocks (~140 MB). Peak RSS also counts the memory-mapped chunk
    # pages the aggregation touches (file-backed, 18-24 MB more for 6 more layers, measured with 0.1.0 and now),
    # so allow 1.5 blocks: still a tenth of what holding the blocks would add
    assert deep - shallow < 1.5 * block_mb, (shallow, deep)


def test_metrics_equal_scikit_learn():
    """fit's own metrics (kept for speed) equal scikit-learn's, with labels unseen in train (-1) included."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.metrics import log_loss as sk_log_loss

    from stcstore.fit.metrics import log_loss, scores

    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        for n in (1, 7, 200):
            y = rng.integers(-1, k, n)
            pred = rng.integers(0, k, n)
            proba = rng.dirichlet(np.ones(k), n)
            s = scores(y, pred, k)
            assert s["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
            assert s["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0), abs=1e-12)
            seen = y >= 0
            if seen.any():
                assert log_loss(y, proba) == pytest.approx(sk_log_loss(y[seen], proba[seen], labels=range(k)),
                                                           rel=1e-9)


def test_fit_takes_the_store_lock(binary_store, tmp_path):
    """fit reads features and writes STORE/fits: not while another writer (ingest, extract) holds the store."""
    from stcstore.core.atomic import store_lock
    from stcstore.core.errors import StoreLockedError

    st, _ = binary_store
    with store_lock(st, "test holder"):
        with pytest.raises(StoreLockedError, match="test holder"):
            fit(st, FitConfig("d", model="tiny-bert", kinds=("hidden",), poolings=("mean",), **FAST))


def test_newer_formats_are_refused_with_the_version_read(binary_store, tmp_path):
    st, _ = binary_store
    copy = tmp_path / "copy"
    shutil.copytree(st, copy)
    fs_manifest = next((copy / "features" / "dataset=d").glob("fs=*")) / "featureset.json"
    m = json.loads(fs_manifest.read_text())
    m["fingerprint"]["feature_format"] = 99
    fs_manifest.write_text(json.dumps(m))
    with pytest.raises(StcError, match="feature format 99; this stcstore reads format 1"):
        fit(copy, FitConfig("d", model="tiny-bert", **FAST))
    (copy / "store.json").write_text(json.dumps({"format": "stcstore-store", "version": 99}))
    with pytest.raises(StcError, match="format version 99; this stcstore reads version 1"):
        Store(copy).sql("select 1")
    with pytest.raises(StcError, match="format version 99"):
        fit(copy, FitConfig("d", model="tiny-bert", **FAST))


def test_newer_fit_tables_are_refused(binary_store, tmp_path):
    import pyarrow.parquet as pq

    from stcstore.store.store import FIT_TABLES_KEY

    st, _ = binary_store
    copy = tmp_path / "copy"
    shutil.copytree(st, copy)
    fit(copy, FitConfig("d", model="tiny-bert", kinds=("hidden",), poolings=("mean",), **FAST))
    f = next((copy / "fits").rglob("probes.parquet"))
    assert pq.read_schema(f).metadata[FIT_TABLES_KEY] == b"1"
    t = pq.read_table(f)
    pq.write_table(t.replace_schema_metadata({FIT_TABLES_KEY: b"7"}), f)
    with pytest.raises(StcError, match="fit-table format '7'; this stcstore reads format 1"):
        Store(copy).table("probes")


def test_probes_fit_on_a_stratified_row_sample_when_train_is_larger(binary_store, tmp_path):
    """--probe-rows caps the rows of each per-layer probe (a seeded, stratified sample, recorded); the
    aggregated classifier still trains on every train row; under the cap nothing changes, not even the fit id."""
    from stcstore.fit.splits import stratified_sample

    st, _ = binary_store
    base = dict(kinds=("hidden",), poolings=("mean",), **FAST)
    full = fit(st, FitConfig("d", model="tiny-bert", **base))
    capped = fit(st, FitConfig("d", model="tiny-bert", probe_rows=100, **base), out=tmp_path / "c")
    assert (full.n_train, full.n_probe_rows) == (120, 120)
    assert (capped.n_train, capped.n_probe_rows) == (120, 100) and capped.fit_id != full.fit_id
    assert load_classifier(tmp_path / "c").manifest["fit"]["probe_rows"] == 100
    again = fit(st, FitConfig("d", model="tiny-bert", probe_rows=500, **base))
    assert again.fit_id == full.fit_id  # the cap did not apply
    plan = [np.arange(50), np.arange(70)]
    y = np.array([0] * 90 + [1] * 30)
    sub, ys = stratified_sample(plan, y, 40, seed=0)
    assert len(ys) == 40 and (ys == 0).sum() == 30 and sum(len(r) for r in sub) == 40
    assert [list(r) for r in sub] == [sorted(r) for r in sub]  # store order kept
    with pytest.raises(StcError, match="--probe-rows must be at least 100"):
        FitConfig("d", probe_rows=50)


def test_label_names_are_shown_everywhere_and_predictions_keep_the_label(tmp_path, bert_tokenizer):
    """`ingest --label-names 0=negative,1=positive`: fit's result, the saved classifier, the report and the
    explanation records show "negative (0)"; predictions keep "0"; the classifier's fingerprint ignores names."""
    from stcstore.classifier.classifier import Classifier
    from stcstore.core.names import parse_label_names
    from stcstore.report import ReportConfig, report
    from stcstore.score import ScoreConfig, score

    st, lm = tiny_bert_store(tmp_path, bert_tokenizer)
    Store(st).set_label_names("d", parse_label_names("0=negative, 1=positive"))
    res = fit(st, FitConfig("d", model="tiny-bert", kinds=("ffn",), **FAST), out=tmp_path / "clf")
    assert res.label_names == {"0": "negative", "1": "positive"}
    assert "classes negative (0), positive (1)" in res.to_text()
    clf = load_classifier(tmp_path / "clf", model=lm)
    assert clf.label_names_ == {"0": "negative", "1": "positive"} and set(clf.predict(["good film"])) <= {"0", "1"}
    plain = {k: v for k, v in clf.manifest.items() if k != "label_names"}
    assert Classifier(plain, clf.arrays).fingerprint == clf.fingerprint
    rep = report(ReportConfig(str(st), str(tmp_path / "clf"), str(tmp_path / "rep")))
    assert "negative (0)" in (Path(rep.out) / "report.html").read_text()
    out = tmp_path / "pred.parquet"
    score(ScoreConfig((str(tmp_path / "clf"),), str(out), store=str(st), dataset="d", explain="tokens"),
          models={"tiny-bert": lm})
    rec = json.loads((tmp_path / "pred.explain.jsonl").read_text().splitlines()[0])
    assert rec["class_names"] == ["negative (0)", "positive (1)"] and rec["label"] in ("0", "1")
    assert "positive (1)" in (tmp_path / "pred.explain.html").read_text()
    with pytest.raises(StcError, match="is not LABEL=NAME"):
        parse_label_names("0=negative,0=bad")
