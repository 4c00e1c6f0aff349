"""The probe solver as scikit-learn estimators: the whole scikit-learn estimator contract (its own check
suite), and the same optimum as scikit-learn's L1 models and as the path solver the fit runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso, LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from stcstore.fit import L1LinearRegression, L1LogisticRegression
from stcstore.fit.solver import L1Logistic


@parametrize_with_checks([L1LogisticRegression(C=1.0), L1LinearRegression(alpha=0.01)])
def test_the_scikit_learn_estimator_contract(estimator, check):
    check(estimator)


def _data(n_classes: int, n: int = 300, d: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = np.zeros((d, max(n_classes, 1)))
    W[:4] = rng.standard_normal((4, W.shape[1])) * 2
    z = X @ W
    if n_classes == 0:
        return X, z[:, 0] + 0.3 * rng.standard_normal(n)
    y = np.array([rng.choice(n_classes, p=np.exp(r) / np.exp(r).sum()) for r in z])
    return X, np.array(["neg", "pos", "mid"])[y] if n_classes <= 3 else y


@pytest.mark.parametrize("n_classes", [2, 3])
def test_same_optimum_as_scikit_learn_and_the_path_solver(n_classes):
    X, y = _data(n_classes)
    ours = L1LogisticRegression(C=0.05, tol=1e-9).fit(X, y)
    theirs = LogisticRegression(l1_ratio=1.0, solver="saga", C=0.05, max_iter=20000, tol=1e-10).fit(X, y)
    assert list(ours.classes_) == list(theirs.classes_)
    lam = 1 / (len(y) * 0.05)

    def objective(m):
        z = np.asarray(X @ m.coef_.T + m.intercept_)
        yi = np.searchsorted(m.classes_, y)
        loss = (np.mean(np.logaddexp(0, z[:, 0]) - yi * z[:, 0]) if n_classes == 2 else
                np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), yi]))
        return loss + lam * np.abs(m.coef_).sum()

    assert objective(ours) <= objective(theirs) + 1e-4
    assert (ours.predict(X) == theirs.predict(X)).mean() > 0.97
    np.testing.assert_allclose(ours.predict_proba(X).sum(1), 1.0, rtol=1e-12)
    # the estimator is the fit's own solver, not a second implementation
    pt = L1Logistic(torch.from_numpy(X.astype(np.float32)), np.searchsorted(ours.classes_, y), n_classes,
                    tol=1e-9).fit(lam)
    np.testing.assert_array_equal(pt.coef, ours.coef_)


def test_the_lasso_matches_scikit_learn():
    X, y = _data(0)
    ours = L1LinearRegression(alpha=0.05, tol=1e-10).fit(X, y)
    theirs = Lasso(alpha=0.05, tol=1e-10, max_iter=100000).fit(X, y)

    def objective(coef, b):
        return 0.5 * np.mean((X @ np.ravel(coef) + b - y) ** 2) + 0.05 * np.abs(coef).sum()

    assert objective(ours.coef_, ours.intercept_[0]) <= objective(theirs.coef_, theirs.intercept_) + 1e-5
    assert set(np.flatnonzero(ours.coef_[0])) == set(np.flatnonzero(theirs.coef_))


def test_it_works_in_a_pipeline_and_a_grid_search():
    X, y = _data(2, n=200)
    search = GridSearchCV(make_pipeline(StandardScaler(), L1LogisticRegression()),
                          {"l1logisticregression__C": [0.01, 1.0]}, cv=3).fit(X, y)
    assert search.best_estimator_[-1].n_nonzero_ <= X.shape[1] and search.score(X, y) > 0.8
