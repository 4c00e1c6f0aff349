"""One L1 probe: standardise with train statistics, walk the regularisation path, pick on validation.

Used for the per-layer probes and for the aggregated STC classifiers alike. Only the train and
validation splits ever reach this module: test is scored later, once, by `fit` for the chosen states.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ..core.threads import blas_one_thread

from ..classifier.linear import predict_index, probabilities
from ..core.errors import StcError
from .metrics import log_loss, regression_scores, scores
from .design import DenseDesign
from .solver import L1Logistic, PathPoint

if TYPE_CHECKING:
    from .spill import ChunkedDesign


@dataclass(frozen=True)
class PathConfig:
    """How each probe's regularisation path is walked."""

    n_lambdas: int = 20  # path points from lam_max down to lam_max * min_ratio (geometric)
    min_ratio: float = 1e-4
    patience: int = 2  # stop after this many points without a better validation score (3 in fit format 1)
    tol: float = 1e-4  # converged when the objective falls by less than this (relative) per iteration (1e-5) ...
    window: int = 3  # ... on average over this many iterations (5)
    warm_aggregates: bool = True  # aggregates search around their neighbour's choice (False: a full path each)
    local_patience: int = 2  # ... stopping after this many points without a better validation score
    confirm_top: int = 3  # the best aggregates of the search that also get the full path


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
    step: int = 0  # grid step of the chosen point
    lam_top: float = 0.0  # the grid's top: step i has lam = lam_top * min_ratio ** (i / n_lambdas)


def validation_key(s: dict[str, float], metric: str) -> tuple[float, float]:
    """Order of validation scores: the higher metric wins (the lower, for mae); lower log-loss (regression:
    mean squared error) breaks ties (accuracy ties are common on small splits)."""
    return (round(-s[metric] if metric == "mae" else s[metric], 12), -s["log_loss" if "log_loss" in s else "mse"])


TIE_TOLERANCE = 1e-6  # validation scores (and losses) closer than this are ties: see fit.selection


def better(s: dict[str, float], than: dict[str, float], metric: str) -> bool:
    """Whether validation scores `s` beat `than`: the metric by more than TIE_TOLERANCE, or a tie there and
    a lower log-loss (regression: MSE) by more than it. Equal scores are never decided by float rounding
    (the caller keeps the simpler of equals)."""
    a, b = validation_key(s, metric), validation_key(than, metric)
    if a[0] > b[0] + TIE_TOLERANCE:
        return True
    return abs(a[0] - b[0]) <= TIE_TOLERANCE and a[1] > b[1] + TIE_TOLERANCE


def fit_path(Xtr: "np.ndarray | DenseDesign | ChunkedDesign", ytr: np.ndarray, Xva: "np.ndarray | DenseDesign", yva: np.ndarray, n_classes: int,
             metric: str, cfg: PathConfig = PathConfig(), device: str = "cpu", lam_top: float | None = None
             ) -> PathResult:
    """The full path: n_lambdas steps down from the problem's own lam_max (snapped to the grid of `lam_top`
    when given), stopped after `patience` points without a better validation score.

    Xtr [n, d], Xva [m, d]: standardised float32; ytr, yva: class indices (yva may hold -1). The solver
    runs on `device` (one copy of each matrix there)."""
    # All products run in torch; an idle multi-threaded OpenBLAS pool (numpy's) spinning next to torch's
    # threads made them up to 1.7x slower on 2 cores.
    with blas_one_thread():
        return _fit_path(Xtr, ytr, Xva, yva, n_classes, metric, cfg, torch.device(device), lam_top)


def lambda_max(X: np.ndarray, y: np.ndarray, n_classes: int, device: str = "cpu") -> float:
    """The smallest strength at which every weight of a probe on X is zero (X standardised float32)."""
    with blas_one_thread():
        return L1Logistic(torch.from_numpy(X).to(device), y, n_classes).lambda_max()


