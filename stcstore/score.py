"""`stcstore score`: the nightly re-scoring job.

Texts come from a store dataset (`--store/--dataset`) or from a file (`--input`, read and validated
like ingest: unusable rows go to a rejects table with the reason). Classifiers that run on the same
model (same weights, tokenizer, max length and dtypes) share one forward pass; it stops after the
deepest block any of them needs (early exit), and only the neurons they read are pooled at all.

Output (column names are API): id, classifier, classifier_fingerprint, label, probabilities (one per
class, in the classifier's `classes_` order), scored_at.

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
from contextlib import nullcontext
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from . import __version__
from .blocks import BlockKey
from .classifier import MODEL_CHECK_KEYS, Classifier, load_classifier
from .errors import StcError
from .explain import EXPLAIN_POOLINGS, Explainer, token_spans
from .featurize import Features, Featurizer
from .fsutil import commit, eprint, remove_dead_temps, remove_stale_temps, store_lock, tmp_name
from .idindex import IdIndex, text_key
from .ingest import FORMATS, IngestConfig, content_hash, row_id, row_problem
from .models import LoadedModel, load_model
from .readers import RAW_KEEP, READ_ERRORS, READERS, detect_format
from .solver import probabilities
from .store import PREDICTIONS_SCHEMA, REJECTS_SCHEMA, Store, check_name



@dataclass(frozen=True)
class ScoreConfig:
    """Options of one score run; validated without I/O (except that classifier paths must exist)."""

    classifiers: tuple[str, ...]
    output: str
    store: str | None = None
    dataset: str | None = None
    split: str | None = None  # store mode: only texts of this split
    input: str | None = None
    format: str = "auto"
    text_field: str = "text"
    id_field: str = "id"
    explain: str | None = None  # None or "tokens"
    explain_out: str | None = None  # path prefix of the .jsonl/.html pair
    explain_limit: int = 200  # texts shown in the HTML page (the JSON lines hold all)
    model: str | None = None  # a local path to use instead of the classifiers' recorded model
    gguf_file: str | None = None
    batch_size: int = 64
    max_tokens: int = 8192
    chunk_rows: int = 4096  # texts per committed output file (the resume granularity)
    threads: int | None = None
    device: str = "cpu"
    force: bool = False

    def __post_init__(self) -> None:
        if not self.classifiers:
            raise StcError("give at least one --classifier DIR")
        store_mode = self.store is not None or self.dataset is not None
        if store_mode == (self.input is not None):
            raise StcError("give either --store DIR --dataset NAME (texts in a store) or --input FILE, not both")
        if store_mode and (self.store is None or self.dataset is None):
            raise StcError("--store and --dataset go together")
        if self.dataset is not None:
            check_name(self.dataset, "--dataset")
        if self.format not in FORMATS:
            raise StcError(f"--format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.explain not in (None, "tokens"):
            raise StcError(f"--explain {self.explain!r}: the only explanation is `tokens`")
        for name in ("batch_size", "max_tokens", "chunk_rows", "explain_limit"):
            if getattr(self, name) < 1:
                raise StcError(f"--{name.replace('_', '-')} must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise StcError("--threads must be at least 1")

    @property
    def single_file(self) -> bool:
        return self.output.endswith(".parquet")


@dataclass
class ClassifierRun:
    name: str
    path: str
    fingerprint: str
    model: str
    l_temp: int
    blocks_run: int
    scored: int = 0
    already: int = 0  # texts that had a prediction from this classifier before the run
    explained: int = 0


@dataclass
class ScoreResult:
    output: str
    source: str
    classifiers: list[ClassifierRun]
    texts: int  # texts read (store: in the dataset/split; input: usable rows)
    scored_texts: int  # texts that went through a model in this run
    rejected: int
    duplicates: int
    files_written: int
    seconds: float
    forward_seconds: float
    texts_per_s: float
    groups: list[dict[str, Any]]
    rejects_path: str | None = None
    explain_jsonl: str | None = None
    explain_html: str | None = None
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        lines = list(self.messages)
        for g in self.groups:
            lines.append(f"model {g['model']}: blocks 0..{g['blocks_run'] - 1} of {g['n_layers']} run "
                         f"(early exit), {g['neurons']} neurons pooled, classifiers {', '.join(g['classifiers'])}")
        for c in self.classifiers:
            lines.append(f"{c.name} [{c.fingerprint[:12]}]: {c.scored} texts scored"
                         + (f", {c.already} already had a prediction" if c.already else "")
                         + (f", {c.explained} explained" if c.explained else ""))
        if self.scored_texts:
            lines.append(f"{self.scored_texts} texts in {self.seconds:.1f}s ({self.texts_per_s:.1f} texts/s "
                         f"after loading the model); output {self.output}")
        if self.rejected:
            lines.append(f"{self.rejected} input rows rejected, with reasons, in {self.rejects_path}")
        if self.explain_html:
            lines.append(f"explanations: {self.explain_jsonl}\n              {self.explain_html}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- scoring core


class GroupScorer:
    """Classifiers that share one model: one forward pass (to the deepest block any needs), pooling only
    the union of their neurons, then each classifier's linear layer."""

    def __init__(self, lm: LoadedModel, classifiers: list[Classifier], batch_size: int = 64,
                 max_tokens: int = 8192, device: str = "cpu", keep_tokens: bool = False) -> None:
        self.lm, self.classifiers = lm, classifiers
        features = {(int(c.manifest["features"]["max_length"]), c.manifest["features"]["dtype"]) for c in classifiers}
        if len(features) != 1:
            raise StcError("classifiers in one forward pass must share max_length and stored dtype")
        max_length, dtype = features.pop()
        cols: dict[tuple[str, int], set[int]] = {}
        blocks: set[BlockKey] = set()
        for c in classifiers:
            c.attach(lm)
            for key, idx in c.neuron_columns().items():
                cols.setdefault(key, set()).update(idx)
            blocks.update(c.blocks)
        self.columns = {k: sorted(v) for k, v in sorted(cols.items())}
        self.featurizer = Featurizer(lm, blocks, max_length, dtype, batch_size=batch_size, max_tokens=max_tokens,
                                     device=device, columns=self.columns, keep_tokens=keep_tokens)
        self.forward_seconds = 0.0

    @property
    def n_neurons(self) -> int:
        return sum(len(v) for v in self.columns.values())

    def run(self, texts: list[str]) -> tuple[list[np.ndarray], Features]:
        """texts -> ([n, K] linear scores per classifier (K = 1 for two classes), the Features (with token
        values if kept))."""
        t0 = time.perf_counter()
        feats = self.featurizer.run(texts)
        self.forward_seconds += time.perf_counter() - t0
        scores = [c.decision_function_features(c.features_from_blocks(feats.blocks, self.columns))
                  for c in self.classifiers]
        return scores, feats

    def token_scores(self, c: Classifier, tokens: dict[tuple[str, int], np.ndarray]) -> np.ndarray:
        """One text's per-token linear scores [T, K] under classifier c (K = 1 for two classes). For a
        mean-pooled classifier their mean over tokens is the text's score, up to float16 storage rounding."""
        return c.decision_function_features(c.token_features(tokens, self.columns))


