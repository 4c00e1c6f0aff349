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
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from .blocks import BlockKey
from .classifier import MODEL_CHECK_KEYS, Classifier, load_classifier
from .errors import StcError
from .featurize import Features, Featurizer
from .fsutil import commit, eprint, remove_dead_temps, remove_stale_temps, store_lock, tmp_name
from .ingest import FORMATS, IngestConfig, content_hash, row_id, row_problem
from .models import LoadedModel, load_model
from .readers import RAW_KEEP, READ_ERRORS, READERS, detect_format
from .solver import probabilities
from .store import PREDICTIONS_SCHEMA, REJECTS_SCHEMA, Store, check_name

EXPLAIN_POOLINGS = ("mean", "max")


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


# ------------------------------------------------------------------------------------------- explanations


def _token_spans(lm: LoadedModel, text: str, ids: list[int]) -> list[tuple[str, int, int]]:
    """(token as shown, start, end) per token id; start = end = -1 for special tokens."""
    tok = lm.tokenizer
    shown = tok.convert_ids_to_tokens(ids)
    special = set(tok.all_special_ids)
    if getattr(tok, "is_fast", False):
        enc = tok(text, truncation=True, max_length=len(ids) + 8, add_special_tokens=True,
                  return_offsets_mapping=True, return_token_type_ids=False)
        if enc["input_ids"][:len(ids)] == ids:
            out = []
            for t, i, (a, b) in zip(shown, ids, enc["offset_mapping"][:len(ids)]):
                out.append((t, -1, -1) if i in special or a == b else (text[a:b], a, b))
            return out
    return [(t, -1, -1) for t in shown]


class Explainer:
    """Writes token-level explanations: one JSON line per (text, classifier), plus an HTML page."""

    def __init__(self, prefix: Path, limit: int) -> None:
        self.jsonl = prefix.with_name(prefix.name + ".explain.jsonl")
        self.html = prefix.with_name(prefix.name + ".explain.html")
        self.limit = limit
        self._tmp = tmp_name(self.jsonl)
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self._tmp, "w", encoding="utf-8")
        self._cards: list[str] = []
        self.n = 0

    def add(self, *, text_id: str, text: str, clf: Classifier, label: str, scores: np.ndarray,
            spans: list[tuple[str, int, int]], token_scores: np.ndarray) -> None:
        classes = [str(c) for c in clf.classes_]
        proba = probabilities(scores[None, :])[0]
        token_proba = probabilities(token_scores)
        # evidence of each token for its own most likely class: log-odds against the runner-up
        z = np.concatenate([np.zeros_like(token_scores), token_scores], 1) if token_scores.shape[1] == 1 \
            else token_scores
        top2 = np.sort(z, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        rec = {"id": text_id, "classifier": clf.name, "classifier_fingerprint": clf.fingerprint,
               "pooling": clf.manifest["pooling"], "classes": classes, "label": label,
               "probabilities": [round(float(p), 6) for p in proba],
               "scores": [round(float(v), 5) for v in scores], "text": text,
               "tokens": [{"token": t, "start": a, "end": b, "label": classes[int(np.argmax(p))],
                           "probabilities": [round(float(x), 6) for x in p],
                           "scores": [round(float(v), 5) for v in zt], "margin": round(float(m), 4)}
                          for (t, a, b), p, zt, m in zip(spans, token_proba, token_scores, margin)]}
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.n += 1
        if len(self._cards) < self.limit:
            self._cards.append(_html_card(rec))

    def close(self) -> None:
        self._f.close()
        commit(self._tmp, self.jsonl)
        tmp = tmp_name(self.html)
        tmp.write_text(_html_page(self._cards, self.n, self.limit), encoding="utf-8")
        commit(tmp, self.html)

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)


PALETTE = ["#d7301f", "#2166ac", "#1a9850", "#984ea3", "#ff7f00", "#a6761d", "#e7298a", "#666666"]


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:.2f})"


