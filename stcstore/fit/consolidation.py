"""`fit --aggregator consolidation`: the tweet-analysis preprint's dual-phase knowledge-consolidation head.

Phase 1 is the per-layer SLP probes (`--probe slp`, slp.py): one network with a hidden ReLU layer per
block, trained for the task, whose first-layer weights rank the block's input neurons (the L2 norm of each
input's weights). Phase 2, per (kind, pooling, η, L_temp):

- guided dropout: each layer keeps the inputs that η keeps (the fewest whose squared importances reach η
  of the total, as for the LR aggregate); the other input edges are dropped;
- the remaining sub-networks are frozen, H_l = ReLU(W1_l[:, kept] z_l[kept] + b1_l), and act as feature
  extractors: their hidden units over layers 0..L_temp are concatenated and standardised;
- a cross-layer network (one hidden ReLU layer of round(√width) units, the SLP trainer's) is trained on
  them for the task, with early stopping on validation.

Every (kind, pooling, η) is tried on the rows an aggregate search holds (all of train, or the memory
budget's sample), with L_temp walked upward until DEPTH_PATIENCE depths in a row bring no better
validation score (on a 48-block model the full grid would be thousands of networks). The validation-best
head is kept; when its search held a row sample, its cross-layer network is trained again on every train
row, the hidden units computed chunk by chunk from the store.

The fit compares the head with what `--aggregator lr` gives on the same data: LR probes and the paper's LR
aggregate of their neurons (`stage.fit`), both chosen on the same validation split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..classifier.classifier import FeatureGroup
from ..classifier.heads import ConsolidationHead
from ..core.names import FeatureBlock
from .probe import PathResult, apply_standardization, standardize_, validation_key
from .records import GroupData, HeadState, ProbeState  # noqa: F401 (HeadState: also importable here)
from .slp import fit_slp
from .validation import rescore

if TYPE_CHECKING:
    from .search import Fitter

DEPTH_PATIENCE = 4  # deeper L_temp tried after the best one of an η, before that η's walk stops


def _sub_networks(g: "GroupData", probes: dict[FeatureBlock, "ProbeState"], n_keep: dict[FeatureBlock, int]
                  ) -> dict[FeatureBlock, tuple[np.ndarray, np.ndarray]]:
    """Per block: its SLP's first layer on the kept inputs only, (W [h, n_keep], b [h]) float32."""
    out = {}
    for b in g.order:
        net = probes[b].slp
        if net is None:
            raise ValueError(f"internal: block {b.column} has no SLP probe")
        out[b] = (np.ascontiguousarray(net.W1[:, g.kept[b][:n_keep[b]]]), net.b1)
    return out


def _hidden(X: np.ndarray, cols: dict[FeatureBlock, np.ndarray], subs: dict[FeatureBlock, tuple[np.ndarray, np.ndarray]],
            blocks: list[FeatureBlock]) -> np.ndarray:
    """The frozen sub-networks' outputs on standardised rows X: [n, Σh] float32."""
    Xt = torch.from_numpy(X)
    with torch.no_grad():
        return torch.cat([torch.relu(Xt[:, cols[b]] @ torch.from_numpy(subs[b][0]).T + torch.from_numpy(subs[b][1]))
                          for b in blocks], dim=1).numpy()


def _cross_layer(fitter: "Fitter", Htr: np.ndarray, ytr: np.ndarray, Hva: np.ndarray, yva: np.ndarray
                 ) -> tuple[dict[str, np.ndarray], PathResult]:
    """Standardise the frozen units (train statistics, in place) and train the cross-layer network on them;
    returns the head's arrays after the sub-networks (hidden_mean ... intercept) and the result."""
    h_mean, h_scale = standardize_(Htr)
    apply_standardization(Hva, h_mean, h_scale)
    net, res = fit_slp(Htr, ytr, Hva, yva, fitter.K, fitter.cfg.metric, fitter.cfg.seed, device=fitter.cfg.device)
    return {"hidden_mean": h_mean, "hidden_scale": h_scale, "coef1": net.W1.astype(np.float64),
            "intercept1": net.b1.astype(np.float64), "coef": net.W2.astype(np.float64),
            "intercept": net.b2.astype(np.float64)}, res


