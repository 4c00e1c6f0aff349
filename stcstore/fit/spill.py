"""Train rows too large for the memory budget: the chosen neurons spilled to disk, solved over row chunks.

When an aggregate's train matrix (train rows x the neurons its largest η keeps, float32) exceeds
`--memory-budget`, the search over (η, L_temp, strength) runs on a stratified sample of train rows that
fits the budget, and the chosen aggregate is then refitted on every train row. For that refit the chosen
columns are copied once, in the stored dtype (float16: half of float32, values exactly as stored), into
one file per store chunk inside the store (a `.tmp-` folder, removed after the fit, and by the next
writer when the fit was killed). `ChunkedDesign` gives the solver the same three products as the
in-memory `DenseDesign`, computed chunk by chunk: every product reads the files again (from the page
cache when they fit, else from disk), so memory holds one chunk, never the matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..classifier.linear import decision
from ..store.store import FeatureSet, Store


class ChunkedDesign:
    """Standardised columns of rows held in files: (path, rows) each [rows, width] of `dtype`, row order as
    the labels. `cols` (None: all) selects columns; standardisation is applied as each chunk is read,
    with the same float32 operations as `probe.apply_standardization`, so the values equal the in-memory
    matrix's bit for bit."""

    def __init__(self, files: list[tuple[Path, int]], width: int, dtype: np.dtype, mean: np.ndarray,
                 scale: np.ndarray, device: torch.device | str = "cpu", cols: np.ndarray | None = None) -> None:
        self.files, self.width, self.dtype = files, width, np.dtype(dtype)
        self.mean, self.scale = np.asarray(mean), np.asarray(scale)
        self.cols = cols
        self.n = sum(r for _, r in files)
        self.d = width if cols is None else len(cols)
        self.device = torch.device(device)

    def chunks(self):
        """Yield (first row, standardised float32 tensor [rows, d] on the device), one chunk at a time."""
        mean = (self.mean if self.cols is None else self.mean[self.cols]).astype(np.float32)
        scale = (self.scale if self.cols is None else self.scale[self.cols]).astype(np.float32)
        r0 = 0
        for path, rows in self.files:
            raw = np.fromfile(path, dtype=self.dtype).reshape(rows, self.width)
            x = (raw if self.cols is None else raw[:, self.cols]).astype(np.float32)
            del raw
            x -= mean
            x /= scale
            yield r0, torch.from_numpy(x).to(self.device)
            r0 += rows

    def select(self, A: torch.Tensor) -> "ChunkedDesign":
        if A.numel() == self.d:
            return self
        idx = A.cpu().numpy()
        cols = idx if self.cols is None else self.cols[idx]
        return ChunkedDesign(self.files, self.width, self.dtype, self.mean, self.scale, self.device, cols)

    def linear(self, Wt: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.linear(x, Wt, b) for _, x in self.chunks()])

    def rtx(self, R: torch.Tensor, contiguous: bool = True) -> torch.Tensor:
        out = torch.zeros(self.d, R.shape[1], dtype=torch.float32, device=self.device)
        for r0, x in self.chunks():
            out += (R[r0:r0 + x.shape[0]].T.contiguous() @ x).T
        return out

    def decision(self, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        return np.concatenate([decision(x, coef, intercept) for _, x in self.chunks()])


def spill(store: Store, fs: FeatureSet, picks: list[tuple[str, np.ndarray | None]], plan: list[np.ndarray | None],
          folder: Path) -> tuple[list[tuple[Path, int]], np.dtype]:
    """Write the picked columns of the planned rows into `folder`, one file per store chunk, in the stored
    dtype. Returns ([(file, rows)], dtype)."""
    dtype = np.dtype(fs.manifest.value_dtype)
    files = []
    for i, X in store.gather_by_chunk(fs, picks, plan, dtype=dtype.type):
        path = folder / f"rows-{i:06d}.bin"
        X.tofile(path)
        files.append((path, len(X)))
    return files, dtype
