"""Fit at scale: the local λ search of the aggregates, the memory budget (sampled search, streamed refit)
and peak memory that does not grow with the number of train rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stcstore import Store, load_classifier
from stcstore.features.synthetic import write_synthetic
from stcstore.fit import FitConfig, fit
from stcstore.fit.probe import PathConfig, fit_around, fit_path, standardize_, apply_standardization
from stcstore.fit.design import ColumnDesign, DenseDesign
from stcstore.fit.solver import L1Logistic
from stcstore.fit.spill import ChunkedDesign

QUICK = PathConfig(n_lambdas=8, min_ratio=1e-2)


def _problem(n=600, d=40, k=2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X[:, :5] += y[:, None].astype(np.float32) * 0.8
    return X, y


def _spilled(tmp_path: Path, X16: np.ndarray, sizes: list[int]) -> list[tuple[Path, int]]:
    files, r0 = [], 0
    for i, s in enumerate(sizes):
        p = tmp_path / f"rows-{i}.bin"
        X16[r0:r0 + s].tofile(p)
        files.append((p, s))
        r0 += s
    return files


def test_chunked_design_computes_what_the_dense_one_does(tmp_path):
    X, _ = _problem()
    X16 = X.astype(np.float16)
    dense = X16.astype(np.float32)
    mean, scale = standardize_(dense)
    chunked = ChunkedDesign(_spilled(tmp_path, X16, [250, 250, 100]), 40, np.float16, mean, scale)
    full = DenseDesign(torch.from_numpy(dense))
    A = torch.tensor([3, 0, 17, 39])
    for a, b in ((chunked, full), (chunked.select(A), full.select(A)), (chunked.select(A).select(torch.tensor([1, 3])),
                                                                           full.select(A).select(torch.tensor([1, 3])))):
        Wt, bias = torch.randn(3, a.d), torch.randn(3)
        R = torch.randn(600, 3)
        assert (a.n, a.d) == (b.n, b.d)
        torch.testing.assert_close(a.linear(Wt, bias), b.linear(Wt, bias))  # row-wise: chunking cannot change it
        torch.testing.assert_close(a.rtx(R), b.rtx(R), rtol=1e-5, atol=1e-4)  # a sum over rows: order differs
    coef, icpt = np.random.default_rng(1).standard_normal((1, 40)), np.zeros(1)
    np.testing.assert_allclose(chunked.decision(coef, icpt), full.decision(coef, icpt), rtol=1e-6, atol=1e-6)


def test_solver_on_chunks_finds_the_in_memory_solution(tmp_path):
    X, y = _problem(k=3)
    X16 = X.astype(np.float16)
    dense = X16.astype(np.float32)
    mean, scale = standardize_(dense)
    chunked = ChunkedDesign(_spilled(tmp_path, X16, [200, 200, 200]), 40, np.float16, mean, scale)
    a, b = L1Logistic(chunked, y, 3, tol=1e-8), L1Logistic(torch.from_numpy(dense), y, 3, tol=1e-8)
    assert a.lambda_max() == pytest.approx(b.lambda_max(), rel=1e-5)
    lam = 0.05 * b.lambda_max()
    pa, pb = a.fit(lam), b.fit(lam)
    np.testing.assert_allclose(pa.coef, pb.coef, atol=2e-4)
    assert pa.objective == pytest.approx(pb.objective, rel=1e-6)


def test_column_view_computes_what_a_copy_of_its_columns_does():
    """The aggregates solve on a view of the gathered block (no copy per aggregate): the same products and
    the same path as on a contiguous copy of the columns."""
    X, y = _problem(k=3)
    mean, scale = standardize_(X)
    cols = np.array([0, 1, 2, 7, 9, 30, 31])  # scattered, and short of the block's last column
    view, copy = ColumnDesign(torch.from_numpy(X), cols), DenseDesign(torch.from_numpy(np.ascontiguousarray(X[:, cols])))
    assert (view.n, view.d) == (copy.n, copy.d) and len(view.runs) == 4  # [0-2] [7] [9] [30-31]
    assert all(Xr.untyped_storage().data_ptr() == view.X_all.untyped_storage().data_ptr() for _, Xr in view.runs)
    A = torch.tensor([4, 0, 2])
    for a, b in ((view, copy), (view.select(A), copy.select(A)), (view.select(torch.arange(7)), copy)):
        Wt, bias, R = torch.randn(3, a.d), torch.randn(3), torch.randn(600, 3)
        torch.testing.assert_close(a.linear(Wt, bias), b.linear(Wt, bias), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.rtx(R), b.rtx(R), rtol=1e-5, atol=1e-4)
    coef, icpt = np.random.default_rng(1).standard_normal((3, len(cols))), np.zeros(3)
    np.testing.assert_allclose(view.decision(coef, icpt), copy.decision(coef, icpt), rtol=1e-5, atol=1e-5)
    Xva = np.ascontiguousarray(X[:100, cols])
    a = fit_path(view, y, Xva, y[:100], 3, "accuracy", QUICK)
    b = fit_path(np.ascontiguousarray(X[:, cols]), y, Xva, y[:100], 3, "accuracy", QUICK)
    # the same choice; the products run in another order (strided runs vs one contiguous block), and the
    # solver stops at an objective within 1e-4 (relative) of its optimum, so weights and log-loss agree to
    # that precision, not to the last bits (under ATEN_CPU_CAPABILITY=avx2: 3e-4 on the log-loss)
    assert a.step == b.step and a.validation["accuracy"] == b.validation["accuracy"]
    assert a.validation == pytest.approx(b.validation, rel=2e-3)
    np.testing.assert_allclose(a.chosen.coef, b.chosen.coef, atol=5e-3)


def test_local_search_from_the_optimum_stays_there():
    """Started at a full path's choice (its own weights), the search around it finds the same strength."""
    X, y = _problem(n=800)
    Xtr, Xva, ytr, yva = X[:500].copy(), X[500:].copy(), y[:500], y[500:]
    mean, scale = standardize_(Xtr)
    apply_standardization(Xva, mean, scale)
    full = fit_path(Xtr, ytr, Xva, yva, 2, "accuracy", QUICK)
    local = fit_around(Xtr, ytr, Xva, yva, 2, "accuracy", QUICK, "cpu", full.lam_top, full.chosen, full.step)
    assert local.step == full.step and local.validation["accuracy"] == full.validation["accuracy"]
    assert len(local.rows) < len(full.rows)  # fewer points than the full path
    assert [r["step"] for r in local.rows] == sorted(r["step"] for r in local.rows)


