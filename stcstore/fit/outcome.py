"""The end of a fit: the reported states scored on test (read here, once per state), what `fit --json` says
of the chosen one, and the classifier it saves."""

from __future__ import annotations

from typing import Any, Union

from ..classifier.classifier import Classifier
from ..core.names import KINDS, METRICS, POOLINGS, REGRESSION_METRICS, FeatureBlock
from ..store.store import FeatureSet
from .metrics import reported
from .baselines import embedding_block, embedding_report, fit_embedding
from .records import AggState, HeadState, ProbeState
from .search import Ensemble, Fitter, state_decision
from .selection import best_state, noise_report
from .splits import Splits
from .validation import decisions, entry, rescore

Chosen = Union[AggState, HeadState, Ensemble]


def describe(s: Chosen) -> str:
    if isinstance(s, Ensemble):
        return f"ensemble of {len(s.members)}, L_temp {s.l_temp} ({s.n_neurons} neurons)"
    if isinstance(s, HeadState):
        return (f"{s.kind}.{s.pooling} η {s.eta} L_temp {s.l_temp} consolidation head ({s.n_neurons} neurons → "
                f"{sum(s.head.hidden_units)} frozen units → {s.units} units)")
    return f"{s.kind}.{s.pooling} η {s.eta} L_temp {s.l_temp} ({s.n_neurons} neurons)"


def chosen_entry(s: Chosen) -> dict[str, Any]:
    """`fit --json`'s "chosen": the configuration and, for a linear aggregate, its L1 strength; for an ensemble,
    its members' (kind and pooling join the members', η is their largest, L_temp their deepest)."""
    out: dict[str, Any] = {"aggregator": "consolidation" if isinstance(s, HeadState) else "lr", "kind": s.kind,
                           "pooling": s.pooling, "eta": s.eta, "l_temp": s.l_temp, "n_neurons": s.n_neurons}
    if isinstance(s, Ensemble):
        members = [chosen_entry(m) for m in s.members]
        for e, m in zip(members, s.members):
            e.pop("aggregator")
            e["validation"] = reported(m.result.validation)
        return {**out, "selection": "ensemble", "n_nonzero": sum(e["n_nonzero"] for e in members), "C": None,
                "lam": None, "members": members}
    if isinstance(s, HeadState):
        return {**out, "n_nonzero": s.n_neurons, "C": None, "lam": None,
                "frozen_units": sum(s.head.hidden_units), "units": s.units}
    c = s.result.chosen
    return {**out, "n_nonzero": c.n_nonzero, "C": c.C, "lam": c.lam}


def probe_cost(p: ProbeState) -> tuple:
    """Of probes with equal validation scores, the shallower (then the kind and pooling in their listed order)."""
    return (p.block.layer, KINDS.index(p.block.kind), POOLINGS.index(p.block.pooling))


