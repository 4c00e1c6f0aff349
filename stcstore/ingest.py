"""`stcstore ingest`: read tweet dumps, JSONL, CSV or Parquet into the store's texts table.

Each source file becomes one batch directory, renamed into place only when complete: a killed or
failed ingest leaves nothing visible. Unusable rows go to the rejects table with a reason; re-ingesting
a file already ingested with the same options adds nothing.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import html
import io
import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import StcError
from .fsutil import commit, config_hash, file_sha256, remove_stale_temps, store_lock, tmp_name
from .store import REJECTS_SCHEMA, SOURCES_SCHEMA, TEXTS_SCHEMA, Store, check_name

FORMATS = ("auto", "jsonl", "csv", "parquet", "tweets")
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation", "eval": "validation"}
KNOWN_SPLITS = ("train", "validation", "test")
READ_ERRORS = (OSError, EOFError, zlib.error, csv.Error)  # a file unreadable as a whole (gzip errors are OSError)
RAW_KEEP = 2000  # characters of a rejected row kept for inspection
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
class Row:
    """One candidate text before validation."""

    line: int
    raw: str
    text: Any = None
    label: Any = None
    id: Any = None
    split: Any = None
    is_retweet: bool | None = None
    error: str | None = None


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


def get_path(obj: Any, dotted: str) -> Any:
    """obj['a']['b'] for 'a.b'; None when any step is missing."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


# ------------------------------------------------------------------------------------------- readers


def _open_bytes(path: Path) -> io.BufferedIOBase:
    """Open plain or gzip (by magic bytes, not by name)."""
    f = open(path, "rb")
    if f.peek(2)[:2] == b"\x1f\x8b":
        return gzip.open(f)  # type: ignore[return-value]
    return f


