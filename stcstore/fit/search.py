"""The search inside one fit: a probe per block, and the aggregates of its sparsified neurons over layers
0..L_temp, each chosen on validation; test is read only to score chosen states."""

from __future__ import annotations

import copy
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from ..classifier.classifier import FeatureGroup
from ..classifier.heads import EnsembleHead, member_bounds
from ..core.names import KINDS, METRICS, POOLINGS, REGRESSION_METRICS, FeatureBlock
from ..store.store import FeatureSet, Store, neuron_picks
from .grid import Grid, resolve, solve_chain
from .metrics import reported
from .probe import (
    PathResult,
    apply_standardization,
    fit_around,
    fit_path,
    lambda_max,
    path_scores,
    standardize_,
)
from .slp import fit_slp
from .sparsify import select_neurons
from .spill import ChunkedDesign, spill
from .splits import Splits, stratified_sample
from .records import AggState, EnsembleResult, GroupData, HeadState, ProbeState  # noqa: F401 (also importable here)
from .validation import decisions, entry, rescore, state_decision  # noqa: F401 (state_decision: API here too)

if TYPE_CHECKING:
    from .config import FitConfig

# runs fn(*task) for every task, results in task order (`fit.parallel.Workers.map`, with a cost per task)
ChainRunner = Callable[[Callable[..., Any], list[tuple], list[float]], Any]


@dataclass
class Ensemble:
    """`--selection ensemble`: the validation-best aggregate of each kind/pooling, probabilities averaged
    (regression: values). Scored on the concatenation of its members' columns, in member order."""

    members: list[AggState]
    regression: bool
    result: EnsembleResult = field(default_factory=lambda: EnsembleResult({}, {}))

    @property
    def kind(self) -> str:
        kinds = {k for m in self.members for k in m.kind.split("+")}
        return "+".join(k for k in KINDS if k in kinds)

    @property
    def pooling(self) -> str:
        pools = {m.pooling for m in self.members}
        return "+".join(p for p in POOLINGS if p in pools)

    @property
    def eta(self) -> float:
        return max(m.eta for m in self.members)

    @property
    def l_temp(self) -> int:
        return max(m.l_temp for m in self.members)

    @property
    def groups(self) -> list[FeatureGroup]:
        return [g for m in self.members for g in m.groups]

    @property
    def mean(self) -> np.ndarray:
        return np.concatenate([m.mean for m in self.members])

    @property
    def scale(self) -> np.ndarray:
        return np.concatenate([m.scale for m in self.members])

    @property
    def n_neurons(self) -> int:
        return sum(m.n_neurons for m in self.members)

    @property
    def n_rows(self) -> int:
        return min(m.n_rows for m in self.members)

    @property
    def top(self) -> AggState:
        """The member with the best validation score (what a single-aggregate fit would have chosen)."""
        return self.members[0]

    @cached_property
    def head(self) -> EnsembleHead:
        """Built once, when the members are final (after any refit on every row)."""
        coef = np.concatenate([m.result.chosen.coef for m in self.members], axis=1)
        intercept = np.stack([m.result.chosen.intercept for m in self.members])
        bounds = member_bounds([len(g.neurons) for g in self.groups], [len(m.groups) for m in self.members])
        return EnsembleHead(bounds, coef, intercept, self.regression)

    def decision(self, Z: np.ndarray) -> np.ndarray:
        return self.head.decision(Z)


