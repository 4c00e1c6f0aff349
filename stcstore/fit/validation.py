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

from ..store.store import neuron_picks
from .probe import path_scores

if TYPE_CHECKING:
    from .search import Fitter

Picks = list[tuple[str, "np.ndarray | None"]]
Entry = tuple[Picks, np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]  # picks, mean, scale, decide

DECISION_BYTES = 64 * 2**20  # validation scores of this many bytes are computed per pass over the chunks


def state_picks(fitter: "Fitter", state: Any) -> Picks:
    """The columns a fitted state reads: a probe's (or the embedding baseline's) whole block, an aggregate's,
    head's or ensemble's neurons."""
    block = getattr(state, "block", None)
    if block is not None:
        return [(block.column, None)]
    return neuron_picks(fitter.fs, [(g.kind, g.pooling, g.layer, g.neurons) for g in state.groups])


def entry(fitter: "Fitter", state: Any) -> Entry:
    from .search import state_decision

    decide = state.decision if hasattr(state, "decision") else state_decision(state)  # ensemble, embedding
    return state_picks(fitter, state), state.mean, state.scale, decide


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
    start, at = {}, 0
    for col, idx in cols:
        start[col] = at
        at += fitter.fs.width(col.split(".")[0]) if idx is None else len(idx)
    where = []  # per entry, its columns' positions in the union matrix
    for picks, *_ in entries:
        pos = []
        for col, idx in picks:
            u = union[col]
            if u is None:
                pos.append(start[col] + (np.arange(fitter.fs.width(col.split(".")[0])) if idx is None else idx))
            else:
                pos.append(start[col] + np.searchsorted(u, idx))
        where.append(np.concatenate(pos) if pos else np.array([], dtype=np.int64))
    parts: list[list[np.ndarray]] = [[] for _ in entries]
    for _, X in fitter.store.gather_by_chunk(fitter.fs, cols, fitter.splits.plans[fitter.va]):
        for out, pos, (_, mean, scale, decide) in zip(parts, where, entries):
            Z = X[:, pos]
            Z -= mean.astype(np.float32)
            Z /= scale.astype(np.float32)
            out.append(np.asarray(decide(Z)))
    K = max(fitter.K, 1)
    return [np.concatenate(p) if p else np.zeros((0, K)) for p in parts]


def rescore(fitter: "Fitter", states: Iterable[Any]) -> None:
    """When the searches held a validation sample: replace each state's validation scores (`result.validation`,
    or the embedding baseline's `validation`) by its scores on every validation row. States that share a
    result are scored once; as many at a time as DECISION_BYTES of scores allow."""
    if not fitter.val_sampled:
        return
    todo = list({id(_scored(s)): s for s in states}.values())
    m, K = len(fitter.splits.y[fitter.va]), max(fitter.K, 1)
    per_pass = max(1, DECISION_BYTES // max(8 * m * K, 1))
    y = fitter.splits.y[fitter.va]
    for i in range(0, len(todo), per_pass):
        batch = todo[i:i + per_pass]
        for s, sc in zip(batch, decisions(fitter, [entry(fitter, s) for s in batch])):
            _scored(s).validation = path_scores(sc, y, fitter.K)


def _scored(state: Any) -> Any:
    """What holds a state's validation scores: its path result, or the embedding baseline itself."""
    return getattr(state, "result", state)