def test_memory_budget_searches_a_sample_and_refits_on_every_row(tmp_path):
    st = tmp_path / "st"
    write_synthetic(st, "d", rows=3000, layers=2, widths={"hidden": 160, "ffn": 8}, kinds=("hidden",),
                    poolings=("mean",), signal=6.0, shared=0.0, rows_per_chunk=700)  # dense probes: many neurons
    base = dict(kinds=("hidden",), poolings=("mean",), etas=(0.5, 1.0), path=QUICK)
    free = fit(st, FitConfig("d", model="synthetic", **base), out=tmp_path / "free")
    assert free.n_search_rows == free.n_train == 2250 and not any("memory budget" in m for m in free.messages)
    same = fit(st, FitConfig("d", model="synthetic", memory_budget_mb=1000, **base))
    assert same.fit_id == free.fit_id  # a budget that does not apply does not change the fit (nor its id)
    # 1 MB holds fewer than 2,250 rows of the neurons η 1.0 keeps in layers 0-2 (> 117): the search gets a sample
    tight = fit(st, FitConfig("d", model="synthetic", memory_budget_mb=1, **base), out=tmp_path / "tight")
    assert tight.fit_id != free.fit_id
    assert tight.n_search_rows < tight.n_train == 2250
    assert any("refitted on all 2,250 train rows" in m for m in tight.messages)
    assert not list((st / "fits").glob(".tmp-*"))  # the spill is gone
    assert abs(tight.stc["validation"]["accuracy"] - free.stc["validation"]["accuracy"]) < 0.03
    # the saved classifier is the refit on every row: its scores of the validation rows are what fit reported
    clf = load_classifier(tmp_path / "tight")
    assert clf.manifest["fit"]["search_rows"] == tight.n_search_rows
    _, X = clf.store_features(Store(st), "d", "validation")
    _, _, labels = Store(st).matrix("d", "synthetic", "hidden", "mean", 0, "validation")
    pred = clf.classes_[clf.predict_proba_features(X).argmax(axis=1)]
    assert (pred == labels).mean() == pytest.approx(tight.stc["validation"]["accuracy"])


