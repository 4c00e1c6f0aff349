"""`stcstore score`: the nightly re-scoring job.

Texts come from a store dataset (`--store/--dataset`) or from a file (`--input`, read and validated
like ingest: unusable rows go to a rejects table with the reason). Classifiers that run on the same
model (same weights, tokenizer, max length and dtypes) share one forward pass; it stops after the
deepest block any of them needs (early exit), and only the neurons they read are pooled at all.

Output (column names are API, core.schemas.PREDICTIONS): id, classifier, classifier_fingerprint, label,
probabilities (one per class, in the classifier's `classes_` order), scored_at, text_hash, value (a
regression classifier's prediction; label and probabilities are null for it).

Parts: sources.py (texts in), groups.py (one pass per model), sink.py (predictions out), explain.py.

* `--output X.parquet`: one file, written to a temp name and renamed at the end (never overwritten
  without --force).
* any other `--output DIR`: a predictions table partitioned by run date,
  `DIR/run_date=YYYY-MM-DD/part-RUN-NNNNNN.parquet`, one file per chunk of texts, each renamed into
  place when complete. A run scores only the texts that have no prediction yet from each classifier
  (by classifier fingerprint), so a second run is a no-op and a killed run resumes where its last
  committed chunk ended, without duplicates or holes. Put it inside the store
  (`--output STORE/predictions`) and `stcstore sql` shows it as the `predictions` view.

Texts stream in chunks of `--chunk-rows`: each chunk goes through every model group that has texts in
it without a prediction, then is written, so memory holds one chunk whatever the size of the input.

`--explain tokens` applies each mean- or max-pooled classifier to every token's own neuron values
(paper section 5.3) and writes the per-token class probabilities as JSON lines plus a self-contained
HTML page that colours each token.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from ..classifier.classifier import Classifier
from ..core.atomic import remove_dead_temps, remove_stale_temps, store_lock
from ..core.console import eprint, progress
from ..core.errors import StcError
from ..core.paths import check_output
from ..core.fingerprint import text_hash
from ..ingest.readers import Row
from ..models.loading import LoadedModel
from .config import ClassifierRun, ScoreConfig, ScoreResult
from .explain import Explainer, explainable, token_spans
from .groups import Group, Models, load_classifiers, make_groups
from .sink import PredictionsSink, existing, hash_key
from .sources import Chunks, Rejects, input_chunks, store_chunks


@dataclass
class ScoreRun:
    """State of one score run."""

    cfg: ScoreConfig
    clfs: list[Classifier]
    runs: list[ClassifierRun]
    done: dict[str, dict[str, int | None]]  # classifier fingerprint -> {id: text hash key} already predicted
    sink: PredictionsSink
    explainer: Explainer | None
    models: Models
    rejects: Rejects
    source: str
    texts: int = 0
    scored_texts: int = 0
    forward_seconds: float = 0.0
    work_seconds: float = 0.0  # scoring proper: tokenize, forward, classify, write (not model loading)
    truncated: int = 0  # texts longer than a group's max_length (each group counts its own)

    def _todo(self, ids: list[str], hashes: list[int]) -> dict[int, np.ndarray]:
        """Per classifier, which texts of the chunk have no prediction from it yet; counts the others."""
        todo = {}
        for k, c in enumerate(self.clfs):
            have = self.done.get(c.fingerprint, {})
            todo[k] = np.fromiter((i not in have for i in ids), dtype=bool, count=len(ids))
            self.runs[k].already += int(len(ids) - todo[k].sum())
            self.runs[k].changed += sum(1 for i, h in zip(ids, hashes) if have.get(i, h) not in (None, h))
        return todo

    def _reject_empty(self, ids: list[str], texts: list[str], rows: list[int], model: str) -> None:
        """Texts of which nothing but special tokens reached a model: rejected, not scored."""
        now = dt.datetime.now(dt.timezone.utc)
        reason = f"no tokens but special ones for model {model}"
        for j in rows:
            self.rejects.add(Row(line=None, raw=texts[j], id=ids[j]), reason, self.source, now)

    def chunk(self, groups: list[Group], ids: list[str], texts: list[str]) -> int:
        """Score one chunk with every group (only the texts some member has not scored yet) and commit it.
        Returns the number of texts that went through a model."""
        t0, load0 = time.perf_counter(), self.models.seconds
        self.texts += len(ids)
        hashes = [text_hash(t) for t in texts]
        todo = self._todo(ids, [hash_key(h) for h in hashes])
        parts, ran = [], np.zeros(len(ids), dtype=bool)
        rejected: set[int] = set()
        for g in groups:
            sel = np.flatnonzero(np.logical_or.reduce([todo[k] for k in g.members]))
            if len(sel) == 0:
                continue
            scorer = self.models.scorer(g, self.clfs, self.cfg.batch_size, self.cfg.max_tokens,
                                        keep_tokens=self.explainer is not None)
            sub = [texts[i] for i in sel]
            f0 = scorer.computer.forward_seconds
            scores, feats = scorer.run(sub)
            self.forward_seconds += scorer.computer.forward_seconds - f0
            g.info["texts"] += len(sel)
            g.info["truncated"] = g.info.get("truncated", 0) + feats.truncated
            self.truncated += feats.truncated
            ran[sel] = True
            empty = [int(sel[j]) for j in feats.empty if int(sel[j]) not in rejected]
            self._reject_empty(ids, texts, empty, g.info["model"])
            rejected.update(empty)
            keep = np.ones(len(sel), dtype=bool)
            keep[feats.empty] = False
            for k, c, z in zip(g.members, scorer.classifiers, scores):
                want = np.flatnonzero(todo[k][sel] & keep)  # this classifier's new rows among those run
                if len(want) == 0:
                    continue
                parts.append(self.sink.table(c, [ids[sel[j]] for j in want], z[want],
                                             [hashes[sel[j]] for j in want]))
                self.runs[k].scored += len(want)
                if self.explainer is not None and explainable(c):
                    for j in want:
                        self.explainer.add(text_id=ids[sel[j]], text=sub[j], clf=c, scores=z[j],
                                           spans=token_spans(scorer.lm, sub[j], feats.token_ids[j]),
                                           token_scores=scorer.token_scores(c, feats.tokens[j]))  # type: ignore[index]
                        self.runs[k].explained += 1
        if parts:
            self.sink.write(pa.concat_tables(parts))
        n_run = int(ran.sum())
        self.scored_texts += n_run
        if n_run:
            self.work_seconds += time.perf_counter() - t0 - (self.models.seconds - load0)
        return n_run

    def all_chunks(self, groups: list[Group], chunks: Chunks, total: int | None) -> None:
        """Score every chunk and commit the output; on any failure nothing half-written stays visible."""
        explainer = self.explainer
        try:
            with progress(total, "score", "text") as bar:
                for j, (ids, texts) in enumerate(chunks):
                    n_run = self.chunk(groups, ids, texts)
                    bar.update(len(ids))
                    if bar.disable and n_run:  # no TTY (a log file): one line per scored chunk
                        eprint(f"chunk {j + 1}: {self.texts}" + (f"/{total}" if total else "") + " texts read, "
                               f"{self.scored_texts} scored")
            self.sink.close()
            if explainer is not None:
                explainer.close()
        except BaseException as exc:
            self.sink.abort()
            if explainer is not None:
                explainer.abort()
            if isinstance(exc, StcError) and self.sink.files and not self.cfg.single_file:
                raise StcError(f"{exc}\nthe predictions of the {self.scored_texts} texts before it are committed in "
                               f"{self.cfg.output}; fix the input and run again to score the rest") from exc
            raise


def _check_output(cfg: ScoreConfig, output: Path) -> None:
    """--output (and the rejects and explanation files beside it) never in, on or around a store (except
    its predictions table), a classifier or the input being read."""
    reads = tuple(("classifier", c) for c in cfg.classifiers) + ((("input file", cfg.input),) if cfg.input else ())
    check_output(output, "--output", reads, in_predictions="no" if cfg.single_file else "table")
    if cfg.single_file:
        check_output(_rejects_file(output), "--output (its rejects file)", reads)
    if cfg.explain_out:
        for suffix in (".explain.jsonl", ".explain.html"):
            prefix = Path(cfg.explain_out)
            check_output(prefix.with_name(prefix.name + suffix), "--explain-out", reads, in_predictions="below")
    if cfg.single_file and output.exists() and not cfg.force:
        raise StcError(f"--output {output} exists; pick a new file, pass --force to replace it, or give a "
                       f"directory (no .parquet suffix) to append predictions incrementally")
    if not cfg.single_file and output.exists() and not output.is_dir():
        raise StcError(f"--output {output} is a file; give a directory for a predictions table "
                       f"or a path ending in .parquet for one file")


def _rejects_file(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".parquet") + ".rejects.parquet")


def _explainer(cfg: ScoreConfig, output: Path, clfs: list[Classifier], scored_at: dt.datetime, run_id: str,
               messages: list[str]) -> Explainer | None:
    if not cfg.explain:
        return None
    prefix = Path(cfg.explain_out) if cfg.explain_out else (
        output.with_name(output.name.removesuffix(".parquet")) if cfg.single_file
        else output / "explain" / f"run_date={scored_at.date()}" / f"explain-{run_id}")
    no = [c.name for c in clfs if not explainable(c)]
    if no:
        messages.append(f"no token explanation for {', '.join(no)}: single-token classifiers have no "
                        f"per-token reading (only mean- and max-pooled ones do)")
    return Explainer(prefix, cfg.explain_limit)


def _notes(run: ScoreRun, groups: list[Group], messages: list[str]) -> None:
    for g in (g.info for g in groups):
        if g.get("truncated"):
            messages.append(f"{g['truncated']} texts were longer than the max_length of {g['model']} and were "
                            f"truncated, as in training")
    for c in run.runs:
        if c.changed:
            messages.append(f"{c.changed} texts changed since {c.name} scored them and keep their old prediction; "
                            f"score into a new --output directory to rescore them")


# scores every chunk and commits the output, into the run's counters (locally: `ScoreRun.all_chunks`;
# `stcstore.cluster.ray_score`: on Ray actors)
ChunkScorer = Callable[[ScoreRun, list[Group], Chunks, "int | None"], None]


def score(cfg: ScoreConfig, models: dict[str, LoadedModel] | None = None,
          chunk_scorer: ChunkScorer | None = None) -> ScoreResult:
    """Run one scoring job. `models` ({model name: LoadedModel}) lets tests and notebooks pass built models;
    a classifier whose recorded model name is a key uses it (after the fingerprint check). `chunk_scorer`
    scores the chunks elsewhere (`stcstore.cluster.ray_score`).

    Texts stream in chunks of cfg.chunk_rows; each chunk runs through every model group that has texts in
    it without a prediction, and is committed as one part file (directory output), so memory holds one
    chunk and a killed run resumes at a chunk boundary."""
    t_start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    clfs = load_classifiers(cfg.classifiers)
    output = Path(cfg.output)
    _check_output(cfg, output)
    messages: list[str] = []
    rejects = Rejects(_rejects_file(output) if cfg.single_file else output / "rejects" / f"rejects-{uuid.uuid4().hex[:8]}.parquet")
    if cfg.input is not None:
        total, chunks = None, input_chunks(Path(cfg.input), cfg.format, cfg.text_field, cfg.id_field,
                                           cfg.chunk_rows, rejects)
        source = str(cfg.input)
    else:
        total, chunks = store_chunks(cfg.store, cfg.dataset, cfg.split, cfg.chunk_rows, messages)  # type: ignore[arg-type]
        source = f"{cfg.store} dataset {cfg.dataset}" + (f" split {cfg.split}" if cfg.split else "")
    scored_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    run_id = scored_at.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    runs = [ClassifierRun(c.name, str(c.path), c.fingerprint, c.manifest.model.name, c.l_temp,
                          c.manifest.blocks_run) for c in clfs]
    groups = make_groups(clfs)
    lock_root = output.parent if cfg.single_file else output
    lock_root.mkdir(parents=True, exist_ok=True)
    # a directory is a shared table: one writer at a time; a single file is private to its run
    with nullcontext() if cfg.single_file else store_lock(lock_root, "stcstore score"):
        if cfg.single_file:
            for f in (output, rejects.path):
                remove_dead_temps(f)  # left by a killed run
            done: dict[str, dict[str, int | None]] = {}
        else:
            remove_stale_temps(output)
            done = existing(output)
        explainer = _explainer(cfg, output, clfs, scored_at, run_id, messages)
        run = ScoreRun(cfg, clfs, runs, done, PredictionsSink(output, cfg.single_file, run_id, scored_at, asdict(cfg)),
                   explainer, Models(dict(models or {}), cfg.model, cfg.device, cfg.gguf_file), rejects, source)
        if chunk_scorer is None:
            run.all_chunks(groups, chunks, total)
        else:
            chunk_scorer(run, groups, chunks, total)
        _notes(run, groups, messages)
        if run.texts and not run.scored_texts:
            messages.append(f"nothing to score: all {run.texts} texts already have predictions from "
                            + ", ".join(f"{c.name} [{c.fingerprint[:12]}]" for c in clfs) + f" in {output}")
        rejects.write(source, messages)
    return ScoreResult(
        output=str(output), source=source, classifiers=runs, texts=run.texts, scored_texts=run.scored_texts,
        rejected=len(rejects.rows), duplicates=rejects.duplicates, files_written=run.sink.files,
        seconds=time.perf_counter() - t_start, forward_seconds=run.forward_seconds,
        texts_per_s=run.scored_texts / run.work_seconds if run.scored_texts and run.work_seconds > 0 else 0.0,
        groups=[g.info for g in groups if g.info], rejects_path=str(rejects.path) if rejects.rows else None,
        explain_jsonl=str(explainer.jsonl) if explainer else None,
        explain_html=str(explainer.html) if explainer else None, messages=messages,
    )
