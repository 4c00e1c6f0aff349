"""`stcstore ingest`: read tweet dumps, JSONL, CSV or Parquet into the store's texts table.

Each source file becomes one batch directory, renamed into place only when complete: a killed or
failed ingest leaves nothing visible. Unusable rows go to the rejects table with a reason; re-ingesting
a file already ingested with the same options adds nothing.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..core import schemas
from ..core.atomic import commit, remove_stale_temps, staging, store_lock
from ..core.errors import StcError, WriteError, os_error_message
from ..core.fingerprint import file_sha256
from ..core.names import MAX_LABEL_NAME, SPLITS
from ..core.result import require_store, stage_config
from ..store.drop import contents, discard, restore, stash
from ..store.store import Store
from .config import FileResult, IngestConfig, IngestResult
from .idindex import IdIndex
from .readers import READ_ERRORS, Row, detect_format, read_rows, strip_ext
from .rows import RowValidator, Text, normalize_split, reason_kind, reject_row

WRITE_ROWS = 50_000  # rows per Parquet row group while streaming a large file


def _default_split(path: Path) -> str | None:
    stem = strip_ext(path).rsplit(".", 1)[0]
    s = normalize_split(stem)
    return s if s in SPLITS else None


class _BatchWriter:
    """Streams texts and rejects of one source file into a temp batch directory. A failed write (a full
    disk) is a WriteError naming the store, not a problem of the source file."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.texts: list[dict] = []
        self.rejects: list[dict] = []
        with self._writing():
            self._tw = pq.ParquetWriter(tmp / "texts.parquet", schemas.TEXTS, compression="zstd")
            self._rw = pq.ParquetWriter(tmp / "rejects.parquet", schemas.REJECTS, compression="zstd")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise WriteError(os_error_message(exc, self.tmp.parent)) from exc

    def add_text(self, row: dict) -> None:
        self.texts.append(row)
        if len(self.texts) >= WRITE_ROWS:
            self._flush()

    def add_reject(self, row: dict) -> None:
        self.rejects.append(row)
        if len(self.rejects) >= WRITE_ROWS:
            self._flush()

    def _flush(self) -> None:
        with self._writing():
            if self.texts:
                self._tw.write_table(pa.Table.from_pylist(self.texts, schema=schemas.TEXTS))
                self.texts = []
            if self.rejects:
                self._rw.write_table(pa.Table.from_pylist(self.rejects, schema=schemas.REJECTS))
                self.rejects = []

    def close(self, source_row: dict) -> None:
        self._flush()
        with self._writing():
            self._tw.close()
            self._rw.close()
            pq.write_table(pa.Table.from_pylist([source_row], schema=schemas.SOURCES), self.tmp / "source.parquet")


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
    validator = RowValidator(cfg.text_field, known, normalize_split(cfg.split) if cfg.split else _default_split(path))
    final = store.ingest_dir(cfg.dataset) / f"batch={batch_no:06d}"
    final.parent.mkdir(parents=True, exist_ok=True)
    with staging(final, directory=True) as tmp:  # any failure removes the temp batch
        writer = _BatchWriter(tmp)
        try:
            seq = _read_into(path, fmt, cfg, validator, writer, result, next_seq, now)
        except READ_ERRORS as exc:
            raise StcError(f"{path}: unreadable ({type(exc).__name__}: {exc}); nothing from it was ingested") from exc
        writer.close({"source": str(path), "sha256": sha, "config_hash": cfg.options_hash(), "format": fmt,
                      "rows_read": result.rows_read, "ingested": result.ingested,
                      "duplicates": result.duplicates, "rejected": result.rejected,
                      "seq_start": next_seq, "seq_end": seq - 1, "ingested_at": now})
        commit(tmp, final)
    result.batch = batch_no
    return result


