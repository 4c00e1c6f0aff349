"""Where `score` reads texts: a store dataset, or an input file validated row by row exactly like ingest
(the shared RowValidator), streamed as (ids, texts) chunks so memory holds one chunk."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..core import schemas
from ..core.atomic import commit, staging
from ..core.errors import StcError
from ..ingest.idindex import IdIndex
from ..ingest.readers import READ_ERRORS, ReadOptions, Row, detect_format, read_rows
from ..ingest.rows import RowValidator, reason_kind, reject_row
from ..store.store import Store

Chunks = Iterator[tuple[list[str], list[str]]]


@dataclass
class Rejects:
    """Rows of --input that could not be scored, with reasons; written once, at the end of the run."""

    path: Path
    rows: list[dict] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0

    def add(self, row: Row, reason: str, source: str, now: dt.datetime) -> None:
        self.rows.append(reject_row(row, reason, source, now))
        key = reason_kind(reason)
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def write(self, source: str, messages: list[str]) -> None:
        if not self.rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with staging(self.path) as tmp:
            pq.write_table(pa.Table.from_pylist(self.rows, schema=schemas.REJECTS), tmp)
            commit(tmp, self.path)
        why = ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items()))
        messages.append(f"{len(self.rows)} rows of {source} could not be scored ({why}); they are in {self.path}")


def input_chunks(path: Path, fmt: str, text_field: str, id_field: str, chunk_rows: int, rejects: Rejects) -> Chunks:
    """Stream an input file as (ids, texts) chunks of `chunk_rows` usable rows; unusable rows go to `rejects`,
    exact repeats of an earlier row are counted. Memory: one chunk plus a compact index of the ids seen."""
    if not path.is_file():
        raise StcError(f"--input {path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    now = dt.datetime.now(dt.timezone.utc)
    validator = RowValidator(text_field, IdIndex(), with_splits=False, where="seen in this file")
    ids: list[str] = []
    texts: list[str] = []
    line = 0
    try:
        for row in read_rows(path, fmt, ReadOptions(text_field=text_field, id_field=id_field)):
            line = row.line
            verdict = validator.check(row)
            if verdict is None:
                rejects.duplicates += 1
            elif isinstance(verdict, str):
                rejects.add(row, verdict, str(path), now)
            else:
                ids.append(verdict.id)
                texts.append(verdict.text)
                if len(ids) == chunk_rows:
                    yield ids, texts
                    ids, texts = [], []
    except READ_ERRORS as exc:
        raise StcError(f"--input {path}: unreadable after line {line} ({type(exc).__name__}: {exc})") from exc
    missing = validator.no_text_field()
    if missing:
        raise StcError(f"--input {path}: {missing}")
    if ids:
        yield ids, texts


def store_chunks(store_path: str, dataset: str, split: str | None, chunk_rows: int, messages: list[str]
                 ) -> tuple[int, Chunks]:
    """(number of texts, (ids, texts) chunks) of a store dataset, one split if asked. The texts stay in
    Arrow (compact) until their chunk is converted to Python strings."""
    store = Store(store_path)
    store.require()
    store.require_dataset(dataset)
    table = store.texts(dataset, columns=["id", "text", "split"],
                        filter_expr=None if split is None else pc.field("split") == split)
    if table.num_rows == 0:
        messages.append(f"dataset {dataset!r} has no texts" + (f" in split {split!r}" if split else ""))

    def chunks() -> Chunks:
        for a in range(0, table.num_rows, chunk_rows):
            part = table.slice(a, chunk_rows)
            yield part.column("id").to_pylist(), part.column("text").to_pylist()

    return table.num_rows, chunks()
