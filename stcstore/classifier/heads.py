"""What a classifier computes on its standardised feature vector Z [n, n_features]: the head.

- linear (the STC paper's aggregate): scores = Z coefᵀ + intercept.
- consolidation (the tweet-analysis preprint's dual-phase "knowledge-consolidation head", `fit --aggregator
  consolidation`): each feature group (one layer's kept neurons) feeds the frozen first layer of its
  phase-1 SLP probe, restricted to the kept inputs (the dropped, low-importance inputs contribute nothing):
  H_g = ReLU(Z_g W_gᵀ + b_g). The hidden units of all groups, standardised, feed a cross-layer network with
  one hidden ReLU layer: scores = ReLU(H' coef1ᵀ + intercept1) coefᵀ + intercept.

- ensemble (`fit --selection ensemble`, the default since 0.3): the validation-best linear aggregate of each
  kind/pooling, averaged. Member m reads its own consecutive groups (columns a_m..b_m of Z): s_m = Z[:, a_m:b_m]
  coef[:, a_m:b_m]ᵀ + intercept[m]; the scores are the mean of the members' class probabilities, as log-odds
  or log-probabilities (`linear.averaged`); for a regression target the mean of their values.

Scores [n, K] then read as for a linear head (K = 1: the positive class of two, or a value). Computed in
float32 by torch from the float64 arrays, so a fit's test scores and a saved-then-loaded classifier's
scores are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .linear import averaged, decision

HEADS = ("linear", "consolidation", "ensemble")
# the arrays each head keeps (besides the standardisation, mean and scale), in file order
HEAD_ARRAYS = {"linear": ("coef", "intercept"),
               "consolidation": ("sub_weight", "sub_bias", "hidden_mean", "hidden_scale", "coef1", "intercept1",
                                 "coef", "intercept"),
               "ensemble": ("coef", "intercept")}  # coef [K, n_features]: each member's weights in its columns


def sub_networks(hidden_units: list[int], group_sizes: list[int]) -> Iterator[tuple[slice, slice, slice, int, int]]:
    """Where each group's frozen sub-network lies: (its columns of Z, its weights in the flat sub_weight,
    its biases in sub_bias, h_g, n_g) per group."""
    col = w = hb = 0
    for h, n in zip(hidden_units, group_sizes):
        yield slice(col, col + n), slice(w, w + h * n), slice(hb, hb + h), h, n
        col, w, hb = col + n, w + h * n, hb + h


@dataclass
class ConsolidationHead:
    """sub_weight: the groups' frozen first layers, each [h_g, n_g], flattened and concatenated (float64);
    sub_bias [Σh]; hidden_mean / hidden_scale [Σh]; coef1 [u, Σh]; intercept1 [u]; coef [K, u]; intercept [K]."""

    hidden_units: list[int]  # h_g per group
    group_sizes: list[int]  # n_g (kept neurons) per group
    arrays: dict[str, np.ndarray]

    def _t(self, name: str, device: torch.device) -> torch.Tensor:
        return torch.as_tensor(np.array(self.arrays[name], dtype=np.float32), device=device)

    def hidden(self, Z: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The groups' frozen sub-network outputs [n, Σh] (float32), before standardisation."""
        Zt = torch.as_tensor(Z, dtype=torch.float32)
        W, b = self._t("sub_weight", Zt.device), self._t("sub_bias", Zt.device)
        return torch.cat([torch.relu(F.linear(Zt[:, cols], W[ws].view(h, n), b[bs]))
                          for cols, ws, bs, h, n in sub_networks(self.hidden_units, self.group_sizes)], dim=1)

    def decision(self, Z: np.ndarray | torch.Tensor) -> np.ndarray:
        """Scores [n, K] (float64) of standardised features Z [n, n_features]."""
        with torch.no_grad():
            H = self.hidden(Z)
            d = H.device
            H = (H - self._t("hidden_mean", d)) / self._t("hidden_scale", d)
            top = torch.relu(F.linear(H, self._t("coef1", d), self._t("intercept1", d)))
            return F.linear(top, self._t("coef", d), self._t("intercept", d)).double().cpu().numpy()

    def input_importance(self) -> np.ndarray:
        """[n_features]: the L2 norm of each kept neuron's frozen first-layer weights (what kept it)."""
        W = self.arrays["sub_weight"]
        out = [np.sqrt((W[ws].reshape(h, n) ** 2).sum(axis=0))
               for _, ws, _, h, n in sub_networks(self.hidden_units, self.group_sizes)]
        return np.concatenate(out) if out else np.zeros(0)


@dataclass
class EnsembleHead:
    """Members over consecutive column ranges of Z: coef [K, n_features] (member m's weights in its columns,
    zero nowhere else needed: the ranges do not overlap) and intercept [M, K]."""

    bounds: list[tuple[int, int]]  # columns a_m..b_m of each member
    coef: np.ndarray
    intercept: np.ndarray
    regression: bool

    def member_scores(self, Z: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        return [decision(Z[:, a:b], self.coef[:, a:b], self.intercept[m]) for m, (a, b) in enumerate(self.bounds)]

    def decision(self, Z: np.ndarray | torch.Tensor) -> np.ndarray:
        """Scores [n, K] (float64) of standardised features Z [n, n_features]."""
        return averaged(self.member_scores(Z), self.regression)


def member_bounds(group_sizes: list[int], member_groups: list[int]) -> list[tuple[int, int]]:
    """Column ranges of members that hold `member_groups` consecutive groups each."""
    out, g, col = [], 0, 0
    for n in member_groups:
        width = sum(group_sizes[g:g + n])
        out.append((col, col + width))
        g, col = g + n, col + width
    return out