class Fitter:
    """Reads blocks of one feature set by split plan and fits probes and aggregates on them."""

    def __init__(self, store: Store, fs: FeatureSet, cfg: "FitConfig", splits: Splits) -> None:
        self.store, self.fs, self.cfg, self.splits = store, fs, cfg, splits
        self.K = len(splits.classes)  # 0: a regression target
        self.tr, self.va, self.te = cfg.train_split, cfg.val_split, cfg.test_split
        # per-layer probes fit on a stratified sample of train when train is larger than probe_rows; the
        # aggregates, which make the classifier, train on every row
        y = splits.y[self.tr]
        self.probe_sampled = cfg.probe_rows is not None and len(y) > cfg.probe_rows
        self.probe_plan, self.probe_y = (stratified_sample(splits.plans[self.tr], y, cfg.probe_rows, cfg.seed)
                                         if self.probe_sampled else (splits.plans[self.tr], y))
        # the searches score a stratified sample of validation when it is larger than val_rows; choices between
        # fitted candidates use every row (fit.validation)
        yv = splits.y[self.va]
        self.val_sampled = cfg.val_rows is not None and len(yv) > cfg.val_rows
        self.val_plan, self.val_y = (stratified_sample(splits.plans[self.va], yv, cfg.val_rows, cfg.seed)
                                     if self.val_sampled else (splits.plans[self.va], yv))
        self.agg_rows: dict[tuple[str, str], int] = {}  # (kind, pooling) -> sampled train rows, when sampled
        self.embedding: tuple[Any] | None = None  # (the embedding baseline,) when fitted beside the searches

    def variant(self, **changes: Any) -> "Fitter":
        """This fitter with other options (e.g. probe="lr"): the same store, splits and samples."""
        other = copy.copy(self)
        other.cfg = replace(self.cfg, **changes)
        return other

    @property
    def search_rows(self) -> int:
        """Train rows the aggregate search held: all of train, or the smallest memory-budget sample."""
        return min(self.agg_rows.values(), default=len(self.splits.y[self.tr]))

    def agg_plan(self, kind: str, pooling: str, width: int) -> tuple[list[np.ndarray], np.ndarray]:
        """The train rows an aggregate search of `width` columns holds in memory: all of them, or a stratified
        sample when float32 rows x width exceeds the memory budget (the chosen aggregate is refitted on all)."""
        plan, y = self.splits.plans[self.tr], self.splits.y[self.tr]
        rows = self.budget_rows(width)
        if len(y) <= rows:
            return plan, y
        self.agg_rows[(kind, pooling)] = rows
        return stratified_sample(plan, y, rows, self.cfg.seed)

    def budget_rows(self, width: int) -> int:
        """The train rows an aggregate search of `width` columns holds: all of them, or as many as the memory
        budget takes (at least 100) beside the validation rows it scores: the search holds its train rows twice
        (the matrix, and the solver's copy of the columns it works on) and its validation rows once, float32."""
        n, budget = len(self.splits.y[self.tr]), self.cfg.memory_budget_mb
        if budget is None:
            return n
        return min(n, max((budget * 2**20 // (4 * max(width, 1)) - len(self.val_y)) // 2, 100))

    def read(self, picks: list[tuple[str, np.ndarray | None]], split: str) -> np.ndarray:
        return self.store.gather(self.fs, picks, self.splits.plans[split])[1]

    def read_val(self, picks: list[tuple[str, np.ndarray | None]]) -> np.ndarray:
        """The validation rows a search holds (`val_plan`: all, or the --val-rows sample) of these columns."""
        return self.store.gather(self.fs, picks, self.val_plan)[1]

    def probe(self, block: FeatureBlock) -> ProbeState:
        Xtr = self.store.gather(self.fs, [(block.column, None)], self.probe_plan)[1]
        mean, scale = standardize_(Xtr)
        Xva = apply_standardization(self.read_val([(block.column, None)]), mean, scale)
        if self.cfg.probe == "slp":
            net, res = fit_slp(Xtr, self.probe_y, Xva, self.val_y, self.K, self.cfg.metric,
                               self.cfg.seed, device=self.cfg.device)
            return ProbeState(block, mean, scale, res, net)
        res = fit_path(Xtr, self.probe_y, Xva, self.val_y, self.K, self.cfg.metric,
                       self.cfg.path, self.cfg.device)
        return ProbeState(block, mean, scale, res)

    def kept(self, kind: str, pooling: str, probes: dict[FeatureBlock, ProbeState]) -> dict[FeatureBlock, np.ndarray]:
        """Per block of one (kind, pooling): the neurons kept at the largest η, most important first (smaller η
        keep a prefix)."""
        eta_max = max(self.cfg.etas)
        return {b: select_neurons(p.result.chosen.coef, eta_max) for b, p in probes.items()
                if b.kind in kind.split("+") and b.pooling == pooling}

    def search_bytes(self, kind: str, pooling: str, probes: dict[FeatureBlock, ProbeState]) -> int:
        """The bytes an aggregate search of one (kind, pooling) holds (`budget_rows`)."""
        width = sum(len(k) for k in self.kept(kind, pooling, probes).values())
        return 4 * width * (2 * self.budget_rows(width) + len(self.val_y))

    def group_data(self, kind: str, pooling: str, probes: dict[FeatureBlock, ProbeState]) -> "GroupData":
        """The train rows an aggregate search holds (all, or the memory budget's sample) and validation, of the
        neurons the largest η keeps in every layer of one (kind, pooling), standardised with the probes'
        statistics."""
        kinds = kind.split("+")
        layers = sorted({b.layer for b in probes if b.kind in kinds and b.pooling == pooling})
        kept = self.kept(kind, pooling, probes)
        order = sorted(kept, key=lambda b: (b.layer, KINDS.index(b.kind)))
        picks = neuron_picks(self.fs, [(b.kind, b.pooling, b.layer, kept[b]) for b in order])
        offsets = np.cumsum([0] + [len(kept[b]) for b in order])
        plan, ytr = self.agg_plan(kind, pooling, int(offsets[-1]))
        Xtr_all = self.store.gather(self.fs, picks, plan)[1]
        Xva_all = self.read_val(picks)
        start = {b: int(offsets[i]) for i, b in enumerate(order)}  # first column of each block
        mean_all = np.concatenate([probes[b].mean[kept[b]] for b in order])
        scale_all = np.concatenate([probes[b].scale[kept[b]] for b in order])
        apply_standardization(Xtr_all, mean_all, scale_all)
        apply_standardization(Xva_all, mean_all, scale_all)
        return GroupData(layers, order, kept, start, offsets, ytr, Xtr_all, Xva_all, mean_all, scale_all)

    def aggregate(self, kind: str, pooling: str, probes: dict[FeatureBlock, ProbeState],
                  on_fit: Callable[[AggState], None], runner: "ChainRunner | None" = None) -> list[AggState]:
        """Every (η, L_temp) of one (kind, pooling); kind may be "hidden+ffn". The depths' chains (`fit.grid`)
        run through `runner` (the pool's `Workers.map`) when given, else here one after the other."""
        g = self.group_data(kind, pooling, probes)
        # one grid of strengths for the whole group, so that a neighbour's chosen step means the same here
        lam_top = lambda_max(g.Xtr, g.ytr, self.K, self.cfg.device) if self.cfg.path.warm_aggregates else None
        # the memory budget left beside the blocks and the solver's copy of its active columns for a copy of an
        # aggregate's columns; else views of them
        room = np.inf if self.cfg.memory_budget_mb is None else \
            self.cfg.memory_budget_mb * 2**20 - 2 * g.Xtr.nbytes - g.Xva.nbytes
        grid = Grid(g.Xtr, g.Xva, g.ytr, self.val_y, self.K, self.cfg.metric, self.cfg.path, self.cfg.device,
                    lam_top, room)
        etas = sorted(self.cfg.etas)
        cells: dict[tuple[int, int], tuple[np.ndarray, list[FeatureGroup]]] = {}
        for e, eta in enumerate(etas):
            n_keep = g.n_keep(probes, eta)
            for d, l_temp in enumerate(g.layers):
                blocks = [b for b in g.order if b.layer <= l_temp]
                cols = np.concatenate([np.arange(g.start[b], g.start[b] + n_keep[b]) for b in blocks])
                cells[(e, d)] = cols, [FeatureGroup(b.kind, b.pooling, b.layer, [int(i) for i in g.kept[b][:n_keep[b]]])
                                       for b in blocks]
        depths = range(len(g.layers))
        results: dict[tuple[int, int], PathResult] = {}
        row = resolve(grid.chain([cells[(0, d)][0] for d in depths], None))  # the smallest η, depth after depth
        for d in depths:
            results[(0, d)] = row[d]
        chains = [([cells[(e, d)][0] for e in range(1, len(etas))], (cells[(0, d)][0], results[(0, d)]),
                   (cells[(0, d)][0],)) for d in depths]
        if len(etas) > 1:
            cost = [float(sum(len(c) for c in cols)) for cols, _, _ in chains]
            with self.shared(grid, runner is not None and len(chains) > 1):  # (one task: Workers.map runs it here)
                done = runner(solve_chain, [(grid, *c) for c in chains], cost) if runner is not None else \
                    (grid.chain(*c) for c in chains)
                for d, out in zip(depths, done):
                    for e, r in enumerate(resolve(out, results[(0, d)]), start=1):
                        results[(e, d)] = r
        states = []
        for e, eta in enumerate(etas):
            for d, l_temp in enumerate(g.layers):
                cols, groups = cells[(e, d)]
                state = AggState(kind, pooling, eta, l_temp, groups, g.mean[cols], g.scale[cols], results[(e, d)],
                                 len(g.ytr))
                states.append(state)
                on_fit(state)
        return states

    @contextmanager
    def shared(self, grid: Grid, share: bool) -> Iterator[None]:
        """The group's matrices in files the pool's processes map, for the duration (nothing to do when the
        chains run here)."""
        if not share:
            yield
            return
        folder = self.store.root / "fits"
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tmp-grid-", dir=folder) as tmp:  # .tmp-: swept if killed
            grid.share(Path(tmp))
            try:
                yield
            finally:
                grid.files = None

    def refit(self, best: AggState) -> None:
        """Refit an aggregate searched on a row sample on every train row, streamed from a spill of its
        columns (`spill`), searching the strength around the sample's choice; replaces its result."""
        ytr, yva = self.splits.y[self.tr], self.val_y
        picks = self.picks(best)
        Xva = apply_standardization(self.read_val(picks), best.mean, best.scale)
        folder = self.store.root / "fits"
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tmp-spill-", dir=folder) as tmp:  # .tmp-: swept if killed
            files, dtype = spill(self.store, self.fs, picks, self.splits.plans[self.tr], Path(tmp))
            design = ChunkedDesign(files, best.n_neurons, dtype, best.mean, best.scale, self.cfg.device)
            r = best.result
            best.result = fit_around(design, ytr, Xva, yva, self.K, self.cfg.metric, self.cfg.path, self.cfg.device,
                                     r.lam_top, r.chosen, r.step)
        best.n_rows = len(ytr)
        rescore(self, [best])

    def confirm(self, a: AggState) -> PathResult:
        """The full path (from the problem's own lam_max) of an aggregate the local search fitted, scored on every
        validation row; the fit keeps it where validation prefers it. Only for the few best aggregates: the
        local search sees fewer strengths, and the full path's extra candidates matter where the choice is made."""
        picks = self.picks(a)
        Xtr = apply_standardization(self.read(picks, self.tr), a.mean, a.scale)
        Xva = apply_standardization(self.read_val(picks), a.mean, a.scale)
        res = fit_path(Xtr, self.splits.y[self.tr], Xva, self.val_y, self.K, self.cfg.metric,
                       self.cfg.path, self.cfg.device, a.result.lam_top)
        del Xtr, Xva
        rescore(self, [replace(a, result=res)])  # compared on every validation row, as a.result was
        return res

    def validation_scores(self, state: Any) -> dict[str, float]:
        """Validation scores (with the tie-breaking log-loss / MSE) of a fitted state, on every validation row,
        read one chunk at a time (fit.validation)."""
        return path_scores(decisions(self, [entry(self, state)])[0], self.splits.y[self.va], self.K)

    def picks(self, a: "AggState | Ensemble") -> list[tuple[str, np.ndarray]]:
        return neuron_picks(self.fs, [(g.kind, g.pooling, g.layer, g.neurons) for g in a.groups])

    def test_scores(self, picks: list[tuple[str, np.ndarray | None]], mean: np.ndarray, scale: np.ndarray,
                    decide: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
        """Scores of the test rows, read one store chunk at a time (test may be any size); `decide` maps
        standardised rows to scores [n, K] (`state_decision`)."""
        y = self.splits.y[self.te]
        if len(y) == 0:
            return {m: float("nan") for m in (REGRESSION_METRICS if self.K == 0 else METRICS)}
        sc = np.concatenate([decide(apply_standardization(X, mean, scale))
                             for _, X in self.store.gather_by_chunk(self.fs, picks, self.splits.plans[self.te])])
        return reported(path_scores(sc, y, self.K))
