"""Regression targets (`fit --task regression`): the lasso path against scikit-learn's optimum, the metrics
against scikit-learn / scipy, an end-to-end fit whose saved classifier predicts values (from texts, from
stored features and in `score`), and the refusals: labels that are not numbers, numeric labels without
--task, classification metrics for values."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stcstore import Store, load_classifier
from stcstore.core.errors import StcError
from stcstore.features import ExtractConfig, extract
from stcstore.fit import FitConfig, fit
from stcstore.fit.metrics import regression_scores
from stcstore.fit.probe import standardize_
from stcstore.fit.solver import L1Logistic
from stcstore.ingest import IngestConfig, ingest
from stcstore.score import ScoreConfig, score
from stcstore.store.query import run_query

from .conftest import FAST, FILLER, WORDS, build_tiny, cli, write_jsonl


def _value_corpus(path: Path, n: int, seed: int = 0, bad: dict[int, object] | None = None) -> Path:
    """Texts whose value grows with the number of positive words (0..3) among neutral and negative ones."""
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        k = i % 4
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))] + [rng.choice(WORDS["1"]) for _ in range(k)]
        words += [rng.choice(WORDS["0"]) for _ in range(3 - k)]
        rng.shuffle(words)
        value = round(0.1 + 0.25 * k + rng.uniform(-0.05, 0.05), 4)
        recs.append({"id": f"r{i}", "text": " ".join(words), "label": (bad or {}).get(i, value),
                     "split": ("train", "train", "train", "validation", "test")[i % 5]})
    return write_jsonl(path, recs)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, bert_tokenizer):
    tmp = tmp_path_factory.mktemp("regression")
    st = tmp / "st"
    ingest(st, [_value_corpus(tmp / "c.jsonl", 300)], IngestConfig("d", split_field="split"))
    lm = build_tiny("bert", bert_tokenizer)
    extract(st, ExtractConfig("d", model="tiny-bert", batch_size=16), lm=lm)
    res = fit(st, FitConfig("d", model="tiny-bert", task="regression", **FAST), out=tmp / "clf")
    return st, lm, tmp / "clf", res


def test_statistics_of_a_value_target_are_per_split(fitted):
    """Labels that are values would make a statistics group of nearly every text: per split instead."""
    st = fitted[0]
    fs = Store(st).feature_sets("d")[0]
    assert fs.manifest["stats_by_label"] is False
    rows = run_query(st, "select split, label, count(*) as n from neuron_stats group by all").rows
    assert {r["split"] for r in rows} == {"train", "validation", "test"} and all(r["label"] is None for r in rows)


def test_report_of_a_regression_classifier(fitted, tmp_path):
    st, _, path, _ = fitted
    r = cli("report", "--store", str(st), "--classifier", str(path), "--out", str(tmp_path / "rep"), "--json")
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "a regression target" in page
    neurons = pq.read_table(tmp_path / "rep" / "neurons.parquet").to_pylist()
    assert {n["toward"] for n in neurons} <= {"higher", "lower", None} and neurons
    # predicted vs true and residuals on validation and test, agreeing with the fit's own test score
    assert "Predicted vs true values" in page
    for split in ("validation", "test"):
        assert f'aria-label="{split}: residuals' in page and f'aria-label="{split}: predicted vs true' in page
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    test = next(p for p in doc["regression"] if p["split"] == "test")
    assert len(test["true"]) == 60
    assert regression_scores(np.array(test["true"]), np.array(test["predicted"]))["r2"] == \
        pytest.approx(fitted[3].stc["test"]["r2"], abs=1e-9)
    np.testing.assert_allclose(np.array(test["true"]) - test["predicted"], test["residual"], atol=1e-12)


def test_lasso_path_point_is_scikit_learns_optimum():
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 30)).astype(np.float32)
    y = X[:, :4] @ np.array([0.5, -0.3, 0.2, 0.1]) + 0.3 + 0.1 * rng.standard_normal(400)
    standardize_(X)
    solver = L1Logistic(__import__("torch").from_numpy(X), y, 0, tol=1e-10, max_iter=5000)
    lam = 0.05 * solver.lambda_max()
    pt = solver.fit(lam)
    ref = Lasso(alpha=lam, tol=1e-12, max_iter=100_000).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(pt.coef[0], ref.coef_, atol=2e-4)
    assert pt.intercept[0] == pytest.approx(ref.intercept_, abs=2e-4)
    # lambda_max: every weight zero at it, some non-zero just below
    assert solver.fit(solver.lambda_max() * 1.0001).n_nonzero == 0
    assert solver.fit(solver.lambda_max() * 0.9).n_nonzero > 0


def test_regression_metrics_equal_scikit_learn_and_scipy():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(1)
    t = np.round(rng.uniform(0, 1, 200), 2)  # ties, as intensities have
    p = np.round(t + 0.2 * rng.standard_normal(200), 2)
    s = regression_scores(t, p)
    assert s["r2"] == pytest.approx(r2_score(t, p), abs=1e-12)
    assert s["mae"] == pytest.approx(mean_absolute_error(t, p), abs=1e-12)
    assert s["mse"] == pytest.approx(mean_squared_error(t, p), abs=1e-12)
    assert s["pearson"] == pytest.approx(pearsonr(t, p)[0], abs=1e-12)
    assert s["spearman"] == pytest.approx(spearmanr(t, p)[0], abs=1e-12)
    assert regression_scores(t, np.full(200, 0.5))["pearson"] == 0.0  # a constant prediction: no correlation


def test_fit_regression_end_to_end(fitted):
    st, lm, path, res = fitted
    assert res.classes == [] and res.metric == "r2"
    for part in (res.baseline, res.best_probe, res.stc):
        assert set(part["validation"]) == set(part["test"]) == {"r2", "mae", "pearson", "spearman"}
    assert res.stc["validation"]["r2"] > 0.5 and res.stc["test"]["pearson"] > 0.7
    assert res.stc["validation"]["r2"] >= res.best_probe["validation"]["r2"] - 0.05
    assert "regression target" in res.to_text()
    clf = load_classifier(path, model=lm)
    assert clf.is_regression and clf.manifest["task"] == "regression" and clf.coef_.shape[0] == 1
    ids, X = clf.store_features(Store(st), "d", "test")
    stored = clf.predict_features(X)
    texts = [r["text"] for r in map(json.loads, Path(st.parent / "c.jsonl").read_text().splitlines())
             if r["id"] in set(ids.tolist())]
    assert stored.dtype == np.float64 and len(stored) == 60
    # the same values from the texts (features recomputed through the model; float16 storage rounding)
    by_id = dict(zip(ids.tolist(), stored))
    order = [r["id"] for r in map(json.loads, Path(st.parent / "c.jsonl").read_text().splitlines())
             if r["id"] in by_id]
    np.testing.assert_allclose(clf.predict(texts), [by_id[i] for i in order], atol=1e-4)
    with pytest.raises(StcError, match="no class probabilities"):
        clf.predict_proba(texts[:2])
    again = load_classifier(path, model=lm)  # saved then loaded: identical values
    np.testing.assert_array_equal(again.predict(texts), clf.predict(texts))


def test_score_writes_a_value_per_text(fitted, tmp_path):
    st, lm, path, _ = fitted
    texts = ["great superb brilliant film", "awful dull waste", "the film was good and bad"]
    src = write_jsonl(tmp_path / "new.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(texts)])
    res = score(ScoreConfig((str(path),), str(tmp_path / "p.parquet"), input=str(src)), models={"tiny-bert": lm})
    t = pq.read_table(tmp_path / "p.parquet")
    assert res.scored_texts == 3 and t.column("label").null_count == 3 and t.column("probabilities").null_count == 3
    values = np.array(t.column("value").to_pylist())
    np.testing.assert_allclose(values, load_classifier(path, model=lm).predict(texts), atol=1e-9)
    assert values[0] > values[1]  # more positive words, higher value


def test_unusable_labels_are_refused_with_the_rows_named(tmp_path, bert_tokenizer, fitted):
    st = tmp_path / "st"
    ingest(st, [_value_corpus(tmp_path / "c.jsonl", 100, bad={0: "high", 5: float("nan")})],
           IngestConfig("d", split_field="split"))
    extract(st, ExtractConfig("d", model="tiny-bert", batch_size=16), lm=build_tiny("bert", bert_tokenizer))
    with pytest.raises(StcError, match=r"2 labelled rows of split 'train'.*id 'r0' \('high'\).*id 'r5' \('nan'\)"):
        fit(st, FitConfig("d", model="tiny-bert", task="regression", **FAST))
    # numeric labels with many values and no --task: said, with the option to use
    st = fitted[0]
    r = cli("fit", "--store", str(st), "--dataset", "d", "--model", "tiny-bert")
    assert r.returncode == 1 and "--task regression" in r.stderr and "traceback" not in r.stderr.lower()
    r = cli("fit", "--store", str(st), "--dataset", "d", "--metric", "r2")
    assert r.returncode == 1 and "--metric r2 is for a regression target" in r.stderr
    r = cli("fit", "--store", str(st), "--dataset", "d", "--task", "regression", "--metric", "accuracy")
    assert r.returncode == 1 and "--metric must be one of r2, mae, pearson, spearman" in r.stderr


def test_mae_is_minimised(fitted, tmp_path):
    st, _, _, by_r2 = fitted
    by_mae = fit(st, FitConfig("d", model="tiny-bert", task="regression", metric="mae", **FAST))
    assert by_mae.metric == "mae" and by_mae.fit_id != by_r2.fit_id
    # the chosen aggregates (an ensemble's members) hold the lowest validation MAE of all those tried (and the
    # r2 fit's the highest R²)
    for res, col, best in ((by_mae, "val_mae", "min"), (by_r2, "val_r2", "max")):
        q = run_query(st, f"select {best}({col}) as b, {best}(case when chosen then {col} end) as c, "
                          f"count(*) as n, count(val_accuracy) as acc from aggregates where fit_id = '{res.fit_id}'")
        row = q.rows[0]
        assert row["n"] > 3 and row["acc"] == 0 and row["c"] == pytest.approx(row["b"], abs=1e-12)


def test_token_explanations_add_up_to_the_predicted_value(fitted, tmp_path):
    """A mean-pooled regression classifier: intercept + the tokens' contributions = the text's value."""
    st, lm, path, _ = fitted
    clf = load_classifier(path, model=lm)
    if clf.manifest["pooling"] != "mean":  # the fixture's choice: refit on mean pooling for this check
        fit(st, FitConfig("d", model="tiny-bert", task="regression", poolings=("mean",), **FAST),
            out=tmp_path / "mean")
        path = tmp_path / "mean"
    texts = ["great superb brilliant film", "awful dull waste", "the film was good and bad"]
    src = write_jsonl(tmp_path / "new.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(texts)])
    score(ScoreConfig((str(path),), str(tmp_path / "p.parquet"), input=str(src), explain="tokens"),
          models={"tiny-bert": lm})
    recs = [json.loads(x) for x in (tmp_path / "p.explain.jsonl").read_text().splitlines()]
    values = pq.read_table(tmp_path / "p.parquet").column("value").to_pylist()
    assert len(recs) == 3
    for rec, v in zip(recs, values):
        total = rec["intercept"] + sum(t["contribution"] for t in rec["tokens"])
        assert total == pytest.approx(v, abs=1e-3)  # float16 storage of each token's values (measured: 3e-4)
        assert rec["value"] == pytest.approx(v, abs=1e-6)
    assert "predicted value" in (tmp_path / "p.explain.html").read_text()


def test_consolidation_head_on_a_value_target(fitted, tmp_path):
    """The consolidation head also predicts values: chosen on validation R², saved, and the saved head's
    predictions give the fit's test R²; its token explanations carry values but no (non-additive)
    contributions."""
    st, lm, _, _ = fitted
    res = fit(st, FitConfig("d", model="tiny-bert", task="regression", aggregator="consolidation",
                            poolings=("mean",), **FAST), out=tmp_path / "kc")
    assert res.chosen["aggregator"] == "consolidation" and set(res.aggregators) == {"lr", "consolidation"}
    assert res.stc["validation"]["r2"] > 0.3
    clf = load_classifier(tmp_path / "kc", model=lm)
    assert clf.is_regression and clf.head == "consolidation"
    ids, X = clf.store_features(Store(st), "d", "test")
    labels = dict(zip(*Store(st).texts("d", columns=["id", "label"]).to_pydict().values()))
    got = regression_scores(np.array([float(labels[i]) for i in ids]), clf.predict_features(X))
    assert got["r2"] == pytest.approx(res.stc["test"]["r2"], abs=1e-9)
    src = write_jsonl(tmp_path / "new.jsonl", [{"id": "n0", "text": "great superb brilliant film"}])
    score(ScoreConfig((str(tmp_path / "kc"),), str(tmp_path / "p.parquet"), input=str(src), explain="tokens"),
          models={"tiny-bert": lm})
    rec = json.loads((tmp_path / "p.explain.jsonl").read_text().splitlines()[0])
    assert rec["tokens"] and all(t["contribution"] is None for t in rec["tokens"])
    assert rec["value"] == pytest.approx(pq.read_table(tmp_path / "p.parquet").column("value")[0].as_py(), abs=1e-5)



def _value_store(tmp: Path, tokenizer, name: str, relabel=lambda r: r["label"], n: int = 200) -> Path:
    """A store of the value corpus, each record's label replaced by relabel(record)."""
    src = _value_corpus(tmp / f"{name}.jsonl", n)
    recs = [json.loads(line) for line in src.read_text().splitlines()]
    for r in recs:
        r["label"] = relabel(r)
    write_jsonl(src, recs)
    st = tmp / name
    ingest(st, [src], IngestConfig("d", split_field="split"))
    extract(st, ExtractConfig("d", model="tiny-bert", batch_size=16), lm=build_tiny("bert", tokenizer))
    return st


