"""The options of one ingest run (`IngestConfig`) and its result (`IngestResult`, one `FileResult` per file): a
leaf of `stcstore.ingest`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import StcError
from ..core.fingerprint import fingerprint
from ..core.names import (
    ID_FIELD,
    INPUT_FORMATS,
    LABEL_FIELD,
    LABEL_NAME_FIELD,
    SPLIT_FIELD,
    TEXT_FIELD,
    check_choice,
    check_name,
)
from ..core.result import Result
from .readers import ReadOptions
from .rows import normalize_split


@dataclass(frozen=True)
class IngestConfig:
    """Options of one ingest run; validated without I/O. Recorded (hashed) with every batch."""

    dataset: str
    format: str = "auto"
    text_field: str = TEXT_FIELD
    label_field: str = LABEL_FIELD
    id_field: str = ID_FIELD
    split_field: str | None = None  # None: a field named "split" where a row has one (SPLIT_FIELD)
    split: str | None = None  # one split name for every row of the files
    replace: bool = False  # drop the dataset's texts, features and fits first (store.drop); not in the options hash
    label_names: tuple[tuple[str, str], ...] = ()  # (label, display name) pairs, kept beside the texts; not hashed
    label_name_field: str = LABEL_NAME_FIELD  # rows' label display names, where they have one; not hashed
    # what it reads and where it writes (`ingest(cfg)`; 0.2 passed them beside the config); not hashed
    store: str | None = None
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.dataset, "--dataset")
        check_choice(self.format, INPUT_FORMATS, "--format")
        if self.split is not None and self.split_field is not None:
            raise StcError("give either --split NAME (one split for the whole file) or --split-field F, not both")
        if self.split is not None:
            check_name(normalize_split(self.split), "--split")

    def options_hash(self) -> str:
        d = asdict(self)
        d.pop("dataset")
        d.pop("replace")
        d.pop("label_names")
        d.pop("label_name_field")  # names are display only (and the hash of 0.2's ingests must stay theirs)
        d.pop("store")
        d.pop("sources")
        return fingerprint(d)

    @property
    def split_inferred(self) -> bool:
        """Neither --split nor --split-field: each row's split is read from a field named "split" if it has one."""
        return self.split is None and self.split_field is None

    def read_options(self) -> ReadOptions:
        return ReadOptions(self.text_field, self.label_field, self.id_field,
                           SPLIT_FIELD if self.split_inferred else self.split_field, self.label_name_field or None)


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
    split_field_rows: int = 0  # rows whose split came from their "split" field (no --split / --split-field given)
    label_names: dict[str, str] = field(default_factory=dict)  # names read from the rows' label-name field
    label_name_notes: list[str] = field(default_factory=list)  # names that were not used, and why


@dataclass
class IngestResult(Result):
    dataset: str
    store: str
    files: list[FileResult]
    seconds: float
    replaced: dict[str, int] | None = None  # with --replace: what the dataset held before (texts, feature sets, fits)
    label_names: dict[str, str] = field(default_factory=dict)  # the dataset's label display names, after this run

    def totals(self) -> dict[str, int]:
        keys = ("rows_read", "ingested", "duplicates", "rejected")
        return {k: sum(getattr(f, k) for f in self.files) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "store": self.store, **self.totals(), "seconds": round(self.seconds, 3),
                "files": [asdict(f) for f in self.files], "replaced": self.replaced, "label_names": self.label_names}

    def to_text(self) -> str:
        lines = []
        if self.replaced is not None:
            r = self.replaced
            lines.append(f"--replace: dropped the {r['texts']:,} texts, {r['feature_sets']} feature sets and {r['fits']} "
                         f"fits dataset {self.dataset} held")
        for f in self.files:
            if f.skipped:
                lines.append(f"{f.source}: already ingested with these options, nothing added")
                continue
            why = ", ".join(f"{k}: {v}" for k, v in sorted(f.reasons.items()))
            lines.append(f"{f.source} [{f.format}]: {f.rows_read} rows read, {f.ingested} ingested, "
                         f"{f.duplicates} duplicates, {f.rejected} rejected" + (f" ({why})" if why else ""))
        for f in self.files:
            lines.extend(f"{f.source}: {note}" for note in f.label_name_notes)
        if self.label_names:
            lines.append("label names: " + ", ".join(f"{k} = {v}" for k, v in self.label_names.items()))
        inferred = sum(f.split_field_rows for f in self.files)
        if inferred:
            lines.append(f"split: read from the {SPLIT_FIELD!r} field of {inferred:,} rows (no --split or --split-field "
                         f"given; rows without it: by file name or train); --split NAME puts every row in one split")
        t = self.totals()
        lines.append(f"dataset {self.dataset}: {t['ingested']} texts added, {t['rejected']} rejects "
                     f"(see `stcstore sql --store {self.store} --query rejects_by_reason`), {self.seconds:.1f}s")
        return "\n".join(lines)