def _tint(classes: list[str], token: dict, scale: float) -> str:
    """The colour of the token's most likely class; opacity = its log-odds margin over the runner-up class,
    relative to the largest margin in the text (so the page shows where the evidence sits in each text)."""
    k = classes.index(token["label"])
    alpha = min(1.0, token["margin"] / scale) if scale > 0 else 0.0
    return _rgba(PALETTE[k % len(PALETTE)], 0.8 * alpha)


def _html_card(rec: dict) -> str:
    classes = rec["classes"]
    text = rec["text"]
    parts, pos = [], 0
    specials = []
    scale = max((t["margin"] for t in rec["tokens"]), default=0.0)
    for t in rec["tokens"]:
        title = _esc(f"{t['token']}: " + ", ".join(f"{c} {p:.3f}" for c, p in zip(classes, t["probabilities"]))
                     + f"; log-odds margin {t['margin']:.2f}")
        chip = f'<span class="t" style="background:{_tint(classes, t, scale)}" title="{title}">'
        if t["start"] < 0:
            specials.append(chip + _esc(t["token"]) + "</span>")
            continue
        if t["start"] > pos:
            parts.append(_esc(text[pos:t["start"]]))
        if t["start"] >= pos:
            parts.append(chip + _esc(text[t["start"]:t["end"]]) + "</span>")
            pos = t["end"]
    parts.append(_esc(text[pos:]))
    verdict = " · ".join(f"P({c}) {p:.3f}" for c, p in zip(classes, rec["probabilities"]))
    colour = PALETTE[classes.index(rec["label"]) % len(PALETTE)]
    swatches = " ".join(f'<span class="t" style="background:{_rgba(PALETTE[i % len(PALETTE)], 0.8)}">'
                        f'{_esc(c)}</span>' for i, c in enumerate(classes))
    return (f'<div class="card"><div class="head">classes {swatches} · predicted '
            f'<b style="color:{colour}">{_esc(rec["label"])}</b> '
            f'<span class="p">{_esc(verdict)}</span> <span class="id">{_esc(rec["classifier"])} · id '
            f'{_esc(rec["id"])} · {rec["pooling"]}-pooled</span></div>'
            f'<div class="text">{"".join(parts)}</div>'
            + (f'<div class="sp">special tokens: {" ".join(specials)}</div>' if specials else "") + "</div>")


def _html_page(cards: list[str], n: int, limit: int) -> str:
    legend = ""
    more = f"<p>Showing {len(cards)} of {n} explained texts; all are in the .explain.jsonl file.</p>" \
        if n > len(cards) else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stcstore token explanations</title>
