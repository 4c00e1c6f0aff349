"""The selection study (issue 22): which rule, choosing on validation only, gives the classifier that tests best.

For each dataset and each of `--reshuffles` seeds, train and validation are pooled and split again at their
original sizes (stratified; test stays fixed), the fit's search runs once (probes, then every aggregate of
every kind/pooling x η x L_temp), and each rule picks from the same candidates:

    argmax        today's (0.2.0) rule: the best validation score, ties by log-loss
    one_se        one-standard-error rule: within one bootstrap SE of the best, the shallowest / fewest neurons
    smooth        the best validation score averaged over each (η, L_temp) cell's grid neighbours
    ensemble      the validation-best aggregate of each kind/pooling, probabilities averaged
    ensemble_se   the same, of the kind/poolings whose best is within one SE of the overall best
    ensemble3     the same, of the three kind/poolings with the best validation scores
    cv            the 8 best by validation, scored by 5-fold cross-validation of train + validation
and each rule again with its choice refitted on train + validation at the chosen strength (`+refit`).

Beside them: the paper's baseline (hidden.single.L probe), the embedding baseline (the model's sentence
embedding, last-layer mean pooling for encoders, with scikit-learn's L2 LogisticRegression / Ridge, C chosen
on validation: what a user does without stcstore), the best single probe, and with `--legacy` 0.1.0's
search (`PathConfig(patience=3, tol=1e-5, window=5, warm_aggregates=False)`, its argmax).

Test is read only to score what each rule chose. Prints a table of mean ± sd over reshuffles and writes
every figure as JSON (`--out`):

    python bench/selection.py --store ST --datasets tweeteval-irony,ei-reg-joy --reshuffles 5 --legacy --out sel.json
    python bench/selection.py --table sel.json          # the table again, from the JSON
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stcstore.fit.probe import PathConfig, apply_standardization, path_scores, standardize_, validation_key  # noqa: E402
from stcstore.classifier.linear import averaged  # noqa: E402
from stcstore.fit.search import Fitter, state_decision  # noqa: E402
from stcstore.fit.selection import bootstrap, signed  # noqa: E402
from stcstore.fit.solver import L1Logistic  # noqa: E402
from stcstore.fit.splits import Splits, _strata, plan_splits  # noqa: E402
from stcstore.fit.stage import FitConfig, _fit_aggregates, _fit_probes  # noqa: E402
from stcstore.store.store import Store  # noqa: E402

LEGACY = PathConfig(patience=3, tol=1e-5, window=5, warm_aggregates=False)
RULES = ("argmax", "one_se", "smooth", "ensemble", "ensemble_se", "cv")


def agg_key(a, metric: str) -> tuple:
    """0.2.0's ranking of aggregates (the `argmax` rule and the members of the ensembles measured here):
    validation metric, then log-loss (to 12 digits), then shallower L_temp and fewer neurons. The fit now
    ranks with `fit.selection.best_state`, which differs from it only where scores tie within 1e-6."""
    key = validation_key(a.result.validation, metric)
    return (key[0], round(key[1], 12), -a.l_temp, -a.n_neurons)


def probe_key(p, metric: str) -> tuple:
    """0.2.0's ranking of probes: as `agg_key`, ties to the shallower layer."""
    key = validation_key(p.result.validation, metric)
    return (key[0], round(key[1], 12), -p.block.layer)


class _Quiet:
    """A progress bar that shows nothing (the fit's own lines would drown the study's)."""

    disable = False

    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


def reshuffle(s: Splits, tr: str, va: str, seed: int) -> Splits:
    """Train and validation pooled and split again, stratified, at their original sizes."""
    chunk = np.concatenate([np.full(len(r), i) for i, r in enumerate(s.plans[tr])] +
                           [np.full(len(r), i) for i, r in enumerate(s.plans[va])])
    row = np.concatenate(list(s.plans[tr]) + list(s.plans[va]))
    y = np.concatenate([s.y[tr], s.y[va]])
    n_val = len(s.y[va])
    rng = np.random.default_rng(1000 + seed)
    strata = _strata(y)
    to_val = np.zeros(len(y), dtype=bool)
    for c in np.unique(strata):
        m = np.flatnonzero(strata == c)
        to_val[rng.permutation(m)[:int(round(len(m) * n_val / len(y)))]] = True
    n_chunks = len(s.plans[tr])
    plans, ys = dict(s.plans), dict(s.y)
    for name, mask in ((tr, ~to_val), (va, to_val)):
        order = np.lexsort((row[mask], chunk[mask]))  # store order, as plan_splits makes it
        c, r, yy = chunk[mask][order], row[mask][order], y[mask][order]
        plans[name] = [r[c == i] for i in range(n_chunks)]
        ys[name] = yy
    return replace(s, plans=plans, y=ys, data_fingerprint=f"{s.data_fingerprint}-reshuffle{seed}")