def model_key(c: Classifier) -> str:
    """Classifiers with equal keys can share a forward pass."""
    m, f = c.manifest["model"], c.manifest["features"]
    return json.dumps({**{k: m.get(k) for k in MODEL_CHECK_KEYS}, "max_length": f["max_length"],
                       "dtype": f["dtype"], "torch_dtype": f["torch_dtype"]}, sort_keys=True)


def _load_group_model(c: Classifier, cfg: ScoreConfig) -> LoadedModel:
    want = c.manifest["model"]
    if cfg.model is not None:
        name = cfg.model
    else:
        source = want.get("model_source")
        name = source if source and Path(source).exists() else want.get("model")
    eprint(f"loading model {name} ...")
    return load_model(name, torch_dtype=c.manifest["features"]["torch_dtype"], device=cfg.device,
                      gguf_file=cfg.gguf_file)


# ------------------------------------------------------------------------------------------- sources


@dataclass
class _Rejects:
    path: Path
    rows: list[dict] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


def _input_chunks(cfg: ScoreConfig, rejects: _Rejects, counts: dict[str, int]
                  ) -> Iterator[tuple[list[str], list[str]]]:
    """Stream --input, validated like ingest, as (ids, texts) chunks of cfg.chunk_rows usable rows; unusable
    rows go to `rejects`. Memory holds one chunk plus an id -> text-hash map for duplicate detection."""
    path = Path(cfg.input)  # type: ignore[arg-type]
    if not path.is_file():
        raise StcError(f"--input {path}: no such file")
    fmt = detect_format(path) if cfg.format == "auto" else cfg.format
    icfg = IngestConfig(dataset="input", format=fmt, text_field=cfg.text_field, id_field=cfg.id_field)
    now = dt.datetime.now(dt.timezone.utc)
    ids: list[str] = []
    texts: list[str] = []
    seen = IdIndex()  # id -> text hash of this file's rows (compact: a 128-bit digest per id)

    def reject(row, reason: str) -> None:
        key = reason.split(":")[0]
        rejects.reasons[key] = rejects.reasons.get(key, 0) + 1
        rejects.rows.append({"source": str(path), "line": row.line, "id": None if row.id is None else str(row.id),
                             "reason": reason, "raw": row.raw[:RAW_KEEP], "ingested_at": now})

    line = 0
    try:
        for row in READERS[fmt](path, icfg):
            line = row.line
            problem = row_problem(row, cfg.text_field)
            if problem:
                reject(row, problem)
                continue
            h = content_hash(row.text)
            rid = row_id(row, h)
            prior = seen.get(rid)
            if prior is not None:
                if prior[0] != text_key(h):
                    reject(row, "id already seen in this file with a different text")
                else:
                    counts["duplicates"] += 1
                continue
            seen.add(rid, h, None, None)
            ids.append(rid)
            texts.append(row.text)
            if len(ids) == cfg.chunk_rows:
                yield ids, texts
                ids, texts = [], []
    except READ_ERRORS as exc:
        raise StcError(f"--input {path}: unreadable after line {line} ({type(exc).__name__}: {exc})") from exc
    if ids:
        yield ids, texts


