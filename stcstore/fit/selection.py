"""How a fit chooses among its candidates on validation, and how sure that choice is.

A fit scores hundreds of aggregates (kind x pooling x η x L_temp) on one validation split; the plain maximum
of those noisy estimates is partly the luckiest candidate (issue 22, `bench/selection.py`). This module
holds the pieces of the rules measured there:

* `best_state` / `ranked`: the validation-best of fitted states; scores closer than `TIE_TOLERANCE` are
  equal, whatever their last bits, and equals are decided by log-loss, then by simplicity, never by rounding.
* `bootstrap` : resamples of the validation rows (seeded), the metric of a candidate's scores on each;
  its standard deviation is the candidate's standard error.
* `noise_report`: those standard errors for the reported states, and STC's margins over the others.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

# validation scores (accuracy, macro-F1, R², ...) closer than TIE_TOLERANCE (1e-6) are ties: far above the
# float rounding of a sum over a few thousand rows (~1e-12), below one row of a validation split of 100,000
from .probe import TIE_TOLERANCE, path_scores, validation_key

N_BOOTSTRAP = 200


def signed(score: float, metric: str) -> float:
    """Higher is better, for every metric (MAE is negated)."""
    return -score if metric == "mae" else score


def bootstrap(sc: np.ndarray, y: np.ndarray, n_classes: int, metric: str, n: int = N_BOOTSTRAP, seed: int = 0
              ) -> np.ndarray:
    """The metric of scores `sc` [m, K] on `n` seeded resamples of the m validation rows (the same
    resamples for every candidate of one fit: same seed, same m), higher better (`signed`)."""
    return np.array([signed(path_scores(sc[i], y[i], n_classes)[metric], metric) for i in resamples(len(y), n, seed)])


def resamples(m: int, n: int = N_BOOTSTRAP, seed: int = 0) -> Iterator[np.ndarray]:
    """The `n` seeded resamples of m rows, one at a time (memory: one resample, whatever n): the rows of
    `default_rng(seed).integers(0, m, size=(n, m))`."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.integers(0, m, size=m)


def best_state(states: Sequence[Any], metric: str, cost: Callable[[Any], tuple] | None = None) -> Any:
    """The validation-best of fitted states (anything with `.result.validation`): the best metric, then among
    those tied with it (within TIE_TOLERANCE) the lowest log-loss (regression: MSE), then among those tied
    again the cheapest by `cost` (default: shallower L_temp, fewer neurons, smaller η), then the first."""
    cost = cost or (lambda a: (a.l_temp, a.n_neurons, a.eta))
    keys = [validation_key(a.result.validation, metric) for a in states]
    top = max(k[0] for k in keys)
    near = [i for i, k in enumerate(keys) if k[0] >= top - TIE_TOLERANCE]
    low = max(keys[i][1] for i in near)
    near = [i for i in near if keys[i][1] >= low - TIE_TOLERANCE]
    return states[min(near, key=lambda i: (*cost(states[i]), i))]


def ranked(states: Sequence[Any], metric: str, top: int) -> list[Any]:
    """The `top` validation-best states, best first (`best_state` applied again to what is left)."""
    left, out = list(states), []
    while left and len(out) < top:
        b = best_state(left, metric)
        out.append(b)
        left.remove(b)
    return out


def noise_report(decisions: dict[str, np.ndarray], y: np.ndarray, n_classes: int, metric: str, seed: int = 0,
                 against: str = "stc") -> dict[str, Any]:
    """How sure the validation comparison is: the bootstrap standard error of each entry's validation metric
    and, for `against` (STC), its margin over each other entry with the standard error of that paired
    difference (the same resampled rows for both). A margin smaller than twice its standard error is
    within noise: another validation sample could reverse it."""
    boot = {k: bootstrap(sc, y, n_classes, metric, seed=seed) for k, sc in decisions.items()}
    observed = {k: signed(path_scores(sc, y, n_classes)[metric], metric) for k, sc in decisions.items()}
    out: dict[str, Any] = {"metric": metric, "resamples": N_BOOTSTRAP,
                           "validation_se": {k: float(np.std(b, ddof=1)) for k, b in boot.items()}, "margins": {}}
    if against in boot:
        for k in boot:
            if k == against:
                continue
            se = float(np.std(boot[against] - boot[k], ddof=1))
            margin = observed[against] - observed[k]
            out["margins"][k] = {"margin": float(margin), "se": se, "within_noise": bool(abs(margin) < 2 * se)}
    return out