class Blocks:
    """Every row of train, validation and test of the blocks an aggregate uses, read once per group."""

    def __init__(self, fitter: Fitter) -> None:
        self.f = fitter
        self.cache: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}

    def block(self, kind: str, pooling: str, layer: int) -> dict[str, np.ndarray]:
        key = (kind, pooling, layer)
        if key not in self.cache:
            col = f"{kind}.{pooling}.{layer}"
            col = next(b.column for b in self.f.fs.blocks if (b.kind, b.pooling, b.layer) == key)
            self.cache[key] = {sp: self.f.read([(col, None)], sp) for sp in (self.f.tr, self.f.va, self.f.te)}
        return self.cache[key]

    def matrix(self, a, split: str) -> np.ndarray:
        return np.concatenate([self.block(g.kind, g.pooling, g.layer)[split][:, g.neurons] for g in a.groups], axis=1)


def metric_of(sc: np.ndarray, y: np.ndarray, K: int) -> dict[str, float]:
    s = path_scores(sc, y, K)
    return {k: float(v) for k, v in s.items() if k != "log_loss"}


def refit_all(a, B: Blocks, fitter: Fitter, cfg: FitConfig, folds: int | None = None, seed: int = 0):
    """The aggregate's strength, refitted on train + validation (its standardisation recomputed); returns
    test scores. With `folds`: the mean k-fold cross-validated metric on train + validation instead."""
    X = np.concatenate([B.matrix(a, fitter.tr), B.matrix(a, fitter.va)])
    y = np.concatenate([fitter.splits.y[fitter.tr], fitter.splits.y[fitter.va]])
    c = a.result.chosen
    if folds:
        rng = np.random.default_rng(seed)
        strata = _strata(y)
        fold = np.zeros(len(y), dtype=int)
        for s in np.unique(strata):
            m = rng.permutation(np.flatnonzero(strata == s))
            fold[m] = np.arange(len(m)) % folds
        out = []
        for k in range(folds):
            Xa, Xb = X[fold != k].copy(), X[fold == k].copy()
            mean, scale = standardize_(Xa)
            apply_standardization(Xb, mean, scale)
            pt = L1Logistic(torch.from_numpy(Xa), y[fold != k], fitter.K, tol=cfg.path.tol,
                            window=cfg.path.window).fit(c.lam, None, None)
            from stcstore.classifier.linear import decision
            out.append(path_scores(decision(Xb, pt.coef, pt.intercept), y[fold == k], fitter.K)[cfg.metric])
        return float(np.mean(out))
    mean, scale = standardize_(X)
    # the chosen weights, moved to the new standardisation, as the warm start
    coef = c.coef * (scale / a.scale)[None, :]
    intercept = c.intercept + (c.coef * ((mean - a.mean) / a.scale)[None, :]).sum(axis=1)
    warm = replace(c, coef=coef, intercept=intercept)
    pt = L1Logistic(torch.from_numpy(X), y, fitter.K, tol=cfg.path.tol, window=cfg.path.window).fit(c.lam, warm, c.lam)
    Xte = apply_standardization(B.matrix(a, fitter.te), mean, scale)
    from stcstore.classifier.linear import decision
    return decision(Xte, pt.coef, pt.intercept)


