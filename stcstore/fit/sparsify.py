"""Layer-wise sparsification (STC paper, section 3.3): keep the most important neurons of a probe.

A neuron's importance is its squared probe weight; for multi-class probes, the sum over classes of its
squared weights. Sort importances in descending order and keep the *fewest* neurons whose cumulative
importance reaches η·‖w‖² (at least one neuron per layer). Ties are broken by the lower neuron index,
so the selection is deterministic.

The authors' Algorithm 1 loops `while Σ <= η‖w‖²`, which adds one neuron past the point where the
threshold is reached; we keep the fewest that reach it, as the method is stated.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import StcError
from ..core.names import DEFAULT_ETAS


def importance(coef: np.ndarray) -> np.ndarray:
    """coef: [width] (binary) or [n_classes, width] -> importance per neuron [width], float64."""
    w = np.asarray(coef, dtype=np.float64)
    if w.ndim == 1:
        return w * w
    if w.ndim == 2:
        return (w * w).sum(axis=0)
    raise StcError(f"probe weights must be [width] or [n_classes, width], got shape {w.shape}")


def check_eta(eta: float) -> float:
    if not (0.0 < float(eta) <= 1.0):
        raise StcError(f"η must be in (0, 1], got {eta}")
    return float(eta)


def select_neurons(coef: np.ndarray, eta: float) -> np.ndarray:
    """Indices of the kept neurons, most important first. coef: [width] or [n_classes, width]."""
    eta = check_eta(eta)
    imp = importance(coef)
    if imp.size == 0:
        raise StcError("cannot sparsify a probe with no weights")
    # stable sort on -importance: equal importances keep ascending neuron order
    order = np.argsort(-imp, kind="stable")
    cumulative = np.cumsum(imp[order])
    total = cumulative[-1]
    # the tolerance only absorbs float rounding in the cumulative sum (η = 1 must not add zero weights)
    k = int(np.searchsorted(cumulative, eta * total - 1e-12 * total, side="left")) + 1
    return order[: max(1, min(k, imp.size))]


def select_all(coef: np.ndarray, etas: tuple[float, ...] = DEFAULT_ETAS) -> dict[float, np.ndarray]:
    """The kept neurons for every η of a grid (nested: a larger η keeps a superset)."""
    return {eta: select_neurons(coef, eta) for eta in etas}
