"""The working scale of a regression target: what the solvers fit, so that a target of any magnitude fits
as well as one in [0, 1].

The L1 solver and the SLP trainer compute predictions in float32: a target of 1e9 leaves them no digits
for its variation (they fitted a constant, R² 0, without a word), and one of 1e100 overflowed. A target
whose values stay within ±SAFE is fitted as it is (bit for bit as before); a larger one is centred on
its train mean and divided by a power of two (exact) that brings it within ±1, and every weight and
prediction is mapped back, so everything outside the solvers (metrics, tables, classifiers) is in the
target's own units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAFE = 16.0  # targets within ±SAFE (ratings, intensities, [0, 1] scores) are fitted unchanged


@dataclass(frozen=True)
class TargetScale:
    center: float = 0.0
    scale: float = 1.0

    @classmethod
    def of(cls, y: np.ndarray) -> "TargetScale":
        y = np.asarray(y, dtype=np.float64)
        if y.size == 0 or float(np.abs(y).max()) <= SAFE:
            return cls()
        center = float(y.mean())
        spread = float(np.abs(y - center).max())
        return cls(center, 2.0 ** math.ceil(math.log2(spread)) if spread > 0 else 1.0)

    @property
    def identity(self) -> bool:
        return self.center == 0.0 and self.scale == 1.0

    def forward(self, y: np.ndarray) -> np.ndarray:
        """Target values -> the working scale."""
        return y if self.identity else (np.asarray(y, dtype=np.float64) - self.center) / self.scale

    def inverse(self, pred: np.ndarray) -> np.ndarray:
        """Predictions on the working scale -> the target's units."""
        return pred if self.identity else np.asarray(pred, dtype=np.float64) * self.scale + self.center