def embedding_baseline(fitter: Fitter, layer: int, pooling: str) -> dict:
    col = next(b.column for b in fitter.fs.blocks if (b.kind, b.pooling, b.layer) == ("hidden", pooling, layer))
    X = {sp: fitter.read([(col, None)], sp) for sp in (fitter.tr, fitter.va, fitter.te)}
    mean, scale = standardize_(X[fitter.tr])
    for sp in (fitter.va, fitter.te):
        apply_standardization(X[sp], mean, scale)
    y = fitter.splits.y
    best = None
    for C in np.logspace(-4, 2, 13):
        if fitter.K == 0:
            m = Ridge(alpha=1.0 / C).fit(X[fitter.tr], y[fitter.tr])
            dv, dt = m.predict(X[fitter.va])[:, None], m.predict(X[fitter.te])[:, None]
        else:
            m = LogisticRegression(C=C, max_iter=3000).fit(X[fitter.tr], y[fitter.tr])
            dv, dt = m.decision_function(X[fitter.va]), m.decision_function(X[fitter.te])
            dv, dt = (dv[:, None], dt[:, None]) if dv.ndim == 1 else (dv, dt)
        sv = path_scores(dv, y[fitter.va], fitter.K)
        key = validation_key(sv, fitter.cfg.metric)
        if best is None or key > best[0]:
            best = (key, C, sv, dt)
    _, C, sv, dt = best
    return {"what": f"{col} + L2 {'Ridge' if fitter.K == 0 else 'LogisticRegression'}, C {C:.3g}",
            "validation": metric_of_scores(sv), "test": metric_of(dt, y[fitter.te], fitter.K)}


def metric_of_scores(s: dict) -> dict:
    return {k: float(v) for k, v in s.items() if k not in ("log_loss", "mse")}


def choose(aggs: list, fitter: Fitter, B: Blocks, cfg: FitConfig, log, skip: tuple[str, ...] = ()) -> dict[str, list]:
    """Each rule's choice: a list of aggregates (one, or an ensemble's members)."""
    metric, K = cfg.metric, fitter.K
    yva = fitter.splits.y[fitter.va]
    uniq = list({id(a.result): a for a in aggs}.values())
    sval = {id(a): signed(a.result.validation[metric], metric) for a in aggs}

    def cost(a):
        return (a.l_temp, a.n_neurons, a.eta)

    def vdec(a):
        return state_decision(a)(apply_standardization(B.matrix(a, fitter.va), a.mean, a.scale))

    best = max(aggs, key=lambda a: agg_key(a, metric))
    se = float(np.std(bootstrap(vdec(best), yva, K, metric), ddof=1))
    out: dict[str, list] = {"argmax": [best]}
    top = sval[id(best)]
    out["one_se"] = [min((a for a in aggs if sval[id(a)] >= top - se), key=cost)]
    # smoothing over the (η, L_temp) grid of each kind/pooling
    sm = {}
    for a in aggs:
        nb = [b for b in aggs if b.kind == a.kind and b.pooling == a.pooling and
              abs(cfg.etas.index(b.eta) - cfg.etas.index(a.eta)) <= 1 and abs(b.l_temp - a.l_temp) <= 1]
        sm[id(a)] = float(np.mean([sval[id(b)] for b in nb]))
    out["smooth"] = [max(aggs, key=lambda a: (round(sm[id(a)], 9), -a.l_temp, -a.n_neurons))]
    groups = sorted({(a.kind, a.pooling) for a in aggs})
    per = [max((a for a in aggs if (a.kind, a.pooling) == g), key=lambda a: agg_key(a, metric)) for g in groups]
    out["ensemble"] = per
    out["ensemble_se"] = [a for a in per if sval[id(a)] >= top - se]
    out["ensemble3"] = sorted(per, key=lambda a: agg_key(a, metric), reverse=True)[:3]
    # 5-fold CV of train + validation for the 8 best (distinct fits)
    if "cv" not in skip:
        ranked = sorted(uniq, key=lambda a: agg_key(a, metric), reverse=True)[:8]
        cv = [(signed(refit_all(a, B, fitter, cfg, folds=5), metric), a) for a in ranked]
        out["cv"] = [max(cv, key=lambda t: (round(t[0], 9), -t[1].l_temp, -t[1].n_neurons))[1]]
    log(f"  SE {se:.4f}; argmax {describe(best)}; one_se {describe(out['one_se'][0])}")
    return out


def describe(a) -> str:
    return f"{a.kind}.{a.pooling} η {a.eta} L {a.l_temp} ({a.n_neurons})"


