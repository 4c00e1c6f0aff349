"""The fit's typed records: what its search keeps of each probe (`ProbeState`), aggregate (`AggState`),
consolidation head (`HeadState`), kind/pooling group (`GroupData`) and ensemble (`EnsembleResult`). A leaf of
`stcstore.fit`: the search, the consolidation head's search, the tables and the outcome read them, none of
them imports the others for their types."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..classifier.classifier import FeatureGroup
from ..classifier.heads import ConsolidationHead
from ..core.names import FeatureBlock
from .probe import PathResult
from .slp import SLP
from .sparsify import select_neurons


@dataclass
class ProbeState:
    """The chosen fitted state of one per-layer probe (standardisation + weights)."""

    block: FeatureBlock
    mean: np.ndarray
    scale: np.ndarray
    result: PathResult
    slp: SLP | None = None  # `--probe slp`: the network (result.chosen.coef then holds its input importances)


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
    n_rows: int = 0  # train rows it was fitted on (a sample when the memory budget applied)

    @property
    def n_neurons(self) -> int:
        return sum(len(g.neurons) for g in self.groups)


@dataclass
class GroupData:
    """One (kind, pooling)'s standardised kept neurons (at the largest η) in train and validation."""

    layers: list[int]
    order: list[FeatureBlock]  # blocks by layer
    kept: dict[FeatureBlock, np.ndarray]  # neurons the largest η keeps, most important first
    start: dict[FeatureBlock, int]  # first column of each block
    offsets: np.ndarray
    ytr: np.ndarray
    Xtr: np.ndarray
    Xva: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    def n_keep(self, probes: dict[FeatureBlock, ProbeState], eta: float) -> dict[FeatureBlock, int]:
        return {b: len(select_neurons(probes[b].result.chosen.coef, eta)) for b in self.order}


@dataclass
class EnsembleResult:
    validation: dict[str, float]  # the ensemble's own validation scores
    train: dict[str, float]


@dataclass
class HeadState(AggState):
    """One consolidation head the search tried: an aggregate's groups, standardisation and validation result,
    with the head (frozen sub-networks + cross-layer network) in place of linear weights."""

    head: ConsolidationHead = field(kw_only=True)

    @property
    def units(self) -> int:
        return int(self.head.arrays["coef1"].shape[0])

    def manifest_entry(self) -> dict:
        return {"type": "consolidation", "hidden_units": [int(h) for h in self.head.hidden_units],
                "units": self.units}

    def trainable_parameters(self) -> int:
        """Phase 2's trained weights: the cross-layer network (the frozen sub-networks were trained in phase 1)."""
        a = self.head.arrays
        return sum(int(a[n].size) for n in ("coef1", "intercept1", "coef", "intercept"))