<style>
body {{ font: 15px/1.6 system-ui, sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: .6em .9em; margin: .8em 0; }}
.head {{ font-size: 13px; margin-bottom: .3em; }} .p, .id {{ color: #666; }}
.text {{ font-size: 17px; }} .t {{ border-radius: 3px; padding: 0 1px; }}
.sp {{ font-size: 12px; color: #666; margin-top: .3em; }}
</style></head><body>
<h1>Token-level explanations</h1>
<p>Each token is coloured by the class the classifier gives it when it is applied to that token's own
neuron values instead of the pooled ones (STC paper, section 5.3). The stronger the colour, the larger the
token's log-odds margin for that class over the runner-up, relative to the strongest token of the same
text. Hover a token for its class probabilities. The heading of each text shows the classifier's
prediction for the whole text.</p>{legend}{more}
{"".join(cards)}
</body></html>
"""


# ------------------------------------------------------------------------------------------- sources


@dataclass
class _Rejects:
    path: Path
    rows: list[dict] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


def _input_texts(cfg: ScoreConfig, rejects: _Rejects, counts: dict[str, int]) -> tuple[list[str], list[str]]:
    """Read and validate --input like ingest does: (ids, texts); unusable rows go to `rejects`."""
    path = Path(cfg.input)  # type: ignore[arg-type]
    if not path.is_file():
        raise StcError(f"--input {path}: no such file")
    fmt = detect_format(path) if cfg.format == "auto" else cfg.format
    icfg = IngestConfig(dataset="input", format=fmt, text_field=cfg.text_field, id_field=cfg.id_field)
    now = dt.datetime.now(dt.timezone.utc)
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, str] = {}

    def reject(row, reason: str) -> None:
        key = reason.split(":")[0]
        rejects.reasons[key] = rejects.reasons.get(key, 0) + 1
        rejects.rows.append({"source": str(path), "line": row.line, "id": None if row.id is None else str(row.id),
                             "reason": reason, "raw": row.raw[:RAW_KEEP], "ingested_at": now})

    try:
        for row in READERS[fmt](path, icfg):
            problem = row_problem(row, cfg.text_field)
            if problem:
                reject(row, problem)
                continue
            h = content_hash(row.text)
            rid = row_id(row, h)
            if rid in seen:
                if seen[rid] != h:
                    reject(row, "id already seen in this file with a different text")
                else:
                    counts["duplicates"] += 1
                continue
            seen[rid] = h
            ids.append(rid)
            texts.append(row.text)
    except READ_ERRORS as exc:
        raise StcError(f"--input {path}: unreadable ({type(exc).__name__}: {exc}); nothing was scored") from exc
    return ids, texts


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


def score(cfg: ScoreConfig, models: dict[str, LoadedModel] | None = None) -> ScoreResult:
    """Run one scoring job. `models` ({model name: LoadedModel}) lets tests and notebooks pass built models;
    a classifier whose recorded model name is a key uses it (after the fingerprint check)."""
    t_start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    clfs = [load_classifier(p) for p in cfg.classifiers]
    names: dict[str, Classifier] = {}
    for c in clfs:
        other = names.get(c.name)
        if other is not None:
            same = other.fingerprint == c.fingerprint
            raise StcError(f"two classifiers named {c.name!r} ({other.path}, {c.path})"
                           + (": the same classifier twice" if same else "; predictions are labelled by "
                              "directory name, so rename one of the directories"))
        names[c.name] = c
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
        ids, texts = _input_texts(cfg, rejects, counts)
        source = str(cfg.input)
    else:
        store = Store(cfg.store)  # type: ignore[arg-type]
        store.require()
        if cfg.dataset not in store.datasets():
            raise StcError(f"store {store.root} has no dataset {cfg.dataset!r} (it has: "
                           f"{', '.join(store.datasets()) or 'none'}); run `stcstore ingest` first")
        import pyarrow.compute as pc

        table = store.texts(cfg.dataset, columns=["id", "text", "split"],
                            filter_expr=None if cfg.split is None else pc.field("split") == cfg.split)
        # texts stay in Arrow (compact); each chunk converts only its own rows to Python strings
        ids, texts = table.column("id").to_pylist(), table.column("text")
        source = f"{cfg.store} dataset {cfg.dataset}" + (f" split {cfg.split}" if cfg.split else "")
        if not ids:
            messages.append(f"dataset {cfg.dataset!r}" + (f" has no texts in split {cfg.split!r}" if cfg.split
                                                         else " has no texts"))

    scored_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    run_id = scored_at.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    runs = [ClassifierRun(c.name, str(c.path), c.fingerprint, str(c.manifest["model"].get("model")), c.l_temp,
                          int(c.manifest.get("blocks_run") or 0)) for c in clfs]
    lock_root = output if not cfg.single_file else output.parent
    lock_root.mkdir(parents=True, exist_ok=True)
    files_written = 0
    scored_texts = 0
    groups_info: list[dict[str, Any]] = []
    explainer: Explainer | None = None
    forward_seconds = 0.0
    work_seconds = 0.0  # scoring proper: tokenize, forward, classify, write (not model loading)
    with store_lock(lock_root, "stcstore score") if not cfg.single_file else nullcontext():
        if not cfg.single_file:
            remove_stale_temps(output)
            done = _existing(output)
        else:
            done = {}
        id_arr = np.asarray(ids, dtype=object)
        todo = {}
        for c, r in zip(clfs, runs):
            have = done.get(c.fingerprint, set())
            mask = np.fromiter((i not in have for i in ids), dtype=bool, count=len(ids))
            todo[c.fingerprint] = mask
            r.already = int(len(ids) - mask.sum())
        if ids and not any(m.any() for m in todo.values()):
            messages.append(f"nothing to score: all {len(ids)} texts already have predictions from "
                            + ", ".join(f"{c.name} [{c.fingerprint[:12]}]" for c in clfs) + f" in {output}")
        if cfg.explain:
            prefix = Path(cfg.explain_out) if cfg.explain_out else (
                output.with_name(output.name.removesuffix(".parquet")) if cfg.single_file
                else output / "explain" / f"run_date={scored_at.date()}" / f"explain-{run_id}")
            explainer = Explainer(prefix, cfg.explain_limit)
            no = [c.name for c in clfs if c.manifest["pooling"] not in EXPLAIN_POOLINGS]
            if no:
                messages.append(f"no token explanation for {', '.join(no)}: single-token classifiers have no "
                                f"per-token reading (only mean- and max-pooled ones do)")
        writer = None
        single_tmp = tmp_name(output) if cfg.single_file else None
        if cfg.single_file:
            output.parent.mkdir(parents=True, exist_ok=True)
            for f in (output, rejects.path):
                remove_dead_temps(f)  # left by a killed run
            writer = pq.ParquetWriter(single_tmp, PREDICTIONS_SCHEMA, compression="zstd")
        try:
            loaded: dict[tuple[str, str], LoadedModel] = {}
            by_model: dict[str, list[int]] = {}
            for k, c in enumerate(clfs):
                by_model.setdefault(model_key(c), []).append(k)
            for members in by_model.values():
                need = np.zeros(len(ids), dtype=bool)
                for k in members:
                    need |= todo[clfs[k].fingerprint]
                rows = np.flatnonzero(need)
                first = clfs[members[0]]
                if len(rows) == 0:
                    continue
                lm = (models or {}).get(str(first.manifest["model"].get("model")))
                if lm is None:
                    key = (str(first.manifest["model"].get("weights_sha256")), first.manifest["features"]["torch_dtype"])
                    if key not in loaded:  # same weights, other max_length or stored dtype: load once
                        loaded[key] = _load_group_model(first, cfg)
                    lm = loaded[key]
                group = GroupScorer(lm, [clfs[k] for k in members], cfg.batch_size, cfg.max_tokens, cfg.device,
                                    keep_tokens=explainer is not None)
                info = {"model": str(first.manifest["model"].get("model")), "classifiers": [clfs[k].name for k in members],
                        "blocks_run": group.featurizer.n_blocks_run, "n_layers": lm.adapter.n_layers,
                        "neurons": group.n_neurons, "texts": int(len(rows))}
                groups_info.append(info)
                eprint(f"{len(rows)} texts to score with {', '.join(info['classifiers'])}: blocks "
                       f"0..{info['blocks_run'] - 1} of {info['n_layers']}, {info['neurons']} neurons pooled")
                n_chunks = -(-len(rows) // cfg.chunk_rows)
                t_group = time.perf_counter()
                with tqdm(total=len(rows), unit="text", file=sys.stderr, disable=None, dynamic_ncols=True,
                          desc="score") as bar:
                    for j, (a, b) in enumerate(_chunks(len(rows), cfg.chunk_rows)):
                        sel = rows[a:b]
                        chunk_texts = texts.take(pa.array(sel)).to_pylist() if isinstance(texts, pa.ChunkedArray) \
                            else [texts[i] for i in sel]
                        scores, feats = group.run(chunk_texts)
                        parts = []
                        for k, z in zip(members, scores):
                            c = clfs[k]
                            p = probabilities(z)
                            want = todo[c.fingerprint][sel]
                            if not want.any():
                                continue
                            labels = c.classes_[np.argmax(p, axis=1)]
                            parts.append(pa.table({
                                "id": pa.array(id_arr[sel][want].tolist(), pa.string()),
                                "classifier": pa.array([c.name] * int(want.sum()), pa.string()),
                                "classifier_fingerprint": pa.array([c.fingerprint] * int(want.sum()), pa.string()),
                                "label": pa.array([str(x) for x in labels[want]], pa.string()),
                                "probabilities": pa.array(p[want].astype(np.float64).tolist(),
                                                          pa.list_(pa.float64())),
                                "scored_at": pa.array([scored_at] * int(want.sum()), pa.timestamp("us", tz="UTC")),
                            }, schema=PREDICTIONS_SCHEMA))
                            runs[k].scored += int(want.sum())
                            if explainer is not None and c.manifest["pooling"] in EXPLAIN_POOLINGS:
                                for jj in np.flatnonzero(want):
                                    i = int(sel[jj])
                                    explainer.add(text_id=ids[i], text=chunk_texts[jj], clf=c, label=str(labels[jj]),
                                                  scores=z[jj],
                                                  spans=_token_spans(lm, chunk_texts[jj], feats.token_ids[jj]),
                                                  token_scores=group.token_scores(c, feats.tokens[jj]))
                                    runs[k].explained += 1
                        table = pa.concat_tables(parts)
                        if writer is not None:
                            writer.write_table(table)
                        else:
                            final = output / f"run_date={scored_at.date()}" / f"part-{run_id}-{files_written:06d}.parquet"
                            final.parent.mkdir(parents=True, exist_ok=True)
                            tmp = tmp_name(final)
                            pq.write_table(table, tmp, compression="zstd")
                            commit(tmp, final)
                            files_written += 1
                        scored_texts += len(sel)
                        bar.update(len(sel))
                        if bar.disable:
                            eprint(f"chunk {j + 1}/{n_chunks}: {b}/{len(rows)} texts")
                forward_seconds += group.forward_seconds
                work_seconds += time.perf_counter() - t_group
            if writer is not None:
                writer.close()
                writer = None
                if output.exists():
                    output.unlink()  # --force: replaced only now, when the new file is complete
                commit(single_tmp, output)  # type: ignore[arg-type]
                files_written = 1
            if explainer is not None:
                explainer.close()
        except BaseException:
            if writer is not None:
                writer.close()
            if single_tmp is not None:
                single_tmp.unlink(missing_ok=True)
            if explainer is not None:
                explainer.abort()
            raise
        if rejects.rows:
            rejects.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = tmp_name(rejects.path)
            pq.write_table(pa.Table.from_pylist(rejects.rows, schema=REJECTS_SCHEMA), tmp)
            commit(tmp, rejects.path)
            why = ", ".join(f"{k}: {v}" for k, v in sorted(rejects.reasons.items()))
            messages.append(f"{len(rejects.rows)} rows of {cfg.input} could not be scored ({why}); "
                            f"they are in {rejects.path}")
    return ScoreResult(
        output=str(output), source=source, classifiers=runs, texts=len(ids), scored_texts=scored_texts,
        rejected=len(rejects.rows), duplicates=counts["duplicates"], files_written=files_written,
        seconds=time.perf_counter() - t_start, forward_seconds=forward_seconds,
        texts_per_s=scored_texts / work_seconds if scored_texts and work_seconds > 0 else 0.0, groups=groups_info,
        rejects_path=str(rejects.path) if rejects.rows else None,
        explain_jsonl=str(explainer.jsonl) if explainer else None,
        explain_html=str(explainer.html) if explainer else None, messages=messages,
    )
