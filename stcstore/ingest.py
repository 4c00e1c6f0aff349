"""`stcstore ingest`: read tweet dumps, JSONL, CSV or Parquet into the store's texts table.

Each source file becomes one batch directory, renamed into place only when complete: a killed or
failed ingest leaves nothing visible. Unusable rows go to the rejects table with a reason; re-ingesting
a file already ingested with the same options adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import StcError
from .readers import RAW_KEEP, READ_ERRORS, READERS, Row, detect_format, has_surrogates, strip_ext
from .fsutil import commit, config_hash, file_sha256, remove_stale_temps, store_lock, tmp_name
from .idindex import IdIndex, text_key
from .store import REJECTS_SCHEMA, SOURCES_SCHEMA, TEXTS_SCHEMA, Store, check_name

FORMATS = ("auto", "jsonl", "csv", "parquet", "tweets")
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation", "eval": "validation"}
KNOWN_SPLITS = ("train", "validation", "test")
WRITE_ROWS = 50_000  # rows per Parquet row group while streaming a large file


@dataclass(frozen=True)
class IngestConfig:
    """Options of one ingest run; validated without I/O. Recorded (hashed) with every batch."""

    dataset: str
    format: str = "auto"
    text_field: str = "text"
    label_field: str = "label"
    id_field: str = "id"
    split_field: str | None = None
    split: str | None = None  # one split name for every row of the files

    def __post_init__(self) -> None:
        check_name(self.dataset, "--dataset")
        if self.format not in FORMATS:
            raise StcError(f"--format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.split is not None and self.split_field is not None:
            raise StcError("give either --split NAME (one split for the whole file) or --split-field F, not both")
        if self.split is not None:
            check_name(normalize_split(self.split), "--split")

    def options_hash(self) -> str:
        d = asdict(self)
        d.pop("dataset")
        return config_hash(d)


@dataclass
class FileResult:
    source: str
    format: str
    rows_read: int = 0
    ingested: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: bool = False  # already ingested with the same options
    batch: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestResult:
    dataset: str
    store: str
    files: list[FileResult]
    seconds: float

    def totals(self) -> dict[str, int]:
        keys = ("rows_read", "ingested", "duplicates", "rejected")
        return {k: sum(getattr(f, k) for f in self.files) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "store": self.store, **self.totals(), "seconds": round(self.seconds, 3),
                "files": [asdict(f) for f in self.files]}


def normalize_split(value: str) -> str:
    v = str(value).strip().lower()
    return SPLIT_ALIASES.get(v, v)


# ------------------------------------------------------------------------------------------- validation


def _as_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    s = str(value)
    return s if s.strip() else None


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def row_problem(row: Row, text_field: str) -> str | None:
    """Why a candidate row cannot be used as a text (the reject reason), or None. Shared by ingest and score."""
    if row.error:
        return row.error
    if row.text is None:
        return f"no text: field {text_field!r} missing or null"
    if not isinstance(row.text, str):
        return f"text field {text_field!r} is a {type(row.text).__name__}, not a string"
    if has_surrogates(row.text):
        return "invalid unicode in text (lone surrogate)"
    if not row.text.strip():
        return "empty text"
    return None


def row_id(row: Row, text_hash: str) -> str:
    """The row's id field as a string, or a hash of its text when it has none."""
    return _as_str(row.id) or f"h{text_hash[:20]}"


def _default_split(path: Path) -> str | None:
    stem = strip_ext(path).rsplit(".", 1)[0]
    s = normalize_split(stem)
    return s if s in KNOWN_SPLITS else None


class _BatchWriter:
    """Streams texts and rejects of one source file into a temp batch directory."""

    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(parents=True)
        self.tmp = tmp
        self.texts: list[dict] = []
        self.rejects: list[dict] = []
        self._tw = pq.ParquetWriter(tmp / "texts.parquet", TEXTS_SCHEMA, compression="zstd")
        self._rw = pq.ParquetWriter(tmp / "rejects.parquet", REJECTS_SCHEMA, compression="zstd")

    def add_text(self, row: dict) -> None:
        self.texts.append(row)
        if len(self.texts) >= WRITE_ROWS:
            self._flush()

    def add_reject(self, row: dict) -> None:
        self.rejects.append(row)
        if len(self.rejects) >= WRITE_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.texts:
            self._tw.write_table(pa.Table.from_pylist(self.texts, schema=TEXTS_SCHEMA))
            self.texts = []
        if self.rejects:
            self._rw.write_table(pa.Table.from_pylist(self.rejects, schema=REJECTS_SCHEMA))
            self.rejects = []

    def close(self, source_row: dict) -> None:
        self._flush()
        self._tw.close()
        self._rw.close()
        pq.write_table(pa.Table.from_pylist([source_row], schema=SOURCES_SCHEMA), self.tmp / "source.parquet")