def _store_chunks(cfg: ScoreConfig, messages: list[str]) -> tuple[int, Iterator[tuple[list[str], list[str]]]]:
    """(number of texts, (ids, texts) chunks) of the store dataset, one split if asked. The texts stay in
    Arrow (compact) until their chunk is converted to Python strings."""
    store = Store(cfg.store)  # type: ignore[arg-type]
    store.require()
    if cfg.dataset not in store.datasets():
        raise StcError(f"store {store.root} has no dataset {cfg.dataset!r} (it has: "
                       f"{', '.join(store.datasets()) or 'none'}); run `stcstore ingest` first")
    table = store.texts(cfg.dataset, columns=["id", "text", "split"],  # type: ignore[arg-type]
                        filter_expr=None if cfg.split is None else pc.field("split") == cfg.split)
    if table.num_rows == 0:
        messages.append(f"dataset {cfg.dataset!r} has no texts" + (f" in split {cfg.split!r}" if cfg.split else ""))

    def chunks() -> Iterator[tuple[list[str], list[str]]]:
        for a, b in _chunks(table.num_rows, cfg.chunk_rows):
            part = table.slice(a, b - a)
            yield part.column("id").to_pylist(), part.column("text").to_pylist()

    return table.num_rows, chunks()


def _existing(output: Path) -> dict[str, set[str]]:
    """{classifier fingerprint: ids} already in a predictions directory."""
    done: dict[str, set[str]] = {}
    for f in sorted(output.glob("run_date=*/part-*.parquet")):
        t = pq.read_table(f, columns=["id", "classifier_fingerprint"])
        for fp, i in zip(t.column("classifier_fingerprint").to_pylist(), t.column("id").to_pylist()):
            done.setdefault(fp, set()).add(i)
    return done


# ------------------------------------------------------------------------------------------- the run


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, size):
        yield a, min(a + size, n)


