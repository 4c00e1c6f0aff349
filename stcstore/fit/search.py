"""The search inside one fit: a probe per block, and the aggregates of its sparsified neurons over layers
0..L_temp, each chosen on validation; test is read only to score chosen states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..classifier.classifier import FeatureGroup
from ..classifier.linear import decision, predict_index
from ..core.names import KINDS, METRICS, FeatureBlock
from ..store.store import FeatureSet, Store, neuron_picks
from .metrics import scores
from .probe import PathResult, apply_standardization, fit_path, standardize_
from .sparsify import select_neurons
from .splits import Splits, stratified_sample

if TYPE_CHECKING:
    from .stage import FitConfig


@dataclass
class ProbeState:
    """The chosen fitted state of one per-layer probe (standardisation + weights)."""

    block: FeatureBlock
    mean: np.ndarray
    scale: np.ndarray
    result: PathResult


@dataclass
class AggState:
    kind: str  # "hidden" | "ffn" | "hidden+ffn"
    pooling: str
    eta: float
    l_temp: int
    groups: list[FeatureGroup]
    mean: np.ndarray
    scale: np.ndarray
    result: PathResult

    @property
    def n_neurons(self) -> int:
        return sum(len(g.neurons) for g in self.groups)


def agg_key(a: AggState, metric: str) -> tuple:
    r = a.result
    # best validation metric, then validation log-loss; then the cheaper classifier (shallower, fewer neurons)
    return (round(r.validation[metric], 12), -round(r.validation["log_loss"], 12), -a.l_temp, -a.n_neurons)


def probe_key(p: ProbeState, metric: str) -> tuple:
    r = p.result
    return (round(r.validation[metric], 12), -round(r.validation["log_loss"], 12), -p.block.layer)


class Fitter:
    """Reads blocks of one feature set by split plan and fits probes and aggregates on them."""

    def __init__(self, store: Store, fs: FeatureSet, cfg: "FitConfig", splits: Splits) -> None:
        self.store, self.fs, self.cfg, self.splits = store, fs, cfg, splits
        self.K = len(splits.classes)
        self.tr, self.va, self.te = cfg.train_split, cfg.val_split, cfg.test_split
        # per-layer probes fit on a stratified sample of train when train is larger than probe_rows; the
        # aggregates, which make the classifier, train on every row
        y = splits.y[self.tr]
        self.probe_sampled = cfg.probe_rows is not None and len(y) > cfg.probe_rows
        self.probe_plan, self.probe_y = (stratified_sample(splits.plans[self.tr], y, cfg.probe_rows, cfg.seed)
                                         if self.probe_sampled else (splits.plans[self.tr], y))

    def read(self, picks: list[tuple[str, np.ndarray | None]], split: str) -> np.ndarray:
        return self.store.gather(self.fs, picks, self.splits.plans[split])[1]

    def probe(self, block: FeatureBlock) -> ProbeState:
        Xtr = self.store.gather(self.fs, [(block.column, None)], self.probe_plan)[1]
        mean, scale = standardize_(Xtr)
        Xva = apply_standardization(self.read([(block.column, None)], self.va), mean, scale)
        res = fit_path(Xtr, self.probe_y, Xva, self.splits.y[self.va], self.K, self.cfg.metric,
                       self.cfg.path, self.cfg.device)
        return ProbeState(block, mean, scale, res)

    def aggregate(self, kind: str, pooling: str, probes: dict[FeatureBlock, ProbeState],
                  on_fit: Callable[[AggState], None]) -> list[AggState]:
        """Every (η, L_temp) of one (kind, pooling); kind may be "hidden+ffn"."""
        kinds = kind.split("+")
        layers = sorted({b.layer for b in probes if b.kind in kinds and b.pooling == pooling})
        eta_max = max(self.cfg.etas)
        # per block: neurons kept at the largest η, most important first; smaller η keep a prefix
        kept = {b: select_neurons(p.result.chosen.coef, eta_max) for b, p in probes.items()
                if b.kind in kinds and b.pooling == pooling}
        order = sorted(kept, key=lambda b: (b.layer, KINDS.index(b.kind)))
        picks = neuron_picks(self.fs, [(b.kind, b.pooling, b.layer, kept[b]) for b in order])
        Xtr_all = self.read(picks, self.tr)
        Xva_all = self.read(picks, self.va)
        offsets = np.cumsum([0] + [len(kept[b]) for b in order])
        start = {b: int(offsets[i]) for i, b in enumerate(order)}  # first column of each block
        mean_all = np.concatenate([probes[b].mean[kept[b]] for b in order])
        scale_all = np.concatenate([probes[b].scale[kept[b]] for b in order])
        apply_standardization(Xtr_all, mean_all, scale_all)
        apply_standardization(Xva_all, mean_all, scale_all)
        out: list[AggState] = []
        seen: dict[tuple, AggState] = {}
        for eta in sorted(self.cfg.etas):
            n_keep = {b: len(select_neurons(probes[b].result.chosen.coef, eta)) for b in order}
            for l_temp in layers:
                blocks = [b for b in order if b.layer <= l_temp]
                cols = np.concatenate([np.arange(start[b], start[b] + n_keep[b]) for b in blocks])
                groups = [FeatureGroup(b.kind, b.pooling, b.layer, [int(i) for i in kept[b][:n_keep[b]]])
                          for b in blocks]
                sig = tuple(cols.tolist())
                if sig in seen:  # this η keeps exactly the neurons a smaller η kept: same fit
                    prev = seen[sig]
                    state = AggState(kind, pooling, eta, l_temp, groups, prev.mean, prev.scale, prev.result)
                else:
                    Xtr = np.ascontiguousarray(Xtr_all[:, cols])
                    Xva = np.ascontiguousarray(Xva_all[:, cols])
                    res = fit_path(Xtr, self.splits.y[self.tr], Xva, self.splits.y[self.va], self.K,
                                   self.cfg.metric, self.cfg.path, self.cfg.device)
                    del Xtr, Xva
                    state = AggState(kind, pooling, eta, l_temp, groups, mean_all[cols], scale_all[cols], res)
                    seen[sig] = state
                out.append(state)
                on_fit(state)
        return out

    def test_scores(self, picks: list[tuple[str, np.ndarray | None]], mean: np.ndarray, scale: np.ndarray,
                    res: PathResult) -> dict[str, float]:
        y = self.splits.y[self.te]
        if len(y) == 0:
            return {m: float("nan") for m in METRICS}
        X = apply_standardization(self.read(picks, self.te), mean, scale)
        return scores(y, predict_index(decision(X, res.chosen.coef, res.chosen.intercept)), self.K)
