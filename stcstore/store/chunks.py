"""Reading feature chunks (`features.arrow`, Arrow IPC): memory-mapped, one column at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc


def open_chunk(chunk: Path) -> ipc.RecordBatchFileReader:
    """Memory-mapped reader: columns are read only when touched, and land in page cache, not the heap."""
    return ipc.open_file(pa.memory_map(str(chunk / "features.arrow"), "r"))


def chunk_rows(chunk: Path) -> int:
    """Rows of one chunk, from the IPC footer and batch headers only."""
    reader = open_chunk(chunk)
    return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def read_chunk_columns(chunk: Path, names: Sequence[str]) -> pa.Table:
    reader = open_chunk(chunk)
    schema = reader.schema
    idx = [schema.get_field_index(n) for n in names]
    return pa.Table.from_batches(
        [reader.get_batch(i).select(idx) for i in range(reader.num_record_batches)],
        schema=pa.schema([schema.field(i) for i in idx]),
    )


def fsl_to_numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """FixedSizeList<float16>[w] column -> [n, w] numpy view (float16), zero-copy per chunk."""
    arrays = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = []
    for a in arrays:
        width = a.type.list_size
        flat = a.values.to_numpy(zero_copy_only=False)[a.offset * width:(a.offset + len(a)) * width]
        parts.append(flat.reshape(len(a), width))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