def _load_classifiers(paths: tuple[str, ...]) -> list[Classifier]:
    clfs = [load_classifier(p) for p in paths]
    names: dict[str, Classifier] = {}
    for c in clfs:
        other = names.get(c.name)
        if other is not None:
            same = other.fingerprint == c.fingerprint
            raise StcError(f"two classifiers named {c.name!r} ({other.path}, {c.path})"
                           + (": the same classifier twice" if same else "; predictions are labelled by "
                              "directory name, so rename one of the directories"))
        names[c.name] = c
    return clfs


class _Sink:
    """Where predictions go. A directory: one part file per chunk, renamed into place (the resume unit).
    A .parquet file: one writer to a temp name, renamed over the output only when complete."""

    def __init__(self, cfg: ScoreConfig, output: Path, run_id: str, scored_at: dt.datetime) -> None:
        self.output, self.run_id, self.scored_at = output, run_id, scored_at
        self.files = 0
        meta = {b"stcstore.score": json.dumps({"run": run_id, "stcstore_version": __version__,
                                                "config": asdict(cfg)}).encode()}
        self.schema = PREDICTIONS_SCHEMA.with_metadata(meta)  # every file says what produced it
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        if cfg.single_file:
            output.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = tmp_name(output)
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")

    def table(self, c: Classifier, ids: list[str], proba: np.ndarray) -> pa.Table:
        """Rows of one classifier: ids [m], proba [m, n_classes]."""
        m = len(ids)
        labels = c.classes_[np.argmax(proba, axis=1)]
        return pa.table({
            "id": pa.array(ids, pa.string()), "classifier": pa.array([c.name] * m, pa.string()),
            "classifier_fingerprint": pa.array([c.fingerprint] * m, pa.string()),
            "label": pa.array([str(x) for x in labels], pa.string()),
            "probabilities": pa.array(proba.astype(np.float64).tolist(), pa.list_(pa.float64())),
            "scored_at": pa.array([self.scored_at] * m, pa.timestamp("us", tz="UTC")),
        }, schema=self.schema)

    def write(self, table: pa.Table) -> None:
        if self._writer is not None:
            self._writer.write_table(table)
            return
        final = self.output / f"run_date={self.scored_at.date()}" / f"part-{self.run_id}-{self.files:06d}.parquet"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_name(final)
        pq.write_table(table, tmp, compression="zstd")
        commit(tmp, final)
        self.files += 1

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        if self.output.exists():
            self.output.unlink()  # --force: the old file goes only now, when the new one is complete
        commit(self._tmp, self.output)  # type: ignore[arg-type]
        self.files = 1

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


