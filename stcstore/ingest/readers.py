"""Format readers for ingest: each yields candidate rows (line, raw text, fields) or a row-level error.

A problem with one row is a `Row.error` (it becomes a reject); a file unreadable as a whole raises.
"""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.errors import StcError
from ..core.names import ID_FIELD, LABEL_FIELD, TEXT_FIELD

READ_ERRORS = (OSError, EOFError, zlib.error, csv.Error)  # a file unreadable as a whole (gzip errors are OSError)
READ_ROWS = 50_000  # Parquet rows read per batch
BOM = "\ufeff"
# Python's csv refuses a field over 128 KiB as an error of the whole file; fields are bounded by the row
# validator's own size limits instead (a row with a giant text is rejected, the file goes on)
csv.field_size_limit(2**31 - 1)
RAW_KEEP = 2000  # characters of a rejected row kept for inspection


@dataclass(frozen=True)
class ReadOptions:
    """Which fields hold each row's text, label, id, split and label name (dotted paths work in JSON)."""

    text_field: str = TEXT_FIELD
    label_field: str = LABEL_FIELD
    id_field: str = ID_FIELD
    split_field: str | None = None
    label_name_field: str | None = None


@dataclass
class Row:
    """One candidate text before validation."""

    line: int | None  # None where rows are not read from lines (texts rejected after reading)
    raw: str
    text: Any = None
    label: Any = None
    id: Any = None
    split: Any = None
    label_name: Any = None  # the display name of the row's label, where the input has one
    is_retweet: bool | None = None
    error: str | None = None


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


