"""Scoring a fitted linear model: linear scores, class probabilities and predicted classes.

Shared by the solver's path evaluation (fit) and by classifiers (score), so both score identically.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import expit


def decision(X: np.ndarray | torch.Tensor, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Linear scores [n, K] of standardised X [n, d] for coef [K, d], intercept [K]."""
    Xt = torch.as_tensor(X)
    if not coef.flags.writeable:  # e.g. from Ray's object store (torch warns on read-only arrays)
        coef = coef.copy(order="K")
    Wt = torch.as_tensor(coef.T, dtype=Xt.dtype, device=Xt.device)
    out = Xt @ Wt + torch.as_tensor(np.array(intercept), dtype=Xt.dtype, device=Xt.device)
    return out.cpu().numpy().astype(np.float64)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """[n, K] linear scores -> [n, n_classes] probabilities (K = 1: sigmoid, two columns)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[1] == 1:
        # expit never overflows, and expit(-s) keeps P(class 0) exact when it is tiny
        return np.stack([expit(-s[:, 0]), expit(s[:, 0])], axis=1)
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def predict_index(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores)
    return (s[:, 0] > 0).astype(np.int64) if s.shape[1] == 1 else s.argmax(axis=1)


def averaged(scores: list[np.ndarray], regression: bool = False) -> np.ndarray:
    """Members' scores [n, K] -> the ensemble's: the mean of their class probabilities, as log-odds (two
    classes, [n, 1]) or log-probabilities ([n, K]), so that `probabilities` and `predict_index` read it like
    a linear score; for a regression target, the mean of the predicted values."""
    if regression:
        return np.mean(scores, axis=0)
    p = np.mean([probabilities(s) for s in scores], axis=0)
    logp = np.log(np.clip(p, 1e-300, 1.0))
    if p.shape[1] == 2:
        return (logp[:, 1] - logp[:, 0])[:, None]
    return logp