class _Path:
    """One problem's solver, its validation data and the points visited on a geometric grid of strengths.

    Step i has lam = lam_top * min_ratio ** (i / n_lambdas). A problem covers the n_lambdas steps below its
    own lam_max: `first` is the first grid step under it (1 when lam_top is the problem's own lam_max)."""

    def __init__(self, Xtr: "np.ndarray | DenseDesign | ChunkedDesign", ytr: np.ndarray, Xva: "np.ndarray | DenseDesign", yva: np.ndarray, n_classes: int,
                 metric: str, cfg: PathConfig, device: torch.device, lam_top: float | None) -> None:
        self.t0 = time.perf_counter()
        X = torch.from_numpy(Xtr).to(device) if isinstance(Xtr, np.ndarray) else Xtr  # or a design
        self.solver = L1Logistic(X, ytr, n_classes, tol=cfg.tol, window=cfg.window)
        lam_max = self.solver.lambda_max()
        if not np.isfinite(lam_max) or lam_max <= 0:  # no feature carries any signal (e.g. all constant)
            lam_max = 1e-3
        self.lam_max = lam_max
        # a grid's top is at least the problem's own lam_max, except for a refit on all rows (its steps count
        # from the sample's grid, which a slightly larger lam_max on all rows must not shift)
        self.lam_top = lam_top if lam_top is not None else lam_max
        self.ratio = cfg.min_ratio ** (1.0 / cfg.n_lambdas)
        self.first = max(1, int(np.floor(np.log(lam_max / self.lam_top) / np.log(self.ratio) + 1e-9)) + 1)
        self.last = self.first + cfg.n_lambdas - 1
        self.Xva = DenseDesign(torch.from_numpy(Xva).to(device)) if isinstance(Xva, np.ndarray) else Xva
        self.yva, self.ytr = yva, ytr
        self.n_classes, self.metric, self.cfg = n_classes, metric, cfg
        self.rows: list[dict[str, Any]] = []
        self.best: tuple[tuple[float, float], int, PathPoint, dict[str, float]] | None = None

    def lam(self, i: int) -> float:
        return self.lam_top * self.cfg.min_ratio ** (i / self.cfg.n_lambdas)

    def visit(self, i: int, warm: PathPoint | None, lam_prev: float) -> tuple[PathPoint, bool]:
        """Solve at step i from `warm`; returns the point and whether it is the best so far."""
        lam = self.lam(i)
        t1 = time.perf_counter()
        pt = self.solver.fit(lam, warm, lam_prev)
        s = path_scores(self.Xva.decision(pt.coef, pt.intercept), self.yva, self.n_classes)
        self.rows.append({"step": i, "lam": lam, "C": pt.C, "n_nonzero": pt.n_nonzero, "objective": pt.objective,
                          **{f"val_{k}": v for k, v in s.items()}, "iterations": pt.iterations,
                          "seconds": time.perf_counter() - t1})
        improved = self.best is None or better(s, self.best[3], self.metric)
        if improved:
            self.best = (validation_key(s, self.metric), i, pt, s)
        return pt, improved

    def walk(self, steps: range, warm: PathPoint | None, lam_prev: float, patience: int) -> None:
        """Visit `steps` in order, each warm-started from the last, until `patience` points in a row are no
        better than the best so far."""
        since_best = 0
        for i in steps:
            pt, better = self.visit(i, warm, lam_prev)
            since_best = 0 if better else since_best + 1
            if since_best >= patience:
                break
            warm, lam_prev = pt, pt.lam

    def result(self) -> PathResult:
        if self.best is None:  # n_lambdas >= 1 visits at least one point
            raise StcError("the regularisation path visited no point; n_lambdas must be at least 1")
        _, step, chosen, s_val = self.best
        self.rows.sort(key=lambda r: r["step"])
        for r in self.rows:
            r["chosen"] = r["step"] == step
        train = path_scores(self.solver.design.decision(chosen.coef, chosen.intercept), self.ytr, self.n_classes)
        return PathResult(chosen, s_val, train, self.rows, time.perf_counter() - self.t0, step, self.lam_top)


def _fit_path(Xtr: "np.ndarray | DenseDesign | ChunkedDesign", ytr: np.ndarray, Xva: "np.ndarray | DenseDesign", yva: np.ndarray, n_classes: int,
              metric: str, cfg: PathConfig, device: torch.device, lam_top: float | None = None) -> PathResult:
    path = _Path(Xtr, ytr, Xva, yva, n_classes, metric, cfg, device, lam_top)
    path.walk(range(path.first, path.last + 1), None, path.lam_max, cfg.patience)
    return path.result()


def fit_around(Xtr: "np.ndarray | DenseDesign | ChunkedDesign", ytr: np.ndarray, Xva: "np.ndarray | DenseDesign", yva: np.ndarray, n_classes: int, metric: str,
               cfg: PathConfig, device: str, lam_top: float, warm: PathPoint, step: int) -> PathResult:
    """A path search around a neighbouring problem's choice instead of from lam_max.

    `warm` is the neighbour's chosen point mapped onto this problem's columns (zeros for the columns it did
    not have) and `step` its grid step (on the grid of `lam_top`). Solve there from `warm`; walk to weaker
    strengths while validation improves (`local_patience`); when the start stayed the best, walk
    to stronger ones from it the same way. Used for the aggregates, whose neighbours (the previous η at the
    same depth, or the previous depth) differ from them by a few columns, and for the refit of an aggregate
    searched on a row sample on every row (`Xtr` then a `ChunkedDesign`)."""
    with blas_one_thread():
        path = _Path(Xtr, ytr, Xva, yva, n_classes, metric, cfg, torch.device(device), lam_top)
        start = min(max(step, path.first), path.last)
        pt0, _ = path.visit(start, warm, warm.lam)
        path.walk(range(start + 1, path.last + 1), pt0, pt0.lam, cfg.local_patience)
        if path.best is not None and path.best[1] == start:
            path.walk(range(start - 1, path.first - 1, -1), pt0, pt0.lam, cfg.local_patience)
        return path.result()


def path_scores(sc: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, float]:
    """Validation or train scores of linear scores [n, K]; n_classes 0: a regression target (sc[:, 0] the value)."""
    if n_classes == 0:
        return regression_scores(y, sc[:, 0])
    out = scores(y, predict_index(sc), n_classes)
    out["log_loss"] = log_loss(y, probabilities(sc))
    return out
