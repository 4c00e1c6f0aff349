"""`stcstore fit`: per-layer L1 probes -> η-sparsify -> cross-layer aggregation -> choice on validation.

Stages (STC paper, sections 3.2-3.4 and Algorithm 1):

1. probes: every (kind, pooling, layer) block of the feature set, one dense block in memory at a time,
   standardised with train statistics; the L1 strength of each probe is chosen on validation along a
   regularisation path (`probe.fit_path`). Only the chosen point of each path is kept.
2. sparsify: per probe and η, the fewest neurons whose squared weights reach η·‖w‖² (`sparsify`).
3. aggregate: per (kind, pooling), the neurons the largest η keeps in every layer are read once
   (`Store.gather` of just those columns); for every η and depth L_temp, the kept neurons of layers
   0..L_temp are concatenated and another L1 path is fitted and chosen on validation.
4. choose (`--selection`, `fit.selection`): by default the validation-best aggregate of every kind/pooling,
   averaged (an ensemble); or the single validation-best aggregate. Validation scores within a tolerance
   are ties, decided by log-loss and then by simplicity (shallower L_temp, fewer neurons), never by rounding.
   Test rows are read only now, once, for the three reported states (baseline, best probe, STC), and
   scored with exactly the fitted weights that were chosen.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..classifier.files import check_classifier_out
from ..core.atomic import remove_stale_temps, store_lock
from ..core.console import eprint, progress
from ..core.errors import StcError
from ..core.fingerprint import fingerprint
from ..core.names import FeatureBlock
from ..core.pool import default_workers, start_workers
from ..core.result import require_store
from ..store.store import Store
from .config import FitConfig, legacy_fit_config
from .consolidation import consolidate, refit_head
from .probe import better
from .efficiency import efficiency
from .outcome import build_classifier, chosen_entry, test_reports
from .parallel import Workers, confirm_one
from .result import FitResult, noise_messages, peak_rss_mb
from .records import AggState, HeadState, ProbeState
from .search import Ensemble, Fitter
from .selection import best_state, ranked
from .splits import Splits, plan_splits
from .tables import aggregate_rows, probe_rows, write_tables
from .validation import rescore

# 2: patience 2, tol 1e-4, aggregates warm-started around their neighbour's choice; 3: --selection (ensemble by
# default), validation ties within a tolerance decided by simplicity, the embedding baseline
FIT_FORMAT_VERSION = 3


def _notes(splits: Splits, cfg: FitConfig) -> list[str]:
    messages = []
    if splits.carved_validation:
        messages.append(f"no {cfg.val_split!r} rows: validation is a stratified {cfg.val_fraction:.0%} of "
                        f"{cfg.train_split!r}, seed {cfg.seed}")
    for name, n in splits.unlabeled.items():
        if n:
            messages.append(f"{n} rows of split {name!r} have no label and were not used")
    unseen = 0 if not splits.classes else int((splits.y[cfg.val_split] < 0).sum() + (splits.y[cfg.test_split] < 0).sum())
    if unseen:
        messages.append(f"{unseen} validation/test rows have a label that train does not have (always wrong)")
    return messages


# fits the probes of these blocks, yielding their states in block order (locally: `parallel.Workers.probes`;
# `stcstore.cluster.ray_fit`: as Ray tasks)
ProbeRunner = Callable[[Fitter, list[FeatureBlock]], Iterator[ProbeState]]


def _fit_probes(fitter: Fitter, blocks: list[FeatureBlock], bar: Any, runner: ProbeRunner
                ) -> dict[FeatureBlock, ProbeState]:
    """Stage 1: one L1 probe per block, its strength chosen on validation."""
    metric = fitter.cfg.metric
    probes: dict[FeatureBlock, ProbeState] = {}
    for i, (b, p) in enumerate(zip(blocks, runner(fitter, blocks))):
        if p.block != b:
            raise StcError(f"internal: probe of {p.block.column} returned for {b.column}")
        probes[b] = p
        bar.update(1)
        bar.set_postfix_str(f"probe {b.column} val {metric} {p.result.validation[metric]:.4f}")
        if bar.disable:
            eprint(f"probe {i + 1}/{len(blocks)} {b.column}: val {metric} {p.result.validation[metric]:.4f}, "
                   f"{p.result.chosen.n_nonzero} neurons, {p.result.seconds:.1f}s")
    rescore(fitter, probes.values())  # searched on a validation sample: compared on every row
    return probes


def _per_group(fitter: Fitter, groups: list[tuple[str, str]], probes: dict[FeatureBlock, ProbeState], bar: Any,
               search: Callable[..., list[Any]] | Workers, what: str) -> list[Any]:
    """`search(kind, pooling, probes, on_fit)` for every (kind, pooling) that has probes (or `Workers`: their
    aggregate searches side by side): all its states."""
    metric = fitter.cfg.metric
    out: list[Any] = []
    groups = [(k, p) for k, p in groups if any(b.kind in k.split("+") and b.pooling == p for b in probes)]
    if isinstance(search, Workers):
        found = search.aggregates(fitter, groups, probes)
    else:
        found = (search(kind, pooling, probes, lambda _: bar.update(1)) for kind, pooling in groups)
    for (kind, pooling), states in zip(groups, found):
        out.extend(states)
        if isinstance(search, Workers):
            bar.update(len(states))
        if bar.disable:
            top = best_state(states, metric)
            eprint(f"{what} {kind}.{pooling}: best val {metric} {top.result.validation[metric]:.4f} "
                   f"(η {top.eta}, L_temp {top.l_temp}, {top.n_neurons} neurons)")
    return out


def _fit_aggregates(fitter: Fitter, groups: list[tuple[str, str]], probes: dict[FeatureBlock, ProbeState],
                    bar: Any, workers: Workers) -> tuple[list[AggState], AggState | Ensemble]:
    """Stages 2-3: sparsify every probe at every η and aggregate layers 0..L_temp; returns every aggregate
    and the chosen classifier (`--selection`): the ensemble of each kind/pooling's validation-best aggregate,
    or the single validation-best one."""
    metric = fitter.cfg.metric
    aggs = _per_group(fitter, groups, probes, bar, workers, "aggregate")
    rescore(fitter, aggs)  # searched on a validation sample: compared on every row
    n_train = len(fitter.splits.y[fitter.tr])
    if fitter.cfg.path.warm_aggregates and fitter.cfg.path.confirm_top:
        # the few best of the local searches also get the full path (an aggregate fitted on a row sample is
        # refitted on every row below instead)
        full = list({id(a.result): a for a in aggs if a.n_rows == n_train}.values())
        tops = ranked(full, metric, fitter.cfg.path.confirm_top)
        for a, res in zip(tops, workers.map(confirm_one, [(fitter, a) for a in tops])):
            if better(res.validation, a.result.validation, metric):
                res.seconds += a.result.seconds
                for other in aggs:  # states that share the fit (same neurons at another η) share the result
                    if other is not a and other.groups == a.groups:
                        other.result = res
                a.result = res
    best = best_state(aggs, metric)
    members = [best]
    if fitter.cfg.selection == "ensemble":
        tops = [best_state([a for a in aggs if (a.kind, a.pooling) == g], metric)
                for g in dict.fromkeys((a.kind, a.pooling) for a in aggs)]
        members = ranked(tops, metric, len(tops))  # the validation-best first
    for m in members:
        if m.n_rows < n_train:  # searched on a sample: the classifier gets every row
            eprint(f"refitting {m.kind}.{m.pooling} η {m.eta} L_temp {m.l_temp} on every train row "
                   f"(searched on {m.n_rows:,}), streamed from disk")
            fitter.refit(m)
    if len(members) == 1:
        return aggs, members[0]
    ens = Ensemble(members, regression=fitter.K == 0)
    ens.result.validation = fitter.validation_scores(ens)
    return aggs, ens


def _fit_heads(fitter: Fitter, groups: list[tuple[str, str]], probes: dict[FeatureBlock, ProbeState],
               bar: Any) -> tuple[list[HeadState], HeadState]:
    """`--aggregator consolidation`: a consolidation head per (kind, pooling, η, L_temp) on the SLP probes;
    returns them all and the validation-best one (refitted on every train row if searched on a sample)."""
    metric = fitter.cfg.metric
    heads = _per_group(fitter, groups, probes, bar, lambda *a: consolidate(fitter, *a), "consolidation head")
    rescore(fitter, heads)
    best = best_state(heads, metric)
    if best.n_rows < len(fitter.splits.y[fitter.tr]):
        eprint(f"training the chosen consolidation head's cross-layer network on every train row (searched on "
               f"{best.n_rows:,})")
        if not refit_head(fitter, best):
            eprint("  skipped: every row's hidden units would exceed the memory budget; the head stays as searched")
    return heads, best


def _search(fitter: Fitter, blocks: list[FeatureBlock], groups: list[tuple[str, str]], seconds: dict[str, float],
            probe_runner: ProbeRunner, workers: Workers
            ) -> tuple[dict, dict, list[AggState], AggState, list[HeadState], HeadState | None]:
    """Stages 1-3: probes and aggregates; with `--aggregator consolidation`, the SLP probes and the head, and
    beside them what `--aggregator lr` gives on the same data (LR probes and their LR aggregate).
    Returns (probes, LR probes, LR aggregates, best LR aggregate, heads, best head)."""
    cfg = fitter.cfg
    n_agg_fits = sum(len(cfg.etas) * len({b.layer for b in blocks if b.kind in k.split("+") and b.pooling == p})
                     for k, p in groups)
    two = cfg.aggregator == "consolidation"
    with progress((len(blocks) + n_agg_fits) * (2 if two else 1), f"fit {cfg.dataset}", "fit") as bar:
        t0 = time.perf_counter()
        probes = _fit_probes(fitter, blocks, bar, probe_runner)
        seconds["probes"] = time.perf_counter() - t0
        lr_fitter, lr_probes = fitter, probes
        if two:
            t0 = time.perf_counter()
            lr_fitter = fitter.variant(probe="lr", aggregator="lr")
            lr_probes = _fit_probes(lr_fitter, blocks, bar, probe_runner)
            seconds["lr_probes"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        aggs, best = _fit_aggregates(lr_fitter, groups, lr_probes, bar, workers)
        fitter.embedding = fitter.embedding or lr_fitter.embedding  # fitted beside the searches, if it was
        seconds["aggregate"] = time.perf_counter() - t0
        heads, best_head = [], None
        if two:
            t0 = time.perf_counter()
            heads, best_head = _fit_heads(fitter, groups, probes, bar)
            seconds["consolidation"] = time.perf_counter() - t0
    return probes, lr_probes, aggs, best, heads, best_head


def _fit_config(cfg: FitConfig, fitter: Fitter, messages: list[str]) -> dict[str, Any]:
    """The options that define the fit's result (its id): how it ran (threads, workers, device) is left out, and so
    are options that did not apply, so that they do not change the id."""
    fit_cfg = {k: v for k, v in asdict(cfg).items() if k not in ("threads", "workers", "device", "store", "out", "force")}
    if cfg.task in (None, "classification"):  # the default: classification fit ids stay as they were
        fit_cfg.pop("task")
    if cfg.probe == "lr":  # likewise
        fit_cfg.pop("probe")
    if cfg.aggregator == "lr":  # likewise
        fit_cfg.pop("aggregator")
    if not fitter.probe_sampled:  # the cap did not apply: it did not change the result (nor the fit id)
        fit_cfg.pop("probe_rows")
    if not fitter.val_sampled:  # likewise
        fit_cfg.pop("val_rows")
    else:
        messages.append(f"validation has {len(fitter.splits.y[cfg.val_split]):,} rows: the searches scored a stratified "
                        f"sample of {len(fitter.val_y):,} (--val-rows); every choice between candidates and every "
                        f"reported validation score used all of them")
    if not fitter.agg_rows:  # nor did the memory budget
        fit_cfg.pop("memory_budget_mb")
    else:  # the budget's rule (0.3: train rows twice and the validation rows) decides the sample
        fit_cfg["memory_budget_holds"] = "2 x train + validation"
        messages.append("memory budget {} MB: aggregates of {} searched on a stratified sample of train rows "
                        "({}); the chosen one refitted on all {:,} train rows, streamed from disk".format(
                            cfg.memory_budget_mb, ", ".join(f"{k}.{p}" for k, p in fitter.agg_rows),
                            ", ".join(f"{n:,}" for n in fitter.agg_rows.values()), len(fitter.splits.y[cfg.train_split])))
    return fit_cfg


def fit(cfg: FitConfig, *legacy: Any, probe_runner: ProbeRunner | None = None, **legacy_kw: Any) -> FitResult:
    """Fit STC on one dataset of the store `cfg.store`; save the chosen classifier to `cfg.out` (a new directory,
    or one `cfg.force` may replace). Holds the store's lock: the features it reads do not change under it, and its
    tables are written safely. `probe_runner` fits the per-layer probes elsewhere (`stcstore.cluster.ray_fit`);
    the rest runs here. 0.2's `fit(store, cfg, out=None, force=False)` still works."""
    cfg = legacy_fit_config(cfg, legacy, legacy_kw)
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    store = Store(require_store(cfg.store, "fit"))
    store.require()
    force = cfg.force
    out_path = Path(cfg.out) if cfg.out is not None else None
    if out_path is not None:
        check_classifier_out(out_path, force)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    with store_lock(store.root, "stcstore fit"):
        remove_stale_temps(store.root / "fits")  # a killed fit's spill and table temps
        fs = store.feature_set(cfg.dataset, cfg.model)
        blocks = [b for b in fs.blocks if b.kind in cfg.kinds and b.pooling in cfg.poolings]
        if not blocks:
            raise StcError(f"feature set {fs.id[:12]} has no blocks for --kinds {','.join(cfg.kinds)} and --poolings "
                           f"{','.join(cfg.poolings)}; it holds {', '.join(fs.manifest.columns[:6])} ...")
        workers = Workers(cfg.workers or default_workers(cfg.device))
        start_workers(workers.n)  # ready by the first probe (the CLI may have started them already)
        t0 = time.perf_counter()
        splits = plan_splits(store, fs, cfg)
        seconds["plan"] = time.perf_counter() - t0
        messages = _notes(splits, cfg)
        label_names = {c: n for c, n in store.label_names(cfg.dataset).items() if c in splits.classes}
        for m in messages:
            eprint(m)
        fitter = Fitter(store, fs, cfg, splits)
        groups = [(k, p) for k in cfg.kinds for p in cfg.poolings]
        if cfg.mix_kinds and len(cfg.kinds) > 1:
            groups += [("+".join(cfg.kinds), p) for p in cfg.poolings]
        probes, lr_probes, aggs, best, heads, best_head = _search(fitter, blocks, groups, seconds,
                                                                   probe_runner or workers.probes, workers)
        chosen = best_head or best
        t0 = time.perf_counter()
        reports = test_reports(fitter, fs, probes, best, best_head)
        seconds["test"] = time.perf_counter() - t0
        messages.extend(noise_messages(reports["noise"]))
        eff = efficiency(fs.manifest.fingerprint, fs.manifest.model_parameters, probes,
                         heads or aggs, chosen, len(splits.y[cfg.train_split]), fitter.K if fitter.K != 2 else 1,
                         cfg.metric)
        fit_cfg = _fit_config(cfg, fitter, messages)
        fit_id = fingerprint([fs.id, splits.data_fingerprint, fit_cfg, FIT_FORMAT_VERSION])
        t0 = time.perf_counter()
        all_probes = list(probes.values()) + ([] if lr_probes is probes else list(lr_probes.values()))
        if write_tables(store, cfg.dataset, fit_id, probe_rows(fit_id, fs, all_probes),
                        aggregate_rows(fit_id, fs, [*aggs, *heads], chosen)):
            messages.append(f"replaced the tables of the identical earlier fit {fit_id}")
    if out_path is not None:
        clf = build_classifier(fs, splits, chosen, reports, fit_id, fit_cfg, cfg.seed, len(fitter.probe_y),
                               fitter.search_rows, label_names=label_names, efficiency=eff)
        clf.save(out_path, force=force)
    seconds["write"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    return FitResult(
        dataset=cfg.dataset, feature_set=fs.id, model=fs.model, classes=splits.classes,
        task="classification" if splits.classes else "regression", metric=cfg.metric,
        baseline=reports["baseline"], best_probe=reports["best_probe"], stc=reports["stc"],
        chosen=chosen_entry(chosen), aggregators=reports.get("aggregators", {}),
        embedding_baseline=reports["embedding_baseline"], noise=reports["noise"], selection=cfg.selection,
        n_train=len(splits.y[cfg.train_split]), n_validation=len(splits.y[cfg.val_split]),
        n_test=len(splits.y[cfg.test_split]), n_probe_rows=len(fitter.probe_y),
        n_search_rows=fitter.search_rows,
        carved_validation=splits.carved_validation, seed=cfg.seed,
        fit_id=fit_id, classifier_dir=str(out_path) if out_path is not None else None,
        seconds={k: round(v, 2) for k, v in seconds.items()}, peak_rss_mb=round(peak_rss_mb(), 1),
        efficiency=eff, messages=messages, label_names=label_names,
    )