def _ingest_file(store: Store, path: Path, cfg: IngestConfig, known: IdIndex,
                 next_seq: int, batch_no: int, done: set[tuple[str, str]]) -> FileResult:
    if not path.is_file():
        raise StcError(f"{path}: no such file")
    fmt = detect_format(path) if cfg.format == "auto" else cfg.format
    result = FileResult(source=str(path), format=fmt)
    sha = file_sha256(path)
    if (sha, cfg.options_hash()) in done:
        result.skipped = True
        return result
    now = datetime.now(timezone.utc)
    file_split = normalize_split(cfg.split) if cfg.split else _default_split(path)
    final = store.ingest_dir(cfg.dataset) / f"batch={batch_no:06d}"
    tmp = tmp_name(final)
    writer = _BatchWriter(tmp)
    seq = next_seq

    def reject(row: Row, reason: str) -> None:
        result.rejected += 1
        key = reason.split(":")[0]
        result.reasons[key] = result.reasons.get(key, 0) + 1
        writer.add_reject({"source": str(path), "line": row.line, "id": _as_str(row.id), "reason": reason,
                           "raw": row.raw[:RAW_KEEP], "ingested_at": now})

    try:
        missing_text_only = True
        for row in READERS[fmt](path, cfg):
            result.rows_read += 1
            if row.error or row.text is not None:
                missing_text_only = False
            problem = row_problem(row, cfg.text_field)
            if problem:
                reject(row, problem)
                continue
            h = content_hash(row.text)
            label = _as_str(row.label)
            rid = row_id(row, h)
            split_value = _as_str(row.split)
            split = normalize_split(split_value) if split_value else file_split or ("train" if label else "unlabeled")
            try:
                check_name(split, "split")
            except StcError:
                reject(row, f"invalid split name {split!r}")
                continue
            prior = known.get(rid)
            if prior is not None:
                if prior[0] != text_key(h):
                    reject(row, "id already exists with a different text")
                elif prior[1] != label or prior[2] != split:
                    reject(row, f"id already exists with label {prior[1]!r} / split {prior[2]!r}")
                else:
                    result.duplicates += 1
                continue
            known.add(rid, h, label, split)
            writer.add_text({"id": rid, "text": row.text, "label": label, "split": split, "content_hash": h,
                             "source": str(path), "line": row.line, "seq": seq, "is_retweet": row.is_retweet,
                             "ingested_at": now})
            seq += 1
            result.ingested += 1
        if result.rows_read and result.ingested == 0 and result.duplicates == 0 and missing_text_only:
            raise StcError(f"{path}: no row has the text field {cfg.text_field!r}; pass --text-field "
                           f"(dotted paths like user.description work for JSON)")
        writer.close({"source": str(path), "sha256": sha, "config_hash": cfg.options_hash(), "format": fmt,
                      "rows_read": result.rows_read, "ingested": result.ingested,
                      "duplicates": result.duplicates, "rejected": result.rejected,
                      "seq_start": next_seq, "seq_end": seq - 1, "ingested_at": now})
    except READ_ERRORS as exc:
        _discard(tmp)
        raise StcError(f"{path}: unreadable ({type(exc).__name__}: {exc}); nothing from it was ingested") from exc
    except BaseException:
        _discard(tmp)
        raise
    final.parent.mkdir(parents=True, exist_ok=True)
    commit(tmp, final)
    result.batch = batch_no
    return result


def _discard(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def ingest(store_path: str | Path, sources: list[str | Path], cfg: IngestConfig) -> IngestResult:
    """Ingest files in order; each file is committed on its own. Raises StcError on an unreadable file
    (files before it stay ingested and are listed in the message)."""
    if not sources:
        raise StcError("give at least one SOURCE file to ingest")
    t0 = time.perf_counter()
    store = Store(store_path)
    with store_lock(store.root, "stcstore ingest"):
        store.ensure()
        remove_stale_temps(store.root / "ingest")
        texts = store.texts(cfg.dataset, columns=["id", "content_hash", "label", "split", "seq"])
        known = IdIndex(row for batch in texts.to_batches(max_chunksize=65536)  # Python strings a slice at a time
                        for row in zip(*(batch.column(c).to_pylist() for c in ("id", "content_hash", "label",
                                                                                "split"))))
        next_seq = (max(texts.column("seq").to_pylist()) + 1) if texts.num_rows else 0
        del texts
        log = store.sources(cfg.dataset)
        done = set(zip(log.column("sha256").to_pylist(), log.column("config_hash").to_pylist()))
        batches = sorted(store.ingest_dir(cfg.dataset).glob("batch=*"))
        batch_no = int(batches[-1].name.split("=")[1]) + 1 if batches else 0
        results: list[FileResult] = []
        for src in sources:
            try:
                r = _ingest_file(store, Path(src), cfg, known, next_seq, batch_no, done)
            except StcError as exc:
                if results:
                    ok = ", ".join(f"{f.source} ({f.ingested} rows)" for f in results)
                    raise StcError(f"{exc}\nalready committed before this file: {ok}") from exc
                raise
            results.append(r)
            if not r.skipped:
                next_seq += r.ingested
                batch_no += 1
    return IngestResult(cfg.dataset, str(store.root), results, time.perf_counter() - t0)
