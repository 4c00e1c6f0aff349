"""The one row validator: what makes a candidate row a usable text, and the reject reason when it is not.

Used by `ingest` (against every id already in the dataset) and by `score --input` (against the ids seen
earlier in the same file), so both accept and refuse exactly the same rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.errors import StcError
from ..core.fingerprint import text_hash
from ..core.names import check_name
from .idindex import IdIndex, text_key
from .readers import RAW_KEEP, Row, has_surrogates

MAX_TEXT_CHARS = 1_000_000  # longer texts are rejected (a model reads at most max_length tokens anyway)
MAX_FIELD_CHARS = 1_000  # ids, labels and splits longer than this are rejected
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation", "eval": "validation"}


def normalize_split(value: str) -> str:
    v = str(value).strip().lower()
    return SPLIT_ALIASES.get(v, v)


def as_str(value: Any) -> str | None:
    """A field value as stored: numbers and booleans as their JSON spelling, objects as JSON, blank as None."""
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


@dataclass
class Text:
    """A usable row."""

    id: str
    text: str
    label: str | None
    split: str | None
    content_hash: str


class RowValidator:
    """Checks candidate rows one by one and remembers the ids it accepted.

    known: ids already accepted (ingest: the dataset's stored ids; score: an empty index).
    default_split: split of a row without one (None: rows get no split, as in `score --input`).
    where: how a conflicting earlier id is described in the reason ("exists", "seen in this file")."""

    def __init__(self, text_field: str, known: IdIndex, default_split: str | None = None,
                 with_splits: bool = True, where: str = "exists") -> None:
        self.text_field, self.known, self.default_split = text_field, known, default_split
        self.with_splits, self.where = with_splits, where
        self.rows = self.rows_with_text = 0  # for the file-level verdict (no_text_field)

    def no_text_field(self) -> str | None:
        """The verdict on a whole file, shared by ingest and `score --input`: rows were read and not one had
        the text field (a wrong --text-field, not bad rows): the file is refused, nothing of it used."""
        if self.rows and not self.rows_with_text:
            return (f"no row has the text field {self.text_field!r}; pass --text-field (dotted paths like "
                    f"user.description work for JSON)")
        return None

    def problem(self, row: Row) -> str | None:
        """Why a row cannot be used as a text at all (before ids are compared), or None."""
        if row.error:
            return row.error
        if row.text is None:
            return f"no text: field {self.text_field!r} missing or null"
        if not isinstance(row.text, str):
            return f"text field {self.text_field!r} is a {type(row.text).__name__}, not a string"
        if has_surrogates(row.text):
            return "invalid unicode in text (lone surrogate)"
        if not row.text.strip():
            return "empty text"
        if len(row.text) > MAX_TEXT_CHARS:
            return f"text too long: {len(row.text):,} characters (the limit is {MAX_TEXT_CHARS:,})"
        return None

    def check(self, row: Row) -> Text | str | None:
        """A usable row as a Text, its reject reason as a str, or None for an exact duplicate of an earlier row."""
        self.rows += 1
        if row.error or row.text is not None:
            self.rows_with_text += 1
        problem = self.problem(row)
        if problem:
            return problem
        h = text_hash(row.text)
        label = as_str(row.label) if self.with_splits else None
        rid = as_str(row.id) or f"h{h[:20]}"
        for what, value in (("id", rid), ("label", label)):
            bad = _bad_field(what, value)
            if bad:
                return bad
        split = None
        if self.with_splits:
            split_value = as_str(row.split)
            split = normalize_split(split_value) if split_value else self.default_split or (
                "train" if label else "unlabeled")
            bad = _bad_field("split", split)
            if bad:
                return bad
            try:
                check_name(split, "split")
            except StcError:
                return f"invalid split name {split!r}"
        prior = self.known.get(rid)
        if prior is not None:
            if prior[0] != text_key(h):
                return f"id already {self.where} with a different text"
            if prior[1] != label or prior[2] != split:
                return f"id already {self.where} with label {prior[1]!r} / split {prior[2]!r}"
            return None
        self.known.add(rid, h, label, split)
        return Text(rid, row.text, label, split, h)


def _bad_field(what: str, value: str | None) -> str | None:
    if value is None:
        return None
    if has_surrogates(value):
        return f"invalid unicode in {what} (lone surrogate)"
    if len(value) > MAX_FIELD_CHARS:
        return f"{what} too long: {len(value):,} characters (the limit is {MAX_FIELD_CHARS:,})"
    return None


def reason_kind(reason: str) -> str:
    """The part of a reject reason that counts it (before any detail after a colon)."""
    return reason.split(":")[0]


def reject_row(row: Row, reason: str, source: str, now: datetime) -> dict[str, Any]:
    """A rejects-table row (core.schemas.REJECTS)."""
    rid = as_str(row.id)
    if rid is not None and (has_surrogates(rid) or len(rid) > MAX_FIELD_CHARS):
        rid = rid.encode("utf-8", "surrogatepass")[:MAX_FIELD_CHARS].decode("utf-8", "replace")  # storable
    raw = row.raw[:RAW_KEEP].encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return {"source": source, "line": row.line, "id": rid, "reason": reason, "raw": raw, "ingested_at": now}