def test_reports(fitter: Fitter, fs: FeatureSet, probes: dict[FeatureBlock, ProbeState], best: AggState | Ensemble,
                 best_head: HeadState | None) -> dict[str, Any]:
    """Stage 4: baseline, best probe and STC on validation and test; test is read here, once per state. With
    a consolidation head, "stc" is the head and "aggregators" holds it beside the best LR aggregate (of the
    LR probes: what `--aggregator lr` gives); baseline and best probe are then the head's SLP probes."""
    metric = fitter.cfg.metric

    def probe_report(p: ProbeState) -> dict[str, Any]:
        test = fitter.test_scores([(p.block.column, None)], p.mean, p.scale, state_decision(p))
        c = p.result.chosen
        what = f"{p.block.column} (SLP, {p.slp.W1.shape[0]} hidden units, epoch {p.result.step})" if p.slp else \
            f"{p.block.column} ({c.n_nonzero} neurons, C {c.C:.3g})"
        return {"what": what, "kind": p.block.kind,
                "pooling": p.block.pooling, "layer": p.block.layer, "n_nonzero": c.n_nonzero, "C": None if p.slp else c.C,
                "validation": reported(p.result.validation), "test": test}

    def stc_report(s: Chosen) -> dict[str, Any]:
        picks = fitter.picks(s)
        return {"what": describe(s), "validation": reported(s.result.validation),
                "test": fitter.test_scores(picks, s.mean, s.scale, state_decision(s)), "chosen": chosen_entry(s)}

    base_block = FeatureBlock("hidden", "single", fs.manifest.n_layers)
    base = probes.get(base_block)
    if base is None and fs.has(base_block.kind, base_block.pooling, base_block.layer):
        base = fitter.probe(base_block)  # outside --kinds/--poolings: fit it anyway
        rescore(fitter, [base])
    if base is not None:
        baseline = probe_report(base)
    else:
        names = REGRESSION_METRICS if fitter.K == 0 else METRICS
        baseline = {"what": f"unavailable: the feature set has no {base_block.column} block", "validation":
                    {m: None for m in names}, "test": {m: None for m in names}}
    top_probe = best_state(list(probes.values()), metric, probe_cost)
    best_probe = probe_report(top_probe)
    out: dict[str, Any] = {"baseline": baseline, "best_probe": best_probe}
    # what a user has without stcstore: the model's sentence embedding and an L2 logistic regression
    eblock = embedding_block(fs)
    emb = fitter.embedding[0] if fitter.embedding is not None else \
        fit_embedding(fitter, eblock) if eblock is not None else None
    if emb is not None:
        rescore(fitter, [emb])
    out["embedding_baseline"] = embedding_report(fitter, emb) if emb is not None else {
        "what": "unavailable: the feature set has no last-layer hidden block", "validation": {}, "test": {}}
    # how sure: bootstrap standard errors of validation, and STC's margins over the others
    chosen = best_head or best
    compared = {"stc": chosen, "best_probe": top_probe, "baseline": base, "embedding_baseline": emb}
    compared = {k: s for k, s in compared.items() if s is not None}
    dec = dict(zip(compared, decisions(fitter, [entry(fitter, s) for s in compared.values()])))
    out["noise"] = noise_report(dec, fitter.splits.y[fitter.va], fitter.K, metric, seed=fitter.cfg.seed)
    lr = stc_report(best)
    if best_head is None:
        lr.pop("chosen")
        return {**out, "stc": lr}
    head = stc_report(best_head)
    return {**out, "stc": {k: v for k, v in head.items() if k != "chosen"},
            "aggregators": {"lr": lr, "consolidation": head}}


def build_classifier(fs: FeatureSet, splits: Splits, chosen: Chosen, reports: dict[str, Any], fit_id: str,
                     fit_cfg: dict[str, Any], seed: int, probe_rows: int, search_rows: int,
                     label_names: dict[str, str] | None = None, efficiency: dict[str, Any] | None = None) -> Classifier:
    """The chosen classifier, with its fit's record; `label_names` and `efficiency` are for display only (not in
    its fingerprint)."""
    fit = {"fit_id": fit_id, "config": fit_cfg, "data_fingerprint": splits.data_fingerprint,
           "carved_validation": splits.carved_validation, "seed": seed, "probe_rows": probe_rows,
           "search_rows": search_rows}
    metrics = {k: {f: v for f, v in r.items() if f in ("validation", "test", "what")}
               for k, r in reports.items() if k not in ("aggregators", "noise")}
    if "noise" in reports:
        metrics["noise"] = reports["noise"]
    if "aggregators" in reports:
        metrics["aggregators"] = reports["aggregators"]
    task = "regression" if not splits.classes else "classification"
    common = dict(fs=fs, groups=chosen.groups, classes=splits.classes, mean=chosen.mean, scale=chosen.scale,
                  kind=chosen.kind, pooling=chosen.pooling, eta=chosen.eta, l_temp=chosen.l_temp, metrics=metrics,
                  task=task, label_names=label_names, efficiency=efficiency)
    if isinstance(chosen, Ensemble):
        h = chosen.head
        entry = chosen_entry(chosen)
        head = {"type": "ensemble", "members": [
            {**{k: e[k] for k in ("kind", "pooling", "eta", "l_temp", "n_neurons", "n_nonzero", "C", "lam",
                                  "validation")}, "groups": len(m.groups)} for e, m in zip(entry["members"], chosen.members)]}
        return Classifier.from_fit(**common, coef=h.coef, intercept=h.intercept,  # type: ignore[arg-type]
                                   fit={**fit, "lam": None, "C": None}, head=head)
    if isinstance(chosen, HeadState):
        a = chosen.head.arrays
        return Classifier.from_fit(**common, coef=a["coef"], intercept=a["intercept"],  # type: ignore[arg-type]
                                   fit={**fit, "lam": None, "C": None}, head=chosen.manifest_entry(),
                                   head_arrays={k: v for k, v in a.items() if k not in ("coef", "intercept")})
    c = chosen.result.chosen
    return Classifier.from_fit(**common, coef=c.coef, intercept=c.intercept,  # type: ignore[arg-type]
                               fit={**fit, "lam": c.lam, "C": c.C})