def _fit_rss(store: Path, budget: int, options: str = "probe_rows=5000") -> dict:
    """Peak RSS (MB) of a fit of hidden.mean in its own process, with its train, validation and search rows;
    `options`: more FitConfig arguments."""
    code = (
        "import json, resource, sys, torch; torch.set_num_threads(1)\n"
        "from stcstore.fit import FitConfig, fit\nfrom stcstore.fit.probe import PathConfig\n"
        f"r = fit({str(store)!r}, FitConfig('d', model='synthetic', kinds=('hidden',), poolings=('mean',), "
        f"etas=(0.5,), {options}, memory_budget_mb={budget}, path=PathConfig(n_lambdas=6, min_ratio=1e-2)))\n"
        "print(json.dumps({'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
        "'search': r.n_search_rows, 'train': r.n_train, 'validation': r.n_validation}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_of_fit_does_not_grow_with_train_rows(tmp_path):
    """100k vs 400k rows (hidden.mean of 3 layers x 256): the aggregate's train matrix alone would grow by
    300k x 3 x 256 x 4 B = 880 MB (at η 0.5 about half of it); with a 16 MB budget peak RSS must stay flat.
    The search's train sample is the same in both, less half the validation rows the larger store adds (the
    budget holds the sample twice and the validation rows once: `Fitter.budget_rows`)."""
    sizes = (100_000, 400_000)
    for n in sizes:
        write_synthetic(tmp_path / f"s{n}", "d", rows=n, layers=2, widths={"hidden": 256, "ffn": 8},
                        kinds=("hidden",), poolings=("mean",), splits=(0.9, 0.02), rows_per_chunk=20_000)
    small, large = (_fit_rss(tmp_path / f"s{n}", 16) for n in sizes)
    assert small["train"] == 90_000 and large["train"] == 360_000
    assert small["search"] < small["train"]
    assert large["search"] == small["search"] - (large["validation"] - small["validation"]) // 2
    # left to grow: labels, ids and per-row solver vectors, ~100 bytes a row (30 MB for 300k rows)
    assert large["rss"] - small["rss"] < 60, (small, large)


def test_a_large_validation_split_is_searched_on_a_sample_and_compared_on_every_row(tmp_path):
    """--val-rows: the searches score a stratified sample of validation; every reported validation score (and so
    every choice between candidates) is the score on every validation row."""
    st = tmp_path / "st"
    write_synthetic(st, "d", rows=3000, layers=2, widths={"hidden": 24, "ffn": 8}, kinds=("hidden",),
                    poolings=("mean",), splits=(0.3, 0.5), rows_per_chunk=400)  # 900 train, 1500 validation
    base = dict(model="synthetic", kinds=("hidden",), poolings=("mean",), etas=(0.5, 1.0), path=QUICK)
    whole = fit(st, FitConfig("d", **base))
    assert whole.fit_id == fit(st, FitConfig("d", val_rows=None, **base)).fit_id  # under the cap: nothing changes
    sampled = fit(st, FitConfig("d", val_rows=300, **base), out=tmp_path / "clf")
    assert sampled.fit_id != whole.fit_id and sampled.n_validation == 1500
    assert any("sample of 300 (--val-rows)" in m for m in sampled.messages)
    # the chosen classifier's reported validation accuracy is its accuracy on all 1,500 validation rows
    clf = load_classifier(tmp_path / "clf")
    _, X = clf.store_features(Store(st), "d", "validation")
    _, _, labels = Store(st).matrix("d", "synthetic", "hidden", "mean", 0, "validation")
    pred = clf.classes_[clf.predict_proba_features(X).argmax(axis=1)]
    assert len(labels) == 1500
    assert (pred == labels).mean() == pytest.approx(sampled.stc["validation"]["accuracy"])
    assert abs(sampled.stc["validation"]["accuracy"] - whole.stc["validation"]["accuracy"]) < 0.03


@pytest.mark.slow
def test_peak_memory_of_fit_does_not_grow_with_validation_rows(tmp_path):
    """100k vs 400k rows, 70 % of them validation (hidden.mean of 3 layers x 256): held whole, each probe's
    validation matrix would grow by 210k x 256 x 4 B = 215 MB and the aggregate's by up to 645 MB; searched on
    a 5,000-row sample (compared on every row, chunk by chunk) with a 16 MB budget, peak RSS stays flat."""
    sizes = (100_000, 400_000)
    for n in sizes:
        write_synthetic(tmp_path / f"s{n}", "d", rows=n, layers=2, widths={"hidden": 256, "ffn": 8},
                        kinds=("hidden",), poolings=("mean",), splits=(0.2, 0.7), rows_per_chunk=20_000)
    small, large = (_fit_rss(tmp_path / f"s{n}", 16, "workers=1, val_rows=5000") for n in sizes)
    assert small["validation"] == 70_000 and large["validation"] == 280_000
    assert large["rss"] - small["rss"] < 60, (small, large)
