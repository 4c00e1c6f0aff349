"""What `stcstore fit` returns: the reported states on validation and test, the chosen configuration, how
sure the comparison is, and how it ran (`fit --json` prints `to_dict()`, plain `fit` `to_text()`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.names import shown
from ..core.result import Result


@dataclass
class FitResult(Result):
    dataset: str
    feature_set: str
    model: str
    classes: list[str]  # empty for a regression target
    task: str  # classification | regression
    metric: str
    baseline: dict[str, Any]
    best_probe: dict[str, Any]
    stc: dict[str, Any]
    chosen: dict[str, Any]
    n_train: int
    n_validation: int
    n_test: int
    n_probe_rows: int  # train rows the per-layer probes were fitted on (all of train, or the sample)
    n_search_rows: int  # train rows the aggregate search held (all, or the memory budget's sample)
    carved_validation: bool
    seed: int
    fit_id: str
    classifier_dir: str | None
    seconds: dict[str, float]
    peak_rss_mb: float
    efficiency: dict[str, Any] = field(default_factory=dict)  # the paper's Tables 5-7 for this model and data
    messages: list[str] = field(default_factory=list)
    # --aggregator consolidation: {"lr": ..., "consolidation": ...}, each validation-chosen, with its test
    # scores and configuration ("stc" and "chosen" are the consolidation head, which is saved)
    aggregators: dict[str, Any] = field(default_factory=dict)
    # the model's own sentence embedding + an L2 logistic regression (Ridge), C chosen on validation
    embedding_baseline: dict[str, Any] = field(default_factory=dict)
    # bootstrap standard errors of the validation scores, and STC's margins over the others (fit.selection)
    noise: dict[str, Any] = field(default_factory=dict)
    selection: str = "ensemble"
    label_names: dict[str, str] = field(default_factory=dict)  # display names of the classes (ingest --label-names)

    def to_text(self) -> str:
        def fmt(d: dict[str, Any]) -> str:
            return "  ".join(f"{m} {d[m]:.4f}" if isinstance(d.get(m), float) and d[m] == d[m] else f"{m} -"
                             for m in d)
        rows = [("baseline", self.baseline), ("embedding", self.embedding_baseline), ("best probe", self.best_probe),
                ("STC", self.stc)]
        target = f"classes {', '.join(shown(c, self.label_names) for c in self.classes)}" if self.classes else \
            "regression target"
        lines = [f"dataset {self.dataset}, feature set {self.feature_set[:12]} ({self.model}); {target}; train {self.n_train}, validation {self.n_validation}"
                 f"{' (carved from train, seed ' + str(self.seed) + ')' if self.carved_validation else ''}, "
                 f"test {self.n_test}; chosen on validation {self.metric}", "",
                 f"{'':12s} {'configuration':44s} {'validation':34s} test"]
        for name, r in rows:
            if not r:
                lines.append(f"{name:12s} (not available: {name} needs blocks this feature set lacks)")
                continue
            lines.append(f"{name:12s} {r['what']:44s} {fmt(r['validation']):34s} {fmt(r['test'])}")
        for name, r in self.aggregators.items():  # --aggregator consolidation: both, each the best of its kind
            label = {"lr": "  LR aggr.", "consolidation": "  KC head"}.get(name, name)
            lines.append(f"{label:12s} {r['what']:44s} {fmt(r['validation']):34s} {fmt(r['test'])}")
        se = self.noise.get("validation_se", {})
        if se:
            lines += ["", "validation ± bootstrap standard error: " + ", ".join(
                f"{name} {se[key]:.4f}" for key, name in (("baseline", "baseline"), ("embedding_baseline", "embedding"),
                                                          ("best_probe", "best probe"), ("stc", "STC")) if key in se)]
        c = self.chosen
        if c.get("selection") == "ensemble":
            lines += ["", f"chosen: an ensemble of {len(c['members'])} aggregates (probabilities averaged), L_temp "
                          f"{c['l_temp']}, {c['n_neurons']} neurons:"]
            lines += [f"  {m['kind']}.{m['pooling']} η {m['eta']} L_temp {m['l_temp']}, {m['n_neurons']} neurons, "
                      f"C {m['C']:.4g}, validation {self.metric} {m['validation'][self.metric]:.4f}" for m in c["members"]]
        else:
            how = (f"consolidation head: {c['frozen_units']} frozen units → {c['units']} units"
                   if c.get("aggregator") == "consolidation" else f"{c['n_nonzero']} with non-zero weight), C {c['C']:.4g}")
            lines += ["", f"chosen: kind {c['kind']}, pooling {c['pooling']}, η {c['eta']}, L_temp {c['l_temp']}, "
                          f"{c['n_neurons']} neurons ({how}" + (")" if c.get("aggregator") == "consolidation" else "")]
        lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
                     + f"; peak RSS {self.peak_rss_mb:,.0f} MB")
        if self.classifier_dir:
            lines.append(f"classifier: {self.classifier_dir}")
        lines += self.messages
        return "\n".join(lines)

def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def noise_messages(noise: dict[str, Any]) -> list[str]:
    """Plain words for STC's validation margins that another validation sample could reverse."""
    names = {"baseline": "the last-layer baseline", "embedding_baseline": "the embedding baseline",
             "best_probe": "the best probe"}
    out = []
    for key, m in noise.get("margins", {}).items():
        if m["within_noise"]:
            out.append(f"STC's validation margin over {names.get(key, key)} ({m['margin']:+.4f} {noise['metric']}) is "
                       f"within noise: under twice its bootstrap standard error ({m['se']:.4f}, {noise['resamples']} "
                       f"resamples of the validation rows); do not read it as a difference")
    return out