def test_of(members: list, fitter: Fitter, B: Blocks, refit: bool, cfg: FitConfig) -> dict:
    y = fitter.splits.y[fitter.te]
    decs = []
    for a in members:
        if refit:
            decs.append(refit_all(a, B, fitter, cfg))
        else:
            decs.append(state_decision(a)(apply_standardization(B.matrix(a, fitter.te), a.mean, a.scale)))
    sc = decs[0] if len(decs) == 1 else averaged(decs, regression=fitter.K == 0)
    return metric_of(sc, y, fitter.K)


def val_of(members: list, fitter: Fitter, B: Blocks) -> dict:
    y = fitter.splits.y[fitter.va]
    decs = [state_decision(a)(apply_standardization(B.matrix(a, fitter.va), a.mean, a.scale)) for a in members]
    sc = decs[0] if len(decs) == 1 else averaged(decs, regression=fitter.K == 0)
    return metric_of(sc, y, fitter.K)


def one_run(store: Store, dataset: str, seed: int, args, log) -> dict:
    regression = dataset.startswith("ei-reg")
    cfg = FitConfig(dataset, task="regression" if regression else None, threads=args.threads)
    fs = store.feature_set(dataset, "default")
    base = plan_splits(store, fs, cfg)
    splits = reshuffle(base, cfg.train_split, cfg.val_split, seed)
    fitter = Fitter(store, fs, cfg, splits)
    blocks = [b for b in fs.blocks if b.kind in cfg.kinds and b.pooling in cfg.poolings]
    groups = [(k, p) for k in cfg.kinds for p in cfg.poolings]
    t0 = time.perf_counter()
    bar = _Quiet()
    probes = _fit_probes(fitter, blocks, bar)
    aggs, best = _fit_aggregates(fitter, groups, probes, bar)
    t_fit = time.perf_counter() - t0
    B = Blocks(fitter)
    metric = cfg.metric
    L = fs.manifest["fingerprint"]["n_layers"]
    y = fitter.splits.y

    def probe_rep(p):
        dec = lambda sp: state_decision(p)(apply_standardization(fitter.read([(p.block.column, None)], sp), p.mean, p.scale))
        return {"what": p.block.column, "validation": metric_of(dec(fitter.va), y[fitter.va], fitter.K),
                "test": metric_of(dec(fitter.te), y[fitter.te], fitter.K)}

    from stcstore.core.names import FeatureBlock
    rec = {"dataset": dataset, "seed": seed, "metric": metric, "fit_seconds": t_fit,
           "n": {k: len(v) for k, v in y.items()},
           "baseline": probe_rep(probes[FeatureBlock("hidden", "single", L)]),
           "best_probe": probe_rep(max(probes.values(), key=lambda p: probe_key(p, metric))),
           "embedding": embedding_baseline(fitter, L, "mean"), "rules": {}}
    chosen = choose(aggs, fitter, B, cfg, log, tuple(args.skip_rules.split(",")) if args.skip_rules else ())
    for rule, members in chosen.items():
        rec["rules"][rule] = {"what": " + ".join(describe(a) for a in members),
                              "validation": val_of(members, fitter, B),
                              "test": test_of(members, fitter, B, False, cfg)}
        rec["rules"][rule + "+refit"] = {"what": rec["rules"][rule]["what"],
                                         "test": test_of(members, fitter, B, True, cfg)}
    if args.legacy:
        t0 = time.perf_counter()
        lf = fitter.variant(path=LEGACY)
        lprobes = _fit_probes(lf, blocks, _Quiet())
        laggs, lbest = _fit_aggregates(lf, groups, lprobes, _Quiet())
        rec["legacy_seconds"] = time.perf_counter() - t0
        rec["rules"]["0.1.0"] = {"what": describe(lbest), "validation": val_of([lbest], lf, B),
                                 "test": test_of([lbest], lf, B, False, cfg)}
    return rec


