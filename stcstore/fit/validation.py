"""Validation rows in a fit: the searches hold a sample of them, every choice reads all of them.

A search (a probe's strength path, an aggregate's or a consolidation head's) scores every candidate point on
validation many times, so it holds the validation rows of its columns in memory. When validation has more
rows than `--val-rows`, it holds a seeded, stratified sample of them instead (`Fitter.val_plan`): the memory
a fit needs then stops growing with the size of the validation split. Every choice *between* fitted
candidates (the best probe, the aggregates and their ensemble, the heads) and every validation score a fit
reports (the baselines' too) is computed on every validation row, read one store chunk at a time
(`rescore`, `decisions`). With validation within `--val-rows` nothing is sampled and nothing is rescored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from ..classifier.linear import decision
from ..core.names import FeatureBlock
from .probe import apply_standardization, path_scores

if TYPE_CHECKING:
    from .search import Fitter

Picks = list[tuple[str, "np.ndarray | None"]]
Entry = tuple[Picks, np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]  # picks, mean, scale, decide

DECISION_BYTES = 64 * 2**20  # validation scores of this many bytes are computed per pass over the chunks


def entry(fitter: "Fitter", state: Any) -> Entry:
    """What a fitted state reads and scores with: a probe's (or the embedding baseline's) whole block, an
    aggregate's, head's or ensemble's neurons (`Fitter.picks`)."""
    block = getattr(state, "block", None)
    picks: Picks = [(block.column, None)] if block is not None else fitter.picks(state)
    decide = state.decision if hasattr(state, "decision") else state_decision(state)  # ensemble, embedding
    return picks, state.mean, state.scale, decide


def state_decision(state: Any) -> Callable[[np.ndarray], np.ndarray]:
    """What a chosen state scores standardised rows with: a consolidation head or an ensemble's (`head`), an SLP
    probe's network, else its linear weights (the same function a saved classifier scores with)."""
    head = getattr(state, "head", None)
    if head is not None:
        return head.decision
    net = getattr(state, "slp", None)
    if net is not None:
        return net.decision
    c = state.result.chosen
    return lambda Z: decision(Z, c.coef, c.intercept)


def decisions(fitter: "Fitter", entries: list[Entry]) -> list[np.ndarray]:
    """Each entry's scores [m, K] on every validation row, in split order: the union of their columns read one
    store chunk at a time, each entry's columns standardised and scored on it."""
    union: dict[str, np.ndarray | None] = {}
    for picks, *_ in entries:
        for col, idx in picks:
            if col in union and union[col] is None or idx is None:
                union[col] = None
            else:
                union[col] = np.union1d(union.get(col, np.array([], dtype=np.int64)), idx)
    cols = list(union.items())
    width = {col: fitter.fs.width(FeatureBlock.parse(col).kind) for col, _ in cols}
    start = dict(zip(union, np.cumsum([0] + [width[c] if i is None else len(i) for c, i in cols])))
    where = []  # per entry, its columns' positions in the union matrix
    for picks, *_ in entries:
        pos = [start[col] + (np.arange(width[col]) if idx is None else
                             idx if union[col] is None else np.searchsorted(union[col], idx)) for col, idx in picks]
        where.append(np.concatenate(pos) if pos else np.array([], dtype=np.int64))
    parts: list[list[np.ndarray]] = [[] for _ in entries]
    for _, X in fitter.store.gather_by_chunk(fitter.fs, cols, fitter.splits.plans[fitter.va]):
        for out, pos, (_, mean, scale, decide) in zip(parts, where, entries):
            out.append(np.asarray(decide(apply_standardization(X[:, pos], mean, scale))))  # X[:, pos]: a copy
    K = max(fitter.K, 1)
    return [np.concatenate(p) if p else np.zeros((0, K)) for p in parts]


def rescore(fitter: "Fitter", states: Iterable[Any]) -> None:
    """When the searches held a validation sample: replace each state's validation scores (`result.validation`,
    or the embedding baseline's `validation`) by its scores on every validation row. States that share a
    result are scored once; as many at a time as DECISION_BYTES of scores allow."""
    if not fitter.val_sampled:
        return
    todo = list({id(_scored(s)): s for s in states}.values())
    y = fitter.splits.y[fitter.va]
    per_pass = max(1, DECISION_BYTES // max(8 * len(y) * max(fitter.K, 1), 1))
    for i in range(0, len(todo), per_pass):
        batch = todo[i:i + per_pass]
        for s, sc in zip(batch, decisions(fitter, [entry(fitter, s) for s in batch])):
            _scored(s).validation = path_scores(sc, y, fitter.K)


def _scored(state: Any) -> Any:
    """What holds a state's validation scores: its path result, or the embedding baseline itself."""
    return getattr(state, "result", state)
