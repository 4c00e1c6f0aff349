"""The probe solver as scikit-learn estimators: `L1LogisticRegression` (binary and multinomial) and
`L1LinearRegression` (the lasso), with the scikit-learn contract: hyper-parameters in `__init__`, data in
`fit(X, y)`, fitted state in attributes ending in `_`, `get_params` / `set_params` / `clone`, so they work in
a `Pipeline` or `GridSearchCV`.

They solve exactly the problem of `fit.solver.L1Logistic` (the path solver the fit runs, with warm starts
along a path of strengths, which is its own internal interface):

    min over W, b of  mean_i loss(x_i W + b, y_i) + lam * sum_jk |W_jk|,   lam = 1 / (n C)

(scikit-learn's `LogisticRegression(l1_ratio=1, C=C)` for classification; for regression the loss is half
the squared error, and `alpha` is scikit-learn's `Lasso(alpha)`). X is used as given (float32): standardise
it first, e.g. in a `Pipeline` with a `StandardScaler`, as the fit does.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .solver import L1Logistic


def _matrix(X: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)


class _L1Base(BaseEstimator):
    def _solve(self, X: np.ndarray, y: np.ndarray, n_classes: int, lam: float) -> None:
        solver = L1Logistic(_matrix(X, self.device), y, n_classes, tol=self.tol, max_iter=self.max_iter)
        pt = solver.fit(lam)
        self.coef_, self.intercept_ = pt.coef, pt.intercept
        self.n_iter_ = pt.iterations
        self.n_nonzero_ = pt.n_nonzero

    def _scores(self, X: np.ndarray) -> np.ndarray:
        """Linear scores: [n] for two classes and regression, [n, K] for K classes."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        z = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        return z[:, 0] if z.shape[1] == 1 else z


class L1LogisticRegression(ClassifierMixin, _L1Base):
    """L1-regularised logistic regression (multinomial for more than two classes), scikit-learn style.

    C: inverse strength, as scikit-learn's (lam = 1 / (n_samples C)). After `fit`: `classes_`, `coef_` [K, d]
    (K = 1 for two classes), `intercept_` [K], `n_iter_`, `n_nonzero_` (features with a non-zero weight)."""

    def __init__(self, C: float = 1.0, *, tol: float = 1e-6, max_iter: int = 2000, device: str = "cpu") -> None:
        self.C = C
        self.tol = tol
        self.max_iter = max_iter
        self.device = device

    def fit(self, X: np.ndarray, y: np.ndarray) -> "L1LogisticRegression":
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"needs samples of at least 2 classes; got one class: {self.classes_[0]!r}")
        if not self.C > 0:
            raise ValueError(f"C must be positive, got {self.C!r}")
        self._solve(X, yi, len(self.classes_), 1.0 / (len(y) * self.C))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """[n] for two classes (the score of classes_[1]), [n, K] for K classes."""
        return self._scores(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = self.decision_function(X)
        if z.ndim == 1:
            p = 1.0 / (1.0 + np.exp(-z))
            return np.stack([1.0 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class L1LinearRegression(RegressorMixin, _L1Base):
    """The lasso, min mean (x w + b - y)^2 / 2 + alpha |w|_1 (scikit-learn's `Lasso(alpha)`), by the same
    solver. After `fit`: `coef_` [1, d], `intercept_` [1], `n_iter_`, `n_nonzero_`."""

    def __init__(self, alpha: float = 1.0, *, tol: float = 1e-6, max_iter: int = 2000, device: str = "cpu") -> None:
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.device = device

    def fit(self, X: np.ndarray, y: np.ndarray) -> "L1LinearRegression":
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True)
        if not self.alpha > 0:
            raise ValueError(f"alpha must be positive, got {self.alpha!r}")
        self._solve(X, np.asarray(y, dtype=np.float64), 0, float(self.alpha))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._scores(X)