def table(records: list[dict]) -> str:
    lines = []
    for ds in dict.fromkeys(r["dataset"] for r in records):
        rs = [r for r in records if r["dataset"] == ds]
        m = rs[0]["metric"]
        n = rs[0]["n"]
        lines.append(f"\n{ds} ({len(rs)} reshuffles; train {n['train']} / validation {n['validation']} / test "
                     f"{n['test']}; {m}; mean ± sd)")
        lines.append(f"  {'what':22s} {'validation':>17s} {'test':>17s}")
        rows = [("baseline", [r["baseline"] for r in rs]), ("embedding + LR", [r["embedding"] for r in rs]),
                ("best probe", [r["best_probe"] for r in rs])]
        for rule in rs[0]["rules"]:
            rows.append((rule, [r["rules"][rule] for r in rs]))
        for name, xs in rows:
            t = np.array([x["test"][m] for x in xs])
            v = np.array([x["validation"][m] for x in xs]) if "validation" in xs[0] else None
            vs = f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}" if v is not None else ""
            lines.append(f"  {name:22s} {vs:>17s} {t.mean():.4f} ± {t.std(ddof=1) if len(t) > 1 else 0:.4f}")
    return "\n".join(lines)


def markdown(records: list[dict], cpu: str) -> str:
    """The docs' tables: test score, mean ± sd over reshuffles, one row per dataset (rules as columns)."""
    cols = [("baseline", "baseline"), ("embedding", "embedding + LR"), ("best_probe", "best probe"),
            ("0.1.0", "0.1.0 (argmax, full paths)"), ("argmax", "0.2.0 (argmax)"), ("ensemble", "**ensemble** (default)"),
            ("ensemble+refit", "ensemble + refit"), ("ensemble3", "ensemble of top 3"), ("ensemble_se", "ensemble within 1 SE"),
            ("one_se", "one-SE rule"), ("smooth", "smoothed"), ("cv", "5-fold CV of top 8"), ("argmax+refit", "argmax + refit")]
    out = [f"Test score, mean ± sd over reshuffles ({cpu}):", "",
           "| dataset (metric) | " + " | ".join(n for _, n in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for ds in dict.fromkeys(r["dataset"] for r in records):
        rs = [r for r in records if r["dataset"] == ds]
        m = rs[0]["metric"]
        cells = []
        for key, _ in cols:
            xs = [r[key] if key in ("baseline", "embedding", "best_probe") else r["rules"].get(key) for r in rs]
            if any(x is None for x in xs):
                cells.append("–")
                continue
            t = np.array([x["test"][m] for x in xs])
            cells.append(f"{t.mean():.3f} ± {t.std(ddof=1) if len(t) > 1 else 0:.3f}")
        out.append(f"| {ds} ({m}, {len(rs)} splits) | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store")
    ap.add_argument("--datasets", default="sst2,tweeteval-emotion,tweeteval-irony,ei-reg-joy,ei-reg-anger")
    ap.add_argument("--reshuffles", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--legacy", action="store_true", help="also 0.1.0's search (about 3x the time)")
    ap.add_argument("--skip-rules", default="", help="rules not to measure, e.g. cv (40 more fits per split)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--table", default=None, help="print the table of an earlier --out and stop")
    ap.add_argument("--markdown", action="store_true", help="with --table: the docs' markdown table")
    args = ap.parse_args()
    if args.table:
        doc = json.loads(Path(args.table).read_text())
        print(markdown(doc["records"], doc["cpu"]) if args.markdown else table(doc["records"]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    store = Store(args.store)
    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), platform.processor())
    records = []
    prev = json.loads(Path(args.out).read_text())["records"] if args.out and Path(args.out).exists() else []
    done = {(r["dataset"], r["seed"]) for r in prev}
    records.extend(prev)
    for ds in args.datasets.split(","):
        for seed in range(args.reshuffles):
            if (ds, seed) in done:
                continue
            t0 = time.perf_counter()
            print(f"{ds} reshuffle {seed} ...", file=sys.stderr, flush=True)
            rec = one_run(store, ds, seed, args, lambda s: print(s, file=sys.stderr, flush=True))
            rec["seconds"] = time.perf_counter() - t0
            records.append(rec)
            print(f"  {rec['seconds']:.0f}s: " + ", ".join(f"{k} {v['test'][rec['metric']]:.4f}"
                                                          for k, v in rec["rules"].items()), file=sys.stderr, flush=True)
            if args.out:
                Path(args.out).write_text(json.dumps({"cpu": cpu, "threads": torch.get_num_threads(),
                                                      "records": records}, indent=1))
    print(f"CPU: {cpu}, {torch.get_num_threads()} threads")
    print(table(records))


if __name__ == "__main__":
    main()
