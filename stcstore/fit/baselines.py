"""The classifier a user builds without stcstore: the model's own sentence embedding and an L2 logistic
regression (Ridge, for a regression target), its strength chosen on validation.

The embedding is the last layer's hidden state, mean-pooled over real tokens for an encoder (how
sentence-transformers models such as MiniLM embed a sentence) and the last real token for a decoder. It is
fitted on the same train rows as the per-layer probes (all of train, or the `--probe-rows` sample), with
scikit-learn, on the features standardised with train statistics, for C on a geometric grid; validation
picks C (ties: the stronger regularisation). Test is scored once, for the chosen C.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ..core.threads import blas_one_thread

from ..core.names import ENCODER_FAMILIES, FeatureBlock
from .metrics import reported
from .probe import apply_standardization, better, path_scores, standardize_

if TYPE_CHECKING:
    from ..store.store import FeatureSet
    from .search import Fitter

C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 13))  # 1e-4 .. 100, half a decade apart
PATIENCE = 3  # grid points without a better validation score before the walk stops


@dataclass
class EmbeddingState:
    """The chosen embedding classifier: its block, standardisation and linear weights (scikit-learn's)."""

    block: FeatureBlock
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # [K, d]
    intercept: np.ndarray  # [K]
    C: float
    validation: dict[str, float]

    def decision(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(Z, dtype=np.float64) @ self.coef.T + self.intercept


def embedding_block(fs: "FeatureSet") -> FeatureBlock | None:
    """hidden.mean.L for an encoder, hidden.single.L (the last real token) for a decoder; None when the
    feature set lacks it."""
    m = fs.manifest
    block = FeatureBlock("hidden", "mean" if m.model.adapter in ENCODER_FAMILIES else "single", m.n_layers)
    return block if fs.has(block.kind, block.pooling, block.layer) else None


def fit_embedding(fitter: "Fitter", block: FeatureBlock) -> EmbeddingState:
    """Fit the C grid on the probes' train rows, choose C on validation (best metric, then log-loss / MSE,
    then the smaller C; each compared with a tolerance, so that rounding never decides)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    metric, K = fitter.cfg.metric, fitter.K
    Xtr = fitter.store.gather(fitter.fs, [(block.column, None)], fitter.probe_plan)[1]
    mean, scale = standardize_(Xtr)
    Xva = apply_standardization(fitter.read_val([(block.column, None)]), mean, scale)
    ytr, yva = fitter.probe_y, fitter.val_y
    best: EmbeddingState | None = None
    since = 0
    model: Any = None
    with blas_one_thread(None), warnings.catch_warnings():  # one thread wherever it runs: the same C, any --workers
        warnings.simplefilter("ignore")  # lbfgs's ConvergenceWarning at the weak end of the grid
        for C in C_GRID:
            if K == 0:
                model = Ridge(alpha=1.0 / C).fit(Xtr, ytr)
                coef, intercept = np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_)
            else:
                if model is None:
                    model = LogisticRegression(C=C, max_iter=2000, warm_start=True)
                model.set_params(C=C)
                model.fit(Xtr, ytr)
                coef, intercept = model.coef_, model.intercept_
            state = EmbeddingState(block, mean, scale, np.asarray(coef, dtype=np.float64),
                                   np.asarray(intercept, dtype=np.float64), C, {})
            s = path_scores(state.decision(Xva), yva, K)
            state.validation = s
            if best is None or better(s, best.validation, metric):
                best, since = state, 0
            else:
                since += 1
                if since >= PATIENCE:
                    break
    assert best is not None
    return best


def embedding_report(fitter: "Fitter", state: EmbeddingState) -> dict[str, Any]:
    test = fitter.test_scores([(state.block.column, None)], state.mean, state.scale, state.decision)
    model = "Ridge" if fitter.K == 0 else "LogisticRegression"
    return {"what": f"{state.block.column} + L2 {model} (C {state.C:.3g})",
            "kind": state.block.kind, "pooling": state.block.pooling, "layer": state.block.layer, "C": state.C,
            "validation": reported(state.validation), "test": test}