def test_extreme_and_odd_labels_are_refused_by_name(tmp_path, bert_tokenizer):
    """1e308 used to crash fit (exit 2) after probes ran 30x slower; "1_0" and "١٢" passed as 10 and 12."""
    odd = {"r0": "1e308", "r1": "-1e308", "r2": "1_0", "r5": "١٢", "r6": "0x10"}
    st = _value_store(tmp_path, bert_tokenizer, "odd", lambda r: odd.get(r["id"], r["label"]))
    r = cli("fit", "--store", st, "--dataset", "d", "--model", "tiny-bert", "--task", "regression")
    assert r.returncode == 1, r.stderr
    assert ("5 labelled rows of split 'train'" in r.stderr and "id 'r0' ('1e308')" in r.stderr
            and "id 'r2' ('1_0')" in r.stderr and "id 'r5' ('١٢')" in r.stderr and "within ±1e+30" in r.stderr)


def test_a_target_of_any_magnitude_fits_as_well_as_one_in_0_1(tmp_path, bert_tokenizer):
    """Targets in the billions used to give a constant model (R² 0) without a word: float32 had no digits
    left for their variation. They are fitted on a working scale now and mapped back."""
    cfg = FitConfig("d", model="tiny-bert", task="regression", **FAST)
    base = fit(_value_store(tmp_path, bert_tokenizer, "unit"), cfg)
    for scale, offset in ((1e9, 0.0), (1.0, 1e6), (1e-3, 0.0)):
        name = f"s{scale:g}-{offset:g}"
        st = _value_store(tmp_path, bert_tokenizer, name, lambda r: r["label"] * scale + offset)
        res = fit(st, cfg, out=tmp_path / f"clf-{name}")
        assert res.stc["test"]["r2"] > 0.8 and abs(res.stc["test"]["r2"] - base.stc["test"]["r2"]) < 0.05, name
        assert res.stc["test"]["mae"] == pytest.approx(base.stc["test"]["mae"] * scale, rel=0.5)
        clf = load_classifier(tmp_path / f"clf-{name}")
        _, X = clf.store_features(Store(st), "d", "test")
        pred = clf.predict_features(X)
        assert abs(float(np.median(pred)) - (0.5 * scale + offset)) < 0.3 * scale  # in the target's own units


def test_a_split_whose_targets_are_all_equal_is_refused(tmp_path, bert_tokenizer):
    st = _value_store(tmp_path, bert_tokenizer, "flat", lambda r: 0.5 if r["split"] == "validation" else r["label"])
    r = cli("fit", "--store", st, "--dataset", "d", "--model", "tiny-bert", "--task", "regression")
    assert r.returncode == 1 and "split 'validation' of dataset 'd' has the value 0.5" in r.stderr, r.stderr