def consolidate(fitter: "Fitter", kind: str, pooling: str, probes: dict[FeatureBlock, "ProbeState"],
                on_fit: Callable[[HeadState | None], None]) -> list[HeadState]:
    """Every (η, L_temp) of one (kind, pooling): a consolidation head each, chosen on validation."""
    g = fitter.group_data(kind, pooling, probes)
    yva = fitter.val_y
    out: list[HeadState] = []
    seen: dict[tuple, HeadState] = {}
    for eta in sorted(fitter.cfg.etas):
        n_keep = g.n_keep(probes, eta)
        subs = _sub_networks(g, probes, n_keep)
        cols = {b: np.arange(g.start[b], g.start[b] + n_keep[b]) for b in g.order}
        Htr_all, Hva_all = _hidden(g.Xtr, cols, subs, g.order), _hidden(g.Xva, cols, subs, g.order)
        h_off = np.cumsum([0] + [len(subs[b][1]) for b in g.order])
        best_key, since = None, 0
        for d, l_temp in enumerate(g.layers):
            if since >= DEPTH_PATIENCE:  # this η's heads stopped improving with depth
                for _ in g.layers[d:]:
                    on_fit(None)
                break
            blocks = [b for b in g.order if b.layer <= l_temp]
            groups = [FeatureGroup(b.kind, b.pooling, b.layer, [int(i) for i in g.kept[b][:n_keep[b]]]) for b in blocks]
            sig = tuple((b, n_keep[b]) for b in blocks)
            if sig in seen:  # this η keeps exactly the inputs a smaller η kept: same head
                prev = seen[sig]
                state = HeadState(kind, pooling, eta, l_temp, groups, prev.mean, prev.scale, prev.result,
                                  prev.n_rows, head=prev.head)
            else:
                n_h = int(h_off[len(blocks)])
                top, res = _cross_layer(fitter, Htr_all[:, :n_h].copy(), g.ytr, Hva_all[:, :n_h].copy(), yva)
                head = ConsolidationHead(
                    [len(subs[b][1]) for b in blocks], [n_keep[b] for b in blocks],
                    {"sub_weight": np.concatenate([subs[b][0].ravel() for b in blocks]).astype(np.float64),
                     "sub_bias": np.concatenate([subs[b][1] for b in blocks]).astype(np.float64), **top})
                col_idx = np.concatenate([cols[b] for b in blocks])
                state = HeadState(kind, pooling, eta, l_temp, groups, g.mean[col_idx], g.scale[col_idx], res,
                                  len(g.ytr), head=head)
                seen[sig] = state
            out.append(state)
            on_fit(state)
            key = validation_key(state.result.validation, fitter.cfg.metric)
            best_key, since = (key, 0) if best_key is None or key > best_key else (best_key, since + 1)
    return out


def refit_head(fitter: "Fitter", best: HeadState) -> bool:
    """Train the chosen head's cross-layer network again on every train row (its search held a sample):
    hidden units computed chunk by chunk from the store, the frozen sub-networks unchanged. Returns False
    (keeping the sample's head) when every row's hidden units would exceed the memory budget."""
    n = len(fitter.splits.y[fitter.tr])
    width = int(best.head.arrays["sub_bias"].shape[0])
    budget = fitter.cfg.memory_budget_mb
    if budget is not None and 4 * n * width > budget * 2**20:
        return False
    picks = fitter.picks(best)
    parts = [best.head.hidden(apply_standardization(X, best.mean, best.scale)).numpy()
             for _, X in fitter.store.gather_by_chunk(fitter.fs, picks, fitter.splits.plans[fitter.tr])]
    Htr = np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
    Xva = apply_standardization(fitter.read_val(picks), best.mean, best.scale)
    top, res = _cross_layer(fitter, Htr, fitter.splits.y[fitter.tr], best.head.hidden(Xva).numpy(), fitter.val_y)
    best.head.arrays.update(top)
    best.result, best.n_rows = res, n
    rescore(fitter, [best])
    return True
