"""Ingest: format readers (readers.py), the one row validator shared with `score --input` (rows.py), the
compact index of known ids (idindex.py), and the `stcstore ingest` stage (stage.py)."""

from .config import FileResult, IngestConfig, IngestResult
from .stage import ingest

__all__ = ["FileResult", "IngestConfig", "IngestResult", "ingest"]
