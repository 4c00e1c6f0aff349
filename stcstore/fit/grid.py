"""The (η, L_temp) grid of one kind/pooling's aggregates, as chains that can run side by side.

Each aggregate starts from its neighbour's chosen weights (fit format 2): the previous η at the same depth,
else (for the smallest η) the previous depth. So the smallest η's row is one chain over the depths, and
after it every depth is a chain of its own over the larger η, independent of the other depths: on a
GPT2-XL-shaped store (48 depths of one FFN group) those 48 chains are nearly all of a fit's aggregate time,
and they run on every worker (`fit.parallel.Workers.map`), each on one thread, with the same results as one
after the other. The group's standardised matrices reach the worker processes as memory-mapped files (in
the store's `fits/`, a `.tmp-` folder removed after the search), so the pages are shared, not copied.

Aggregates whose neurons are the same as an earlier one's (a smaller η keeping the same neurons) share its
fit. Every depth keeps at least one neuron of its own layer, so equal columns only occur within one depth's
chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .design import ColumnDesign
from .probe import PathConfig, PathResult, fit_around, fit_path
from .solver import PathPoint


@dataclass
class Grid:
    """What every aggregate search of one group needs: its standardised train and validation matrices (the
    neurons the largest η keeps, in every layer), labels and options. Picklable: once `share`d, it travels as
    the paths of its matrices, which a worker maps."""

    Xtr: np.ndarray | None
    Xva: np.ndarray | None
    ytr: np.ndarray
    yva: np.ndarray
    K: int
    metric: str
    path: PathConfig
    device: str
    lam_top: float | None  # one grid of strengths for the whole group (None: every aggregate its own full path)
    room: float  # bytes a contiguous copy of an aggregate's columns may take (else views of the block)
    files: tuple[str, str] | None = None
    _on_device: list[torch.Tensor] = field(default_factory=list)
    _scratch: dict[int, np.ndarray] = field(default_factory=dict)  # reused memory of the aggregates' copies

    def share(self, folder: Path) -> None:
        """Write the matrices to `folder` for worker processes to map."""
        assert self.Xtr is not None and self.Xva is not None
        paths = (str(folder / "train.npy"), str(folder / "validation.npy"))
        np.save(paths[0], self.Xtr)
        np.save(paths[1], self.Xva)
        self.files = paths

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__, _on_device=[], _scratch={})
        if self.files is not None:
            state["Xtr"] = state["Xva"] = None
        return state

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.Xtr is None:  # in a worker: the shared pages (copy-on-write, never written)
            assert self.files is not None
            self.Xtr, self.Xva = (np.load(f, mmap_mode="c") for f in self.files)
        assert self.Xva is not None
        return self.Xtr, self.Xva

    def _matrices(self, cols: np.ndarray) -> tuple[Any, Any]:
        Xtr_all, Xva_all = self._arrays()
        if 4 * (len(self.ytr) + len(self.yva)) * len(cols) <= self.room:  # a contiguous copy: faster to solve on
            return self._copy(Xtr_all, cols, 0), self._copy(Xva_all, cols, 1)
        if not self._on_device:  # else views of the block: one copy on a GPU, none on the CPU
            self._on_device.extend(torch.from_numpy(a).to(self.device) for a in (Xtr_all, Xva_all))
        return ColumnDesign(self._on_device[0], cols), ColumnDesign(self._on_device[1], cols)

    def _copy(self, X: np.ndarray, cols: np.ndarray, which: int) -> np.ndarray:
        """X[:, cols], C-contiguous, in memory reused by the next aggregate of the chain (each is dropped before
        the next is made): fresh, each copy of a deep GPT2-XL aggregate paid its size again in page faults, and
        numpy's X[:, cols] is column-major, so that it was copied twice."""
        size = X.shape[0] * len(cols)
        if which not in self._scratch or self._scratch[which].size < size:
            self._scratch[which] = np.empty(max(size, 1), dtype=np.float32)
        out = self._scratch[which][:size].reshape(X.shape[0], len(cols))
        torch.index_select(torch.from_numpy(X), 1, torch.from_numpy(cols), out=torch.from_numpy(out))
        return out

    def chain(self, cells: list[np.ndarray], near: tuple[np.ndarray, PathResult] | None,
              seen: tuple[np.ndarray, ...] = ()) -> list[PathResult | int]:
        """Fit the aggregates with these columns in order, each started from the one before (the first from
        `near`, if given; with no grid top each on its own full path). An aggregate whose columns equal an
        earlier one's in the chain gets that one's index instead of a fit; one whose columns equal `seen`'s (the
        columns of `near`, where they are known to be a fit of the same grid) gets -1."""
        width = self._arrays()[0].shape[1]
        known = [(-1, s) for s in seen]
        out: list[PathResult | int] = []
        fits: list[PathResult] = []  # what each entry of `out` stands for
        for i, cols in enumerate(cells):
            same = next((j for j, s in known if len(s) == len(cols) and np.array_equal(s, cols)), None)
            if same is not None:
                out.append(same)
                assert near is not None or same >= 0
                fits.append(fits[same] if same >= 0 else near[1])  # type: ignore[index]
            else:
                Xtr, Xva = self._matrices(cols)
                if self.lam_top is None or near is None:
                    res = fit_path(Xtr, self.ytr, Xva, self.yva, self.K, self.metric, self.path, self.device,
                                   self.lam_top)
                else:
                    res = fit_around(Xtr, self.ytr, Xva, self.yva, self.K, self.metric, self.path, self.device,
                                     self.lam_top, mapped(near, cols, width), near[1].step)
                del Xtr, Xva
                out.append(res)
                fits.append(res)
            known.append((i, cols))
            near = (cols, fits[-1])
        return out


def resolve(out: list[PathResult | int], seen: PathResult | None = None) -> list[PathResult]:
    """The fit each entry of a `Grid.chain` result stands for (-1: `seen`, the fit of the chain's `near`)."""
    fits: list[PathResult] = []
    for r in out:
        if isinstance(r, PathResult):
            fits.append(r)
        else:
            assert r >= 0 or seen is not None
            fits.append(fits[r] if r >= 0 else seen)  # type: ignore[arg-type]
    return fits


def mapped(near: tuple[np.ndarray, PathResult], cols: np.ndarray, width: int) -> PathPoint:
    """The neighbour's chosen point on these columns: its weights where it had the column, zero elsewhere."""
    near_cols, result = near
    c = result.chosen
    full = np.zeros((c.coef.shape[0], width))
    full[:, near_cols] = c.coef
    return PathPoint(lam=c.lam, C=c.C, coef=full[:, cols], intercept=c.intercept, objective=float("nan"),
                     n_nonzero=c.n_nonzero, iterations=0, kkt_passes=0)


def solve_chain(grid: Grid, cells: list[np.ndarray], near: tuple[np.ndarray, PathResult] | None,
                seen: tuple[np.ndarray, ...]) -> list[PathResult | int]:
    """`Grid.chain` as a task of the pool, on one thread wherever it runs (so the result does not depend on it)."""
    from .parallel import one_thread

    with one_thread():
        return grid.chain(cells, near, seen)
