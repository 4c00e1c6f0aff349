"""Where `score` writes predictions (columns in core.schemas.PREDICTIONS).

* a `.parquet` file: one writer to a temp name, renamed over the output only when complete;
* a directory: a table partitioned by run date, `DIR/run_date=YYYY-MM-DD/part-RUN-NNNNNN.parquet`, one file
  per chunk of texts, each renamed into place when complete (the unit of resume).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.version import __version__
from ..classifier.classifier import Classifier
from ..classifier.linear import probabilities
from ..core import schemas
from ..core.atomic import commit, staging, tmp_name


class PredictionsSink:
    """Where predictions go. A directory: one part file per chunk, renamed into place (the resume unit).
    A .parquet file: one writer to a temp name, renamed over the output only when complete."""

    def __init__(self, output: Path, single_file: bool, run_id: str, scored_at: dt.datetime,
                 config: dict[str, Any]) -> None:
        self.output, self.run_id, self.scored_at = output, run_id, scored_at
        self.files = 0
        meta = {b"stcstore.score": json.dumps({"run": run_id, "stcstore_version": __version__,
                                                "config": config}).encode()}
        self.schema = schemas.PREDICTIONS.with_metadata(meta)  # every file says what produced it
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        if single_file:
            output.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = tmp_name(output)
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")

    def table(self, c: Classifier, ids: list[str], scores: np.ndarray, hashes: list[str]) -> pa.Table:
        """Rows of one classifier: ids [m], its linear scores [m, K], the texts' content hashes [m]. A
        classifier writes label and probabilities; a regression one its value (label, probabilities null)."""
        m = len(ids)
        if c.is_regression:
            label = pa.nulls(m, pa.string())
            proba = pa.nulls(m, pa.list_(pa.float64()))
            value = pa.array(np.asarray(scores, dtype=np.float64)[:, 0], pa.float64())
        else:
            p = probabilities(scores)
            label = pa.array([str(x) for x in c.classes_[np.argmax(p, axis=1)]], pa.string())
            proba = pa.array(p.astype(np.float64).tolist(), pa.list_(pa.float64()))
            value = pa.nulls(m, pa.float64())
        return pa.table({
            "id": pa.array(ids, pa.string()), "classifier": pa.array([c.name] * m, pa.string()),
            "classifier_fingerprint": pa.array([c.fingerprint] * m, pa.string()),
            "label": label, "probabilities": proba,
            "scored_at": pa.array([self.scored_at] * m, schemas.UTC_TIME),
            "text_hash": pa.array(hashes, pa.string()), "value": value,
        }, schema=self.schema)

    def write(self, table: pa.Table) -> None:
        if self._writer is not None:
            self._writer.write_table(table)
            return
        final = self.output / f"run_date={self.scored_at.date()}" / f"part-{self.run_id}-{self.files:06d}.parquet"
        final.parent.mkdir(parents=True, exist_ok=True)
        with staging(final) as tmp:
            pq.write_table(table, tmp, compression="zstd")
            commit(tmp, final)
        self.files += 1

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        commit(self._tmp, self.output)  # type: ignore[arg-type]  # replaces an old file (--force) atomically
        self.files = 1

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def hash_key(text_hash: str | None) -> int | None:
    """64 bits of a text hash: enough to notice that a text changed, compact for millions of predictions."""
    return None if text_hash is None else int(text_hash[:16], 16)


def existing(output: Path) -> dict[str, dict[str, int | None]]:
    """{classifier fingerprint: {id: text hash key (None in files written by 0.1.0)}} of a predictions
    directory."""
    done: dict[str, dict[str, int | None]] = {}
    for f in sorted(output.glob("run_date=*/part-*.parquet")):
        names = pq.read_schema(f).names
        t = pq.read_table(f, columns=[c for c in ("id", "classifier_fingerprint", "text_hash") if c in names])
        hashes = t.column("text_hash").to_pylist() if "text_hash" in names else [None] * t.num_rows
        for fp, i, h in zip(t.column("classifier_fingerprint").to_pylist(), t.column("id").to_pylist(), hashes):
            done.setdefault(fp, {})[i] = hash_key(h)
    return done