def strip_ext(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def detect_format(path: Path) -> str:
    name = strip_ext(path)
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    # JSON lines: peek at the first object to tell tweet dumps from generic records
    try:
        with _open_bytes(path) as f:
            for raw in f:
                if raw.strip():
                    obj = json.loads(raw.decode("utf-8-sig"))
                    if isinstance(obj, dict) and ("data" in obj or "id_str" in obj or "full_text" in obj
                                                  or "retweeted_status" in obj):
                        return "tweets"
                    return "jsonl"
    except READ_ERRORS as exc:
        raise StcError(f"{path}: unreadable ({type(exc).__name__}: {exc}); nothing from it was ingested") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return "jsonl"
    return "jsonl"


def _decode_lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, decoded line, error) for each non-blank line of a (gzipped) text file; a line that
    is not valid UTF-8 comes with an error and its text decoded with replacement characters."""
    with _open_bytes(path) as f:
        for n, raw in enumerate(f, start=1):
            if n == 1 and raw.startswith(BOM.encode()):  # a UTF-8 byte-order mark is not part of the first row
                raw = raw[len(BOM.encode()):]
            if not raw.strip():
                continue
            try:
                yield n, raw.decode("utf-8").rstrip("\r\n"), ""
            except UnicodeDecodeError as exc:
                yield n, raw.decode("utf-8", "replace").rstrip("\r\n"), f"invalid UTF-8 at byte {exc.start}"


def _json_objects(path: Path) -> Iterator[tuple[int, str, dict | None, str]]:
    """(line number, line, parsed object or None, error) for each non-blank line; each line is parsed once."""
    for n, line, err in _decode_lines(path):
        if err:
            yield n, line, None, err
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, line, None, f"malformed JSON: {exc.msg} at column {exc.colno}"
            continue
        except RecursionError:
            yield n, line[:RAW_KEEP], None, "malformed JSON: nested too deeply"
            continue
        if not isinstance(obj, dict):
            yield n, line, None, f"expected a JSON object, got {type(obj).__name__}"
            continue
        yield n, line, obj, ""


def _json_rows(path: Path, cfg: ReadOptions) -> Iterator[Row]:
    for n, line, obj, err in _json_objects(path):
        if obj is None:
            yield Row(n, line, error=err)
            continue
        yield Row(n, line, text=get_path(obj, cfg.text_field), label=get_path(obj, cfg.label_field),
                  id=get_path(obj, cfg.id_field), split=get_path(obj, cfg.split_field) if cfg.split_field else None,
                  label_name=get_path(obj, cfg.label_name_field) if cfg.label_name_field else None)


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


def _tweet_rows(path: Path, cfg: ReadOptions) -> Iterator[Row]:
    """Twitter API v1.1 tweet objects, one per line, or v2 response pages ({"data": [...], "includes": ...})."""
    for n, line, obj, err in _json_objects(path):
        if obj is None:
            yield Row(n, line, error=err)
            continue
        label = get_path(obj, cfg.label_field)
        split = get_path(obj, cfg.split_field) if cfg.split_field else None
        name = get_path(obj, cfg.label_name_field) if cfg.label_name_field else None
        if "data" in obj:  # v2 page (or a single-tweet lookup, where data is an object)
            data = obj["data"] if isinstance(obj["data"], list) else [obj["data"]]
            included = {t.get("id"): t for t in get_path(obj, "includes.tweets") or [] if isinstance(t, dict)}
            for t in data:
                if not isinstance(t, dict):
                    yield Row(n, json.dumps(t)[:RAW_KEEP], error="v2 data item is not an object")
                    continue
                refs = [r for r in t.get("referenced_tweets") or [] if isinstance(r, dict)]
                rt = next((r.get("id") for r in refs if r.get("type") == "retweeted"), None)
                text = _tweet_v2_text(included[rt]) if rt in included else _tweet_v2_text(t)
                yield Row(n, json.dumps(t, ensure_ascii=False), text=_unescape(text),
                          label=get_path(t, cfg.label_field) if label is None else label,
                          id=t.get("id"), split=split, label_name=name, is_retweet=rt is not None)
            continue
        retweeted = obj.get("retweeted_status")
        is_rt = isinstance(retweeted, dict)
        # A v1.1 retweet's own text is truncated ("RT @user: ..."): keep the original's full text.
        text = _tweet_v1_text(retweeted if is_rt else obj)
        tid = obj.get("id_str") if obj.get("id_str") is not None else obj.get("id")
        # id_str, not id: JSON numbers above 2**53 lose digits in many producers
        yield Row(n, line, text=_unescape(text), label=label,
                  id=tid if cfg.id_field == "id" else get_path(obj, cfg.id_field), split=split, label_name=name,
                  is_retweet=is_rt)


def _csv_rows(path: Path, cfg: ReadOptions) -> Iterator[Row]:
    delimiter = "\t" if strip_ext(path).endswith(".tsv") else ","
    with _open_bytes(path) as fb:
        # utf-8-sig: a byte-order mark must not become part of the first column's name
        text = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
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
            if None in rec or None in rec.values():  # too many fields, or too few (DictReader pads with None)
                n_fields = sum(v is not None for k, v in rec.items() if k is not None) + len(rec.get(None) or [])
                raw = delimiter.join(str(v) for k, v in rec.items() if k is not None and v is not None)
                yield Row(line, raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                          error=f"{n_fields} fields, header has {len(header)}")
                continue
            bad = [k for k, v in rec.items() if isinstance(v, str) and has_surrogates(v)]
            if bad:
                yield Row(line, raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                          error=f"invalid UTF-8 in column {bad[0]!r}")
                continue
            yield Row(line, raw, text=rec.get(cfg.text_field), label=rec.get(cfg.label_field) or None,
                      id=rec.get(cfg.id_field) or None, split=rec.get(cfg.split_field) if cfg.split_field else None,
                      label_name=rec.get(cfg.label_name_field) if cfg.label_name_field else None)


def has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _parquet_rows(path: Path, cfg: ReadOptions) -> Iterator[Row]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StcError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = pf.schema_arrow.names
    if cfg.text_field not in names:
        raise StcError(f"{path}: no column {cfg.text_field!r} (columns: {', '.join(names)}); "
                       f"pass --text-field with the column holding the text")
    wanted = [c for c in (cfg.text_field, cfg.label_field, cfg.id_field, cfg.split_field, cfg.label_name_field)
              if c and c in names]
    n = 0
    for batch in pf.iter_batches(batch_size=READ_ROWS, columns=list(dict.fromkeys(wanted))):
        cols = {c: batch.column(c).to_pylist() for c in batch.schema.names}
        for i in range(batch.num_rows):
            n += 1
            rec = {c: v[i] for c, v in cols.items()}
            yield Row(n, json.dumps(rec, ensure_ascii=False, default=str), text=rec.get(cfg.text_field),
                      label=rec.get(cfg.label_field), id=rec.get(cfg.id_field),
                      split=rec.get(cfg.split_field) if cfg.split_field else None,
                      label_name=rec.get(cfg.label_name_field) if cfg.label_name_field else None)


READERS = {"jsonl": _json_rows, "tweets": _tweet_rows, "csv": _csv_rows, "parquet": _parquet_rows}


def read_rows(path: Path, fmt: str, opts: ReadOptions) -> Iterator[Row]:
    """Candidate rows of one file in format `fmt` ("auto" detects it; see `detect_format`)."""
    return READERS[detect_format(path) if fmt == "auto" else fmt](path, opts)
