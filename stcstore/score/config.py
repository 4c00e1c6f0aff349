"""The options of one score run (`ScoreConfig`) and its result (`ScoreResult`, one `ClassifierRun` per
classifier): a leaf of `stcstore.score`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.errors import StcError
from ..core.names import (
    BATCH_SIZE,
    EXPLAIN_LIMIT,
    EXPLANATIONS,
    ID_FIELD,
    INPUT_FORMATS,
    MAX_TOKENS,
    SCORE_CHUNK_ROWS,
    TEXT_FIELD,
    check_at_least,
    check_choice,
    check_name,
)
from ..core.result import Result


@dataclass(frozen=True)
class ScoreConfig:
    """Options of one score run; validated without I/O (the classifiers, store and input are checked when the
    run opens them)."""

    classifiers: tuple[str, ...]
    output: str
    store: str | None = None
    dataset: str | None = None
    split: str | None = None  # store mode: only texts of this split
    input: str | None = None
    format: str = "auto"
    text_field: str = TEXT_FIELD
    id_field: str = ID_FIELD
    explain: str | None = None  # None or "tokens"
    explain_out: str | None = None  # path prefix of the .jsonl/.html pair
    explain_limit: int = EXPLAIN_LIMIT  # texts shown in the HTML page (the JSON lines hold all)
    model: str | None = None  # a local path to use instead of the classifiers' recorded model
    gguf_file: str | None = None
    batch_size: int = BATCH_SIZE
    max_tokens: int = MAX_TOKENS
    chunk_rows: int = SCORE_CHUNK_ROWS  # texts per committed output file (the resume granularity)
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
        check_choice(self.format, INPUT_FORMATS, "--format")
        if self.explain is not None:
            check_choice(self.explain, EXPLANATIONS, "--explain")
        check_at_least(self, ("batch_size", "max_tokens", "chunk_rows", "explain_limit", "threads"))

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
    changed: int = 0  # of those, texts whose content changed since (they keep the old prediction)
    explained: int = 0


@dataclass
class ScoreResult(Result):
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

    def to_text(self) -> str:
        lines = list(self.messages)
        for g in self.groups:
            lines.append(f"model {g['model']}: blocks 0..{g['blocks_run'] - 1} of {g['n_layers']} run "
                         f"(early exit), {g['neurons']} neurons pooled, classifiers {', '.join(g['classifiers'])}")
        for c in self.classifiers:
            lines.append(f"{c.name} [{c.fingerprint[:12]}]: {c.scored} texts scored"
                         + (f", {c.already} already had a prediction" if c.already else "")
                         + (f" ({c.changed} of them with a text changed since)" if c.changed else "")
                         + (f", {c.explained} explained" if c.explained else ""))
        if self.scored_texts:
            lines.append(f"{self.scored_texts} texts in {self.seconds:.1f}s ({self.texts_per_s:.1f} texts/s "
                         f"after loading the model); output {self.output}")
        if self.rejected:
            lines.append(f"{self.rejected} input rows rejected, with reasons, in {self.rejects_path}")
        if self.explain_html:
            lines.append(f"explanations: {self.explain_jsonl}\n              {self.explain_html}")
        return "\n".join(lines)