def _strip_ext(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def detect_format(path: Path) -> str:
    name = _strip_ext(path)
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    # JSON lines: peek at the first object to tell tweet dumps from generic records
    try:
        with _open_bytes(path) as f:
            for raw in f:
                if raw.strip():
                    obj = json.loads(raw)
                    if isinstance(obj, dict) and ("data" in obj or "id_str" in obj or "full_text" in obj
                                                  or "retweeted_status" in obj):
                        return "tweets"
                    return "jsonl"
    except READ_ERRORS as exc:
        raise StcError(f"{path}: unreadable ({type(exc).__name__}: {exc}); nothing from it was ingested") from exc
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "jsonl"
    return "jsonl"


def _decode_lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, decoded line, error) for each non-blank line of a (gzipped) text file; a line that
    is not valid UTF-8 comes with an error and its text decoded with replacement characters."""
    with _open_bytes(path) as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n"), ""
            except UnicodeDecodeError as exc:
                yield n, raw.decode("utf-8", "replace").rstrip("\r\n"), f"invalid UTF-8 at byte {exc.start}"


def _json_rows(path: Path, cfg: IngestConfig) -> Iterator[Row]:
    for n, line, err in _decode_lines(path):
        if err:
            yield Row(n, line, error=err)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Row(n, line, error=f"malformed JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(obj, dict):
            yield Row(n, line, error=f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield Row(n, line, text=get_path(obj, cfg.text_field), label=get_path(obj, cfg.label_field),
                  id=get_path(obj, cfg.id_field), split=get_path(obj, cfg.split_field) if cfg.split_field else None)


def _tweet_v1_text(t: dict) -> Any:
    ext = t.get("extended_tweet")
    if isinstance(ext, dict) and ext.get("full_text") is not None:
        return ext["full_text"]
    return t.get("full_text") if t.get("full_text") is not None else t.get("text")


def _tweet_v2_text(t: dict) -> Any:
    note = t.get("note_tweet")
    if isinstance(note, dict) and note.get("text") is not None:
        return note["text"]
    return t.get("text")


def _unescape(text: Any) -> Any:
    # The Twitter API HTML-escapes &, < and > in tweet text.
    return html.unescape(text) if isinstance(text, str) else text


def _tweet_rows(path: Path, cfg: IngestConfig) -> Iterator[Row]:
    """Twitter API v1.1 tweet objects, one per line, or v2 response pages ({"data": [...], "includes": ...})."""
    for row in _json_rows(path, cfg):
        if row.error:
            yield row
            continue
        obj = json.loads(row.raw)
        label = row.label
        split = row.split
        if "data" in obj:  # v2 page (or a single-tweet lookup, where data is an object)
            data = obj["data"] if isinstance(obj["data"], list) else [obj["data"]]
            included = {t.get("id"): t for t in get_path(obj, "includes.tweets") or [] if isinstance(t, dict)}
            for t in data:
                if not isinstance(t, dict):
                    yield Row(row.line, json.dumps(t)[:RAW_KEEP], error="v2 data item is not an object")
                    continue
                refs = [r for r in t.get("referenced_tweets") or [] if isinstance(r, dict)]
                rt = next((r.get("id") for r in refs if r.get("type") == "retweeted"), None)
                text = _tweet_v2_text(included[rt]) if rt in included else _tweet_v2_text(t)
                yield Row(row.line, json.dumps(t, ensure_ascii=False), text=_unescape(text),
                          label=get_path(t, cfg.label_field) if label is None else label,
                          id=t.get("id"), split=split, is_retweet=rt is not None)
            continue
        retweeted = obj.get("retweeted_status")
        is_rt = isinstance(retweeted, dict)
        # A v1.1 retweet's own text is truncated ("RT @user: ..."): keep the original's full text.
        text = _tweet_v1_text(retweeted if is_rt else obj)
        tid = obj.get("id_str") if obj.get("id_str") is not None else obj.get("id")
        # id_str, not id: JSON numbers above 2**53 lose digits in many producers
        yield Row(row.line, row.raw, text=_unescape(text), label=label,
                  id=tid if cfg.id_field == "id" else row.id, split=split, is_retweet=is_rt)


def _csv_rows(path: Path, cfg: IngestConfig) -> Iterator[Row]:
    delimiter = "\t" if _strip_ext(path).endswith(".tsv") else ","
    with _open_bytes(path) as fb:
        text = io.TextIOWrapper(fb, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.DictReader(text, delimiter=delimiter)
        header = reader.fieldnames or []
        if not header:
            raise StcError(f"{path}: empty CSV file or no header row")
        if cfg.text_field not in header:
            raise StcError(f"{path}: no column {cfg.text_field!r} (columns: {', '.join(header)}); "
                           f"pass --text-field with the column holding the text")
        prev_line = 1
        for rec in reader:
            line = prev_line + 1
            prev_line = reader.line_num
            raw = delimiter.join(str(v) for v in rec.values())
            if None in rec:
                yield Row(line, raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                          error=f"{len(header) + len(rec[None])} fields, header has {len(header)}")
                continue
            bad = [k for k, v in rec.items() if isinstance(v, str) and _has_surrogates(v)]
            if bad:
                yield Row(line, raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                          error=f"invalid UTF-8 in column {bad[0]!r}")
                continue
            yield Row(line, raw, text=rec.get(cfg.text_field), label=rec.get(cfg.label_field) or None,
                      id=rec.get(cfg.id_field) or None, split=rec.get(cfg.split_field) if cfg.split_field else None)


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _parquet_rows(path: Path, cfg: IngestConfig) -> Iterator[Row]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StcError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = pf.schema_arrow.names
    if cfg.text_field not in names:
        raise StcError(f"{path}: no column {cfg.text_field!r} (columns: {', '.join(names)}); "
                       f"pass --text-field with the column holding the text")
    wanted = [c for c in (cfg.text_field, cfg.label_field, cfg.id_field, cfg.split_field) if c and c in names]
    n = 0
    for batch in pf.iter_batches(batch_size=WRITE_ROWS, columns=list(dict.fromkeys(wanted))):
        cols = {c: batch.column(c).to_pylist() for c in batch.schema.names}
        for i in range(batch.num_rows):
            n += 1
            rec = {c: v[i] for c, v in cols.items()}
            yield Row(n, json.dumps(rec, ensure_ascii=False, default=str), text=rec.get(cfg.text_field),
                      label=rec.get(cfg.label_field), id=rec.get(cfg.id_field),
                      split=rec.get(cfg.split_field) if cfg.split_field else None)


READERS = {"jsonl": _json_rows, "tweets": _tweet_rows, "csv": _csv_rows, "parquet": _parquet_rows}


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


def _default_split(path: Path) -> str | None:
    stem = _strip_ext(path).rsplit(".", 1)[0]
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


def _ingest_file(store: Store, path: Path, cfg: IngestConfig, known: dict[str, tuple[str, str | None, str]],
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
            if row.error:
                missing_text_only = False
                reject(row, row.error)
                continue
            if row.text is None:
                reject(row, f"no text: field {cfg.text_field!r} missing or null")
                continue
            missing_text_only = False
            if not isinstance(row.text, str):
                reject(row, f"text field {cfg.text_field!r} is a {type(row.text).__name__}, not a string")
                continue
            if _has_surrogates(row.text):
                reject(row, "invalid unicode in text (lone surrogate)")
                continue
            if not row.text.strip():
                reject(row, "empty text")
                continue
            h = content_hash(row.text)
            label = _as_str(row.label)
            rid = _as_str(row.id) or f"h{h[:20]}"
            split_value = _as_str(row.split)
            split = normalize_split(split_value) if split_value else file_split or ("train" if label else "unlabeled")
            try:
                check_name(split, "split")
            except StcError:
                reject(row, f"invalid split name {split!r}")
                continue
            prior = known.get(rid)
            if prior is not None:
                if prior[0] != h:
                    reject(row, "id already exists with a different text")
                elif prior[1] != label or prior[2] != split:
                    reject(row, f"id already exists with label {prior[1]!r} / split {prior[2]!r}")
                else:
                    result.duplicates += 1
                continue
            known[rid] = (h, label, split)
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
    import shutil
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
        known = {i: (h, l, s) for i, h, l, s in zip(*(texts.column(c).to_pylist()
                                                       for c in ("id", "content_hash", "label", "split")))}
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