def _read_into(path: Path, fmt: str, cfg: IngestConfig, validator: RowValidator, writer: _BatchWriter,
               result: FileResult, seq: int, now: datetime) -> int:
    """Validate every row of one file into the batch writer; returns the next free seq."""
    for row in read_rows(path, fmt, cfg.read_options()):
        result.rows_read += 1
        if cfg.split_inferred and row.split not in (None, ""):
            result.split_field_rows += 1
        verdict = validator.check(row)
        if verdict is None:
            result.duplicates += 1
        elif isinstance(verdict, str):
            _count_reject(result, verdict)
            writer.add_reject(reject_row(row, verdict, str(path), now))
        else:
            writer.add_text(_text_row(verdict, row, str(path), seq, now))
            seq += 1
            result.ingested += 1
            if row.label_name not in (None, "") and verdict.label is not None:
                _note_label_name(result, verdict.label, row.label_name, row.line)
    missing = validator.no_text_field()
    if missing:
        raise StcError(f"{path}: {missing}")
    return seq


MAX_NAME_NOTES = 5  # notes about unusable label names kept per file


def _note_label_name(result: FileResult, label: str, value: Any, line: int | None) -> None:
    """Record a row's label display name: the first name a label gets in a file is kept; another name for it,
    or a value that cannot be a name, is noted (the row itself is ingested either way)."""
    name = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    where = f"row {line}" if line is not None else "a row"
    if not name or len(name) > MAX_LABEL_NAME or not name.isprintable():
        note = f"{where}: label name {str(value)[:40]!r} of label {label!r} not used (1 to {MAX_LABEL_NAME} " \
               f"printable characters)"
    elif result.label_names.setdefault(label, name) != name:
        note = f"{where}: label {label!r} is also named {name!r}; kept {result.label_names[label]!r} (the first); " \
               f"--label-names {label}=NAME decides"
    else:
        return
    if len(result.label_name_notes) < MAX_NAME_NOTES:
        result.label_name_notes.append(note)


def _count_reject(result: FileResult, reason: str) -> None:
    result.rejected += 1
    key = reason_kind(reason)
    result.reasons[key] = result.reasons.get(key, 0) + 1


def _text_row(t: Text, row: Row, source: str, seq: int, now: datetime) -> dict[str, Any]:
    return {"id": t.id, "text": t.text, "label": t.label, "split": t.split, "content_hash": t.content_hash,
            "source": source, "line": row.line, "seq": seq, "is_retweet": row.is_retweet, "ingested_at": now}


def ingest(cfg: IngestConfig, *legacy: Any) -> IngestResult:
    """Ingest the files `cfg.sources` into the store `cfg.store`, in order; each file is committed on its own.
    Raises StcError on an unreadable file (files before it stay ingested and are listed in the message). 0.2's
    `ingest(store, sources, cfg)` still works."""
    cfg, _ = stage_config(cfg, legacy, IngestConfig, ("store", "sources"))
    sources = [Path(s) for s in cfg.sources]
    if not sources:
        raise StcError("give at least one SOURCE file to ingest")
    t0 = time.perf_counter()
    store = Store(require_store(cfg.store, "ingest"))
    store.check_location()  # before the lock creates the folder
    with store_lock(store.root, "stcstore ingest"):
        store.ensure()
        remove_stale_temps(store.root / "ingest")
        replaced, moved = None, []
        if cfg.replace and cfg.dataset in store.datasets():
            t, f, n, _ = contents(store, cfg.dataset)
            replaced = {"texts": t, "feature_sets": f, "fits": n}
            moved = stash(store, cfg.dataset)  # put back below if a file cannot be read
        try:
            results = _ingest_all(store, sources, cfg)
        except StcError as exc:
            if not moved:
                raise
            restore(moved)
            first = str(exc).split("\n")[0]
            raise StcError(f"{first}\n--replace: nothing was replaced; dataset {cfg.dataset!r} is as it was") from exc
        except BaseException:
            if moved:
                restore(moved)
            raise
        discard(moved)
        named = {}  # the rows' own names (the first file to name a label wins), then --label-names over them
        for f in results:
            for label, name in f.label_names.items():
                named.setdefault(label, name)
        named.update(cfg.label_names)
        names = store.set_label_names(cfg.dataset, named) if named else store.label_names(cfg.dataset)
    return IngestResult(cfg.dataset, str(store.root), results, time.perf_counter() - t0, replaced, names)


def _ingest_all(store: Store, sources: list[str | Path], cfg: IngestConfig) -> list[FileResult]:
    """Ingest the files in order, each committed on its own (under the caller's lock)."""
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
    return results
