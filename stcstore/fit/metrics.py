"""Classification metrics (accuracy, macro-F1, log-loss) on class indices, and regression metrics (R², MAE,
Pearson, Spearman, MSE) on values; `--metric` picks the selection one.

They equal scikit-learn's `accuracy_score`, `f1_score(average="macro")` and `log_loss` (tested), but are
written out here: a fit evaluates thousands of path points, and scikit-learn's input validation costs about
2 ms a call, several seconds per fit."""

from __future__ import annotations

import numpy as np

from ..core.names import METRICS, REGRESSION_METRICS


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """y_true, y_pred: [n] class indices (y_true may hold -1 for a label unseen in training: always wrong).

    macro_f1 averages the F1 of the classes present in y_true or y_pred, as scikit-learn does."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    size = n_classes + 1  # the last bin collects unseen labels
    t = np.where(y_true < 0, n_classes, y_true)
    tp = np.bincount(t[t == y_pred], minlength=size)
    support = np.bincount(t, minlength=size)
    predicted = np.bincount(y_pred, minlength=size)
    present = (support + predicted) > 0
    denom = support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return {"accuracy": float((t == y_pred).mean()), "macro_f1": float(f1[present].mean())}


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class; proba: [n, n_classes]. Unseen labels are skipped."""
    y = np.asarray(y_true, dtype=np.int64)
    keep = y >= 0
    if not keep.any():
        return float("nan")
    p = proba[np.flatnonzero(keep), y[keep]]
    return float(-np.log(np.clip(p, 1e-15, 1.0)).mean())


def reported(s: dict[str, float]) -> dict[str, float]:
    """The metrics a fit reports of a score dict (classification or regression; without the tie-breaking
    log-loss / MSE)."""
    return {m: s[m] for m in (REGRESSION_METRICS if "r2" in s else METRICS)}


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R² (scikit-learn's r2_score), MAE, Pearson and Spearman correlation (scipy's) and MSE of values [n].
    A constant prediction has no correlation: Pearson and Spearman are 0 then (not NaN), so that a
    regularisation path's all-zero start ranks below any informative point."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.size == 0:
        return {m: float("nan") for m in ("r2", "mae", "pearson", "spearman", "mse")}
    err = p - t
    mse = float(np.mean(err * err))
    var = float(np.var(t))
    return {"r2": 1.0 - mse / var if var > 0 else 0.0, "mae": float(np.mean(np.abs(err))),
            "pearson": _corr(t, p), "spearman": _corr(_ranks(t), _ranks(p)), "mse": mse}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    from scipy.stats import rankdata  # here: scipy.stats costs 0.5 s to import, in every fit worker process

    return rankdata(x, method="average")
