"""One L1 probe: standardise with train statistics, walk the regularisation path, pick on validation.

Used for the per-layer probes and for the aggregated STC classifiers alike. Only the train and
validation splits ever reach this module: test is scored later, once, by `fit` for the chosen states.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..classifier.linear import decision, predict_index, probabilities
from ..core.errors import StcError
from .metrics import log_loss, scores
from .solver import L1Logistic, PathPoint


@dataclass(frozen=True)
class PathConfig:
    """How each probe's regularisation path is walked."""

    n_lambdas: int = 20  # path points from lam_max down to lam_max * min_ratio (geometric)
    min_ratio: float = 1e-4
    patience: int = 3  # stop after this many points without a better validation score
    tol: float = 1e-5  # converged when the objective falls by less than this (relative) per iteration


def standardize_(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale X [n, d] float32 in place with its own column mean / std (float64 accumulation).

    Constant columns get scale 1, so they stay exactly zero. Returns (mean [d], scale [d]) float64."""
    mean = X.mean(axis=0, dtype=np.float64)
    var = np.square(X, dtype=np.float64).mean(axis=0) - mean * mean if X.shape[0] else np.zeros(X.shape[1])
    scale = np.sqrt(np.maximum(var, 0.0))
    scale[scale < 1e-8] = 1.0
    X -= mean.astype(np.float32)
    X /= scale.astype(np.float32)
    return mean, scale


def apply_standardization(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """In place for float32 X [n, d]; returns X."""
    X -= mean.astype(np.float32)
    X /= scale.astype(np.float32)
    return X


@dataclass
class PathResult:
    """The validation-chosen point of one path and a row per visited point."""

    chosen: PathPoint
    validation: dict[str, float]
    train: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _key(s: dict[str, float], metric: str) -> tuple[float, float]:
    # higher metric wins; validation log-loss breaks ties (accuracy ties are common on small splits)
    return (round(s[metric], 12), -s["log_loss"])


def fit_path(Xtr: np.ndarray, ytr: np.ndarray, Xva: np.ndarray, yva: np.ndarray, n_classes: int,
             metric: str, cfg: PathConfig = PathConfig(), device: str = "cpu") -> PathResult:
    """Xtr [n, d], Xva [m, d]: standardised float32; ytr, yva: class indices (yva may hold -1). The solver
    runs on `device` (one copy of each matrix there)."""
    # All products run in torch; an idle multi-threaded OpenBLAS pool (numpy's) spinning next to torch's
    # threads made them up to 1.7x slower on 2 cores.
    with threadpool_limits(1, user_api="blas"):
        return _fit_path(Xtr, ytr, Xva, yva, n_classes, metric, cfg, torch.device(device))


def _fit_path(Xtr: np.ndarray, ytr: np.ndarray, Xva: np.ndarray, yva: np.ndarray, n_classes: int,
              metric: str, cfg: PathConfig, device: torch.device) -> PathResult:
    t0 = time.perf_counter()
    solver = L1Logistic(torch.from_numpy(Xtr).to(device), ytr, n_classes, tol=cfg.tol)
    lam_max = solver.lambda_max()
    if not np.isfinite(lam_max) or lam_max <= 0:  # no feature carries any signal (e.g. all constant)
        lam_max = 1e-3
    Xva_t = torch.from_numpy(Xva).to(device)
    rows: list[dict[str, Any]] = []
    best: tuple[tuple[float, float], PathPoint, dict[str, float]] | None = None
    since_best = 0
    prev: PathPoint | None = None
    lam_prev = lam_max
    for i in range(1, cfg.n_lambdas + 1):
        lam = lam_max * cfg.min_ratio ** (i / cfg.n_lambdas)
        t1 = time.perf_counter()
        pt = solver.fit(lam, prev, lam_prev)
        s = _evaluate(Xva_t, yva, pt, n_classes)
        rows.append({"step": i, "lam": lam, "C": pt.C, "n_nonzero": pt.n_nonzero, "objective": pt.objective,
                     "val_accuracy": s["accuracy"], "val_macro_f1": s["macro_f1"], "val_log_loss": s["log_loss"],
                     "iterations": pt.iterations, "seconds": time.perf_counter() - t1})
        if best is None or _key(s, metric) > best[0]:
            best, since_best = (_key(s, metric), pt, s), 0
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
        prev, lam_prev = pt, lam
    if best is None:  # n_lambdas >= 1 visits at least one point
        raise StcError("the regularisation path visited no point; n_lambdas must be at least 1")
    _, chosen, s_val = best
    for r in rows:
        r["chosen"] = r["lam"] == chosen.lam
    train = _evaluate(solver.X, ytr, chosen, n_classes)
    return PathResult(chosen, s_val, train, rows, time.perf_counter() - t0)


def _evaluate(X: torch.Tensor | np.ndarray, y: np.ndarray, pt: PathPoint, n_classes: int) -> dict[str, float]:
    sc = decision(X, pt.coef, pt.intercept)
    out = scores(y, predict_index(sc), n_classes)
    out["log_loss"] = log_loss(y, probabilities(sc))
    return out