@dataclass
class _Group:
    """Classifiers sharing one model (indices into the run's classifiers); the model loads on first need."""

    members: list[int]
    scorer: GroupScorer | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """State of one score run."""

    cfg: ScoreConfig
    clfs: list[Classifier]
    runs: list[ClassifierRun]
    done: dict[str, set[str]]  # classifier fingerprint -> ids that already have a prediction
    sink: _Sink
    explainer: Explainer | None
    models: dict[str, LoadedModel]
    texts: int = 0
    scored_texts: int = 0
    forward_seconds: float = 0.0
    work_seconds: float = 0.0  # scoring proper: tokenize, forward, classify, write (not model loading)
    load_seconds: float = 0.0  # loading models and setting up hooks (not counted as scoring time)
    loaded: dict[tuple[str, str], LoadedModel] = field(default_factory=dict)

    def scorer(self, g: _Group) -> GroupScorer:
        if g.scorer is None:
            t0 = time.perf_counter()
            first = self.clfs[g.members[0]]
            lm = self.models.get(str(first.manifest["model"].get("model")))
            if lm is None:
                key = (str(first.manifest["model"].get("weights_sha256")), first.manifest["features"]["torch_dtype"])
                if key not in self.loaded:  # same weights, other max_length or stored dtype: load once
                    self.loaded[key] = _load_group_model(first, self.cfg)
                lm = self.loaded[key]
            g.scorer = GroupScorer(lm, [self.clfs[k] for k in g.members], self.cfg.batch_size, self.cfg.max_tokens,
                                   self.cfg.device, keep_tokens=self.explainer is not None)
            g.info = {"model": str(first.manifest["model"].get("model")),
                      "classifiers": [c.name for c in g.scorer.classifiers],
                      "blocks_run": g.scorer.featurizer.n_blocks_run, "n_layers": lm.adapter.n_layers,
                      "neurons": g.scorer.n_neurons, "texts": 0}
            eprint(f"scoring with {', '.join(g.info['classifiers'])}: blocks 0..{g.info['blocks_run'] - 1} of "
                   f"{g.info['n_layers']}, {g.info['neurons']} neurons pooled")
            self.load_seconds += time.perf_counter() - t0
        return g.scorer

    def chunk(self, groups: list[_Group], ids: list[str], texts: list[str]) -> int:
        """Score one chunk with every group (only the texts some member has not scored yet) and commit it.
        Returns the number of texts that went through a model."""
        t0, load0 = time.perf_counter(), self.load_seconds
        self.texts += len(ids)
        todo = {}
        for k, c in enumerate(self.clfs):
            have = self.done.get(c.fingerprint, set())
            todo[k] = np.fromiter((i not in have for i in ids), dtype=bool, count=len(ids))
            self.runs[k].already += int(len(ids) - todo[k].sum())
        parts, ran = [], np.zeros(len(ids), dtype=bool)
        for g in groups:
            sel = np.flatnonzero(np.logical_or.reduce([todo[k] for k in g.members]))
            if len(sel) == 0:
                continue
            scorer = self.scorer(g)
            sub = [texts[i] for i in sel]
            f0 = scorer.forward_seconds
            scores, feats = scorer.run(sub)
            self.forward_seconds += scorer.forward_seconds - f0
            g.info["texts"] += len(sel)
            ran[sel] = True
            for k, c, z in zip(g.members, scorer.classifiers, scores):
                want = np.flatnonzero(todo[k][sel])  # this classifier's new rows among those run
                if len(want) == 0:
                    continue
                parts.append(self.sink.table(c, [ids[sel[j]] for j in want], probabilities(z[want])))
                self.runs[k].scored += len(want)
                if self.explainer is not None and c.manifest["pooling"] in EXPLAIN_POOLINGS:
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
            self.work_seconds += time.perf_counter() - t0 - (self.load_seconds - load0)
        return n_run


def _write_rejects(rejects: _Rejects, cfg: ScoreConfig, messages: list[str]) -> None:
    if not rejects.rows:
        return
    rejects.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(rejects.path)
    pq.write_table(pa.Table.from_pylist(rejects.rows, schema=REJECTS_SCHEMA), tmp)
    commit(tmp, rejects.path)
    why = ", ".join(f"{k}: {v}" for k, v in sorted(rejects.reasons.items()))
    messages.append(f"{len(rejects.rows)} rows of {cfg.input} could not be scored ({why}); they are in {rejects.path}")


