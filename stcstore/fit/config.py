"""The options of one fit (`FitConfig`): a leaf of `stcstore.fit`, imported by the modules that read them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..core.errors import StcError
from ..core.result import positional, stage_config
from ..core.names import (
    AGGREGATORS,
    DEFAULT_ETAS,
    KINDS,
    MEMORY_BUDGET_MB,
    METRICS,
    POOLINGS,
    PROBE_ROWS,
    PROBES,
    REGRESSION_METRICS,
    SELECTIONS,
    TASKS,
    VAL_FRACTION,
    VAL_ROWS,
    check_at_least,
    check_choice,
    check_kinds_poolings,
    check_name,
)
from .probe import PathConfig
from .sparsify import check_eta


@dataclass(frozen=True)
class FitConfig:
    """Options of one fit; validated without I/O."""

    dataset: str
    model: str = "default"  # as given to extract, its path, or a feature-set id prefix
    etas: tuple[float, ...] = DEFAULT_ETAS
    metric: str | None = None  # selection metric: accuracy (default) | macro_f1; regression: r2 (default) | mae | pearson | spearman
    kinds: tuple[str, ...] = KINDS
    poolings: tuple[str, ...] = POOLINGS
    mix_kinds: bool = False  # also aggregate hidden and ffn neurons together (not in the paper)
    train_split: str = "train"
    val_split: str = "validation"
    test_split: str = "test"
    val_fraction: float = VAL_FRACTION  # carved from train (stratified, seeded) only when there is no validation split
    seed: int = 0
    threads: int | None = None  # torch threads of this process (the aggregate searches)
    workers: int | None = None  # probes at a time, each on one thread [default: core.pool.default_workers]
    probe_rows: int | None = PROBE_ROWS  # per-layer probes use a stratified sample of this many train rows
    val_rows: int | None = VAL_ROWS  # searches score a stratified sample of this many validation rows
    memory_budget_mb: int | None = MEMORY_BUDGET_MB  # aggregate train matrices above it: sampled search, streamed refit
    device: str = "cpu"  # torch device of the solver, e.g. cuda:0 (the store is read on the host)
    path: PathConfig = field(default_factory=PathConfig)
    task: str | None = None  # classification (default; refused for labels that look like values) | regression
    probe: str | None = None  # per-layer probes: lr (L1 path) | slp (one hidden layer; paper appendix A.2)
    aggregator: str = "lr"  # lr (the paper's L1 aggregate) | consolidation (the tweet-analysis preprint's head, compared with lr)
    selection: str = "ensemble"  # ensemble (best aggregate of each kind/pooling, averaged) | best (the single best)
    # where it reads and writes (not part of the fit's id): the store, the classifier directory to write (None:
    # the store's tables only) and whether an existing classifier there may be replaced
    store: str | None = None
    out: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        check_name(self.dataset, "--dataset")
        if self.task is not None:
            check_choice(self.task, TASKS, "--task")
        check_choice(self.aggregator, AGGREGATORS, "--aggregator")
        check_choice(self.selection, SELECTIONS, "--selection")
        if self.probe is None:  # the consolidation head's phase 1 is the SLP probes
            object.__setattr__(self, "probe", "slp" if self.aggregator == "consolidation" else "lr")
        check_choice(self.probe, PROBES, "--probe")
        if self.aggregator == "consolidation" and self.probe != "slp":
            raise StcError(f"--aggregator consolidation builds on the SLP probes' networks (its phase 1); "
                           f"--probe {self.probe} has none: use --probe slp, or leave --probe out")
        regression = self.task == "regression"
        if self.metric is None:
            object.__setattr__(self, "metric", "r2" if regression else "accuracy")
        elif self.metric in REGRESSION_METRICS and not regression:
            raise StcError(f"--metric {self.metric} is for a regression target: add --task regression")
        check_choice(self.metric, REGRESSION_METRICS if regression else METRICS, "--metric")
        if not self.etas:
            raise StcError("--etas needs at least one value")
        for e in self.etas:
            check_eta(e)
        check_kinds_poolings(self.kinds, self.poolings)
        if not (0.0 < self.val_fraction < 1.0):
            raise StcError("--val-fraction must be between 0 and 1")
        check_at_least(self, ("threads", "workers"))
        check_at_least(self, ("probe_rows", "val_rows"), 100)
        check_at_least(self, ("memory_budget_mb",), 1)


def legacy_fit_config(cfg: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> FitConfig:
    """`fit(cfg)`'s config from 0.2's call `fit(store, cfg, out=None, force=False)` (also `ray_fit(store, cfg,
    opts, out, force)`: `args` after the options), or `cfg` itself."""
    cfg, rest = stage_config(cfg, args, FitConfig, ("store",))
    unknown = set(kw) - {"out", "force"}
    if unknown:
        raise TypeError(f"fit() got unexpected keyword arguments {', '.join(sorted(unknown))}")
    out, force = positional(rest, kw.get("out", cfg.out), kw.get("force", cfg.force))
    if (out, force) != (cfg.out, cfg.force):
        cfg = replace(cfg, out=None if out is None else str(out), force=bool(force))
    return cfg
