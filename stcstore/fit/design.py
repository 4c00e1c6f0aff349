"""The training matrix as the solver sees it: three products and a selection of columns.

`DenseDesign` holds X in memory; `ColumnDesign` is a subset of a wider matrix's columns without a copy;
`fit.spill.ChunkedDesign` streams row chunks from disk. The solver (`fit.solver`) touches its matrix only
through these, so any of them can stand in for the others.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..classifier.linear import decision


class DenseDesign:
    """The training matrix in memory: X [n, d] float32 (standardised) on the solver's device.

    The solver touches its matrix only through `select` (the active columns), `linear` (X W^T + b) and
    `rtx` ((R^T X)^T), so a matrix too large for memory can stand in for it (`fit.spill.ChunkedDesign`,
    the same products over row chunks read from disk)."""

    def __init__(self, X: torch.Tensor) -> None:
        if X.dtype != torch.float32 or X.dim() != 2:
            raise ValueError("X must be a 2-d float32 tensor")
        self.X = X
        self.n, self.d = X.shape
        self.device = X.device
        self._scratch: torch.Tensor | None = None

    def select(self, A: torch.Tensor) -> "DenseDesign":
        """The active columns A, copied into memory this design reuses from one call to the next (the solver
        drops the previous selection before it asks for the next): a fresh allocation of its size cost more in
        page faults than the copy itself (a [4,500, 5,000] selection: 55 ms fresh, 15 ms reused)."""
        return self if A.numel() == self.d else DenseDesign(self._select(self.X, A))

    def _select(self, X: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        size = self.n * A.numel()
        if self._scratch is None or self._scratch.numel() < size:
            self._scratch = torch.empty(size, dtype=X.dtype, device=X.device)
        return torch.index_select(X, 1, A, out=self._scratch[:size].view(self.n, A.numel()))

    def linear(self, Wt: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Wt: [K, d] float32, b: [K] -> X Wt^T + b, [n, K]."""
        # F.linear and R^T X run 3-5x faster than X @ W and X^T R for a handful of classes (measured)
        return F.linear(self.X, Wt, b)

    def rtx(self, R: torch.Tensor, contiguous: bool = True) -> torch.Tensor:
        """R: [n, K] float32 -> (R^T X)^T, [d, K]. (`contiguous=False`: the product as the full-matrix
        checks have always computed it, which fit ids and the 0.1.0 fixture depend on bit for bit.)"""
        return (R.T.contiguous() @ self.X).T if contiguous else (R.T @ self.X).T

    def decision(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        """Linear scores [n, K] float64 for coef [K, d], intercept [K] (as the classifier computes them)."""
        return decision(self.X, coef, intercept)


class ColumnDesign(DenseDesign):
    """Columns `cols` of a wider in-memory matrix X [n, D], without copying them: the aggregates' neuron
    subsets of one gathered (kind, pooling) block. `cols` falls into a few runs of consecutive columns (each
    block's kept neurons are a prefix of its columns), and every product runs over the runs, each a strided
    view of X that BLAS reads in place: the same work as on a copy, and the block is held once, not once
    more per aggregate. `select` copies the active columns, as `DenseDesign.select` does."""

    def __init__(self, X: torch.Tensor, cols: np.ndarray) -> None:
        if X.dtype != torch.float32 or X.dim() != 2:
            raise ValueError("X must be a 2-d float32 tensor")
        cols = np.asarray(cols, dtype=np.int64)
        self.X_all = X
        self.cols = torch.as_tensor(cols, device=X.device)
        breaks = np.flatnonzero(np.diff(cols) != 1) + 1
        starts = np.concatenate([[0], breaks]).astype(int) if len(cols) else np.zeros(0, int)
        stops = np.concatenate([breaks, [len(cols)]]).astype(int) if len(cols) else np.zeros(0, int)
        # (first position in cols, view of X's columns)
        self.runs = [(int(a), X[:, int(cols[a]):int(cols[a]) + int(b - a)]) for a, b in zip(starts, stops)]
        self.n, self.d = X.shape[0], len(cols)
        self.device = X.device
        self._scratch = None

    def select(self, A: torch.Tensor) -> "DenseDesign":
        return self if A.numel() == self.d else DenseDesign(self._select(self.X_all, self.cols[A]))

    def linear(self, Wt: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = b.expand(self.n, -1).clone()
        for a, Xr in self.runs:
            out.addmm_(Xr, Wt[:, a:a + Xr.shape[1]].T)
        return out

    def rtx(self, R: torch.Tensor, contiguous: bool = True) -> torch.Tensor:
        Rt = R.T.contiguous()
        return torch.cat([(Rt @ Xr).T for _, Xr in self.runs]) if self.runs else \
            torch.zeros(0, R.shape[1], dtype=R.dtype, device=R.device)

    def decision(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        Wt = torch.as_tensor(coef, dtype=torch.float32, device=self.device)
        b = torch.as_tensor(intercept, dtype=torch.float32, device=self.device)
        return self.linear(Wt, b).cpu().numpy().astype(np.float64)