def score(cfg: ScoreConfig, models: dict[str, LoadedModel] | None = None) -> ScoreResult:
    """Run one scoring job. `models` ({model name: LoadedModel}) lets tests and notebooks pass built models;
    a classifier whose recorded model name is a key uses it (after the fingerprint check).

    Texts stream in chunks of cfg.chunk_rows; each chunk runs through every model group that has texts in
    it without a prediction, and is committed as one part file (directory output), so memory holds one
    chunk and a killed run resumes at a chunk boundary."""
    t_start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    clfs = _load_classifiers(cfg.classifiers)
    output = Path(cfg.output)
    if cfg.single_file and output.exists() and not cfg.force:
        raise StcError(f"--output {output} exists; pick a new file, pass --force to replace it, or give a "
                       f"directory (no .parquet suffix) to append predictions incrementally")
    if not cfg.single_file and output.exists() and not output.is_dir():
        raise StcError(f"--output {output} is a file; give a directory for a predictions table "
                       f"or a path ending in .parquet for one file")
    messages: list[str] = []
    counts = {"duplicates": 0}
    rejects = _Rejects(output.with_name(output.name.removesuffix(".parquet") + ".rejects.parquet")
                       if cfg.single_file else output / "rejects" / f"rejects-{uuid.uuid4().hex[:8]}.parquet")
    if cfg.input is not None:
        total, chunks = None, _input_chunks(cfg, rejects, counts)
        source = str(cfg.input)
    else:
        total, chunks = _store_chunks(cfg, messages)
        source = f"{cfg.store} dataset {cfg.dataset}" + (f" split {cfg.split}" if cfg.split else "")
    scored_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    run_id = scored_at.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    runs = [ClassifierRun(c.name, str(c.path), c.fingerprint, str(c.manifest["model"].get("model")), c.l_temp,
                          int(c.manifest.get("blocks_run") or 0)) for c in clfs]
    by_model: dict[str, list[int]] = {}
    for k, c in enumerate(clfs):
        by_model.setdefault(model_key(c), []).append(k)
    groups = [_Group(members) for members in by_model.values()]
    lock_root = output.parent if cfg.single_file else output
    lock_root.mkdir(parents=True, exist_ok=True)
    # a directory is a shared table: one writer at a time; a single file is private to its run
    with nullcontext() if cfg.single_file else store_lock(lock_root, "stcstore score"):
        if cfg.single_file:
            for f in (output, rejects.path):
                remove_dead_temps(f)  # left by a killed run
            done: dict[str, set[str]] = {}
        else:
            remove_stale_temps(output)
            done = _existing(output)
        explainer = None
        if cfg.explain:
            prefix = Path(cfg.explain_out) if cfg.explain_out else (
                output.with_name(output.name.removesuffix(".parquet")) if cfg.single_file
                else output / "explain" / f"run_date={scored_at.date()}" / f"explain-{run_id}")
            explainer = Explainer(prefix, cfg.explain_limit)
            no = [c.name for c in clfs if c.manifest["pooling"] not in EXPLAIN_POOLINGS]
            if no:
                messages.append(f"no token explanation for {', '.join(no)}: single-token classifiers have no "
                                f"per-token reading (only mean- and max-pooled ones do)")
        run = _Run(cfg, clfs, runs, done, _Sink(cfg, output, run_id, scored_at), explainer, dict(models or {}))
        try:
            with tqdm(total=total, unit="text", file=sys.stderr, disable=None, dynamic_ncols=True,
                      desc="score") as bar:
                for j, (ids, texts) in enumerate(chunks):
                    n_run = run.chunk(groups, ids, texts)
                    bar.update(len(ids))
                    if bar.disable and n_run:  # no TTY (a log file): one line per scored chunk
                        eprint(f"chunk {j + 1}: {run.texts}" + (f"/{total}" if total else "") + " texts read, "
                               f"{run.scored_texts} scored")
            run.sink.close()
            if explainer is not None:
                explainer.close()
        except BaseException as exc:
            run.sink.abort()
            if explainer is not None:
                explainer.abort()
            if isinstance(exc, StcError) and run.sink.files and not cfg.single_file:
                raise StcError(f"{exc}\nthe predictions of the {run.scored_texts} texts before it are committed in "
                               f"{output}; fix the input and run again to score the rest") from exc
            raise
        if run.texts and not run.scored_texts:
            messages.append(f"nothing to score: all {run.texts} texts already have predictions from "
                            + ", ".join(f"{c.name} [{c.fingerprint[:12]}]" for c in clfs) + f" in {output}")
        _write_rejects(rejects, cfg, messages)
    return ScoreResult(
        output=str(output), source=source, classifiers=runs, texts=run.texts, scored_texts=run.scored_texts,
        rejected=len(rejects.rows), duplicates=counts["duplicates"], files_written=run.sink.files,
        seconds=time.perf_counter() - t_start, forward_seconds=run.forward_seconds,
        texts_per_s=run.scored_texts / run.work_seconds if run.scored_texts and run.work_seconds > 0 else 0.0,
        groups=[g.info for g in groups if g.info], rejects_path=str(rejects.path) if rejects.rows else None,
        explain_jsonl=str(explainer.jsonl) if explainer else None,
        explain_html=str(explainer.html) if explainer else None, messages=messages,
    )
