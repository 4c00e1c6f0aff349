"""Ingest: format readers (readers.py), the one row validator shared with `score --input` (rows.py), the
compact index of known ids (idindex.py), and the `stcstore ingest` stage (stage.py)."""

from .stage import FileResult, IngestConfig, IngestResult, ingest

__all__ = ["FileResult", "IngestConfig", "IngestResult", "ingest"]
