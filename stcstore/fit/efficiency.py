"""The STC paper's efficiency tables (section 5.2, Tables 5-7), for the user's model and data.

* Table 5, trainable parameters: fine-tuning updates the model's non-embedding parameters (counted when the
  feature set was extracted, else estimated from its shape); STC trains the probes (SLP probes: both
  layers) and the aggregate (a consolidation head: its cross-layer network). Both
  this fit's own count and the paper's estimate, L(1+k)D (1 + ρ_η N_f (L+1)/2) with ρ_η = 0.1, are given.
* Table 6, training FLOPs, with the paper's per-sequence estimates (after Kaplan et al. 2020): fine-tuning
  6 N_param per text and epoch; Frozen + STC one forward pass (2 N_param + 2 L N D per text, N the
  sequence length, here the feature set's max_length) plus the probes, 2 L (1+k) D + L per text, and
  the aggregation, ρ_η (L+1)/2 times that. They reproduce the paper's Table 6 (DistilBERT on IMDb: 9.90T vs
  3.46T).
* Table 7, lower layers: the best validation score of the chosen kind and pooling when only the lower
  20/40/60/80/100 % of the blocks may run (the aggregates the fit tried with such an L_temp), with the
  forward-pass saving that depth gives (blocks run / all blocks).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..classifier.classifier import groups_blocks_run
from .probe import validation_key

if TYPE_CHECKING:
    from .records import AggState, ProbeState

RHO_ETA = 0.1  # the paper's share of features kept by η, for its estimate
LOWER_SHARES = (0.2, 0.4, 0.6, 0.8, 1.0)


def model_parameters(fp: dict[str, Any], counted: dict[str, int] | None) -> tuple[int, str]:
    """Non-embedding parameters of the model: counted at extraction when recorded, else estimated from its
    shape (attention 4 D² + 4 D, FFN 2 D d_ff (3 for gated families) + d_ff + D, two norms 4 D)."""
    if counted and counted.get("non_embedding"):
        return int(counted["non_embedding"]), "counted"
    L, D, F = int(fp["n_layers"]), int(fp["hidden_size"]), int(fp["ffn_size"])
    gated = str(fp.get("adapter")) in ("llama", "mistral", "qwen2", "gemma")
    return L * (4 * D * D + 4 * D + (3 if gated else 2) * D * F + F + D + 4 * D), "estimated from the shape"


def efficiency(fp: dict[str, Any], counted: dict[str, int] | None, probes: dict[Any, "ProbeState"],
               aggs: list["AggState"], best: "AggState", n_train: int, n_outputs: int, metric: str
               ) -> dict[str, Any]:
    L, D, F = int(fp["n_layers"]), int(fp["hidden_size"]), int(fp["ffn_size"])
    k = F / D if D else 0.0  # a synthetic store of FFN blocks only records no hidden width
    n_param, how = model_parameters(fp, counted)
    K = max(n_outputs, 1)
    probe_params = sum(_probe_parameters(p, K) for p in probes.values())
    # a consolidation head trains its cross-layer network (its frozen sub-networks are the SLP probes')
    # an ensemble: each member's weights and intercepts
    members = getattr(best, "members", [best])
    agg_params = best.trainable_parameters() if hasattr(best, "trainable_parameters") else \
        sum((m.n_neurons + 1) * K for m in members)
    n_poolings = len({b.pooling for b in probes}) or 1
    n_lr = L * (1 + k) * D
    paper_stc = (1 + RHO_ETA * n_poolings * (L + 1) / 2) * n_lr
    return {
        "parameters": {"fine_tuning": n_param, "fine_tuning_source": how, "stc": probe_params + agg_params,
                       "stc_probes": probe_params, "stc_classifier": agg_params, "paper_estimate_stc": round(paper_stc),
                       "ratio": round(n_param / max(probe_params + agg_params, 1), 1)},
        "training_flops": training_flops(n_param, L, D, F, int(fp.get("max_length") or 512), n_train),
        "lower_layers": lower_layers(aggs, getattr(best, "top", best), L, metric),
    }


def _probe_parameters(p: "ProbeState", K: int) -> int:
    """A linear probe's weights and intercepts, or an SLP probe's two layers."""
    if p.slp is not None:
        return sum(int(a.size) for a in (p.slp.W1, p.slp.b1, p.slp.W2, p.slp.b2))
    return (int(p.mean.shape[0]) + 1) * K


def training_flops(n_param: int, L: int, D: int, F: int, seq: int, n_train: int) -> dict[str, Any]:
    """Table 6: the paper's per-text estimates over one epoch of `n_train` texts."""
    k = F / D if D else 0.0
    c_train = 6 * n_param * n_train
    c_forward = (2 * n_param + 2 * L * seq * D) * n_train
    c_probes = (2 * L * (1 + k) * D + L) * n_train
    c_agg = RHO_ETA * (L + 1) / 2 * c_probes
    total = c_forward + c_probes + c_agg
    return {"texts": n_train, "sequence_length": seq, "fine_tuning_per_epoch": c_train, "forward": c_forward,
            "lr_probes": c_probes, "lr_aggregation": c_agg, "frozen_stc": total,
            "speedup_1_epoch": round(c_train / total, 2), "speedup_2_epochs": round(2 * c_train / total, 2)}


def lower_layers(aggs: list["AggState"], best: "AggState", n_layers: int, metric: str) -> list[dict[str, Any]]:
    """Table 7: per share of the lower blocks, the validation-best aggregate of the chosen kind and pooling
    whose L_temp runs within them."""
    mine = [a for a in aggs if a.kind == best.kind and a.pooling == best.pooling]
    rows = []
    for share in LOWER_SHARES:
        budget = max(1, math.ceil(share * n_layers - 1e-9))
        fits = [a for a in mine if _blocks(a) <= budget]
        top = max(fits, key=lambda a: (validation_key(a.result.validation, metric), -a.l_temp), default=None)
        rows.append({"share": share, "blocks": budget,
                     "forward_saving": round(1 - (_blocks(top) if top else budget) / n_layers, 3),
                     "validation": None if top is None else top.result.validation[metric],
                     "eta": None if top is None else top.eta, "l_temp": None if top is None else top.l_temp,
                     "blocks_run": None if top is None else _blocks(top)})
    return rows


def _blocks(a: "AggState") -> int:
    return groups_blocks_run(a.groups)
