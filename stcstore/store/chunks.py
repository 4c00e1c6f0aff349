"""Reading feature chunks (`features.arrow`, Arrow IPC): memory-mapped, one column at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from ..core.errors import StcError


def open_chunk(chunk: Path) -> ipc.RecordBatchFileReader:
    """Memory-mapped reader: columns are read only when touched, and land in page cache, not the heap."""
    return ipc.open_file(pa.memory_map(str(chunk / "features.arrow"), "r"))


def chunk_rows(chunk: Path) -> int:
    """Rows of one chunk, from the IPC footer and batch headers only."""
    reader = open_chunk(chunk)
    return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def read_chunk_columns(chunk: Path, names: Sequence[str]) -> pa.Table:
    """The named columns of one chunk. Only they are read (and, in a compressed int8 chunk, decompressed): the
    footer once for the schema, then the file again (one memory map) with only those fields."""
    mapped = pa.memory_map(str(chunk / "features.arrow"), "r")
    schema = ipc.open_file(mapped).schema
    idx = [schema.get_field_index(n) for n in names]
    missing = [n for n, i in zip(names, idx) if i < 0]
    if missing:
        raise StcError(f"{chunk / 'features.arrow'} has no column {missing[0]!r}; the chunk is damaged or of "
                       f"another feature set")
    reader = ipc.open_file(mapped, options=ipc.IpcReadOptions(included_fields=sorted(set(idx))))
    table = reader.read_all()
    return table.select([schema.field(i).name for i in idx])


# --------------------------------------------------------------------------------------------- int8 codes
# `extract --dtype int8`: each neuron's float16 values in one chunk, coded as q = round((x - lo) / step) - 128
# with lo = its minimum and step = (its maximum - lo) / 255 in that chunk (step 0 for a constant neuron), so
# x = (q + 128) * step + lo within step / 2 (coded by features.chunking.encode_int8). The (lo, step) pairs of a
# chunk's columns lie beside it in int8.arrow (one FixedSizeList<float32>[width] column per block: row 0 lo, row 1
# step).
INT8_SCALES = "int8.arrow"


def decode_int8(codes: np.ndarray, scales: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """codes [n, k] int8 and their columns' (lo, step) [2, k] -> values [n, k] float32 (into `out` if given)."""
    lo, step = scales[0], scales[1]
    x = np.add(codes, np.float32(128), out=out, dtype=np.float32) if out is not None else \
        codes.astype(np.float32) + np.float32(128)
    x *= step
    x += lo
    return x


def write_int8_scales(path: Path, scales: dict[str, np.ndarray]) -> None:
    cols = {c: pa.FixedSizeListArray.from_arrays(pa.array(s.reshape(-1), type=pa.float32()), s.shape[1])
            for c, s in scales.items()}
    table = pa.table(cols)
    with pa.OSFile(str(path), "wb") as sink:
        with ipc.new_file(sink, table.schema) as w:
            w.write_table(table)


def read_int8_scales(chunk: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """{column: [2, width] float32 (lo, step)} of one int8 chunk."""
    path = chunk / INT8_SCALES
    if not path.exists():
        raise StcError(f"{chunk} holds int8 codes but no {INT8_SCALES}: the chunk is damaged; move the feature set "
                       f"away and extract again")
    table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    return {n: fsl_to_numpy(table.column(n)) for n in names}


def fsl_to_numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """FixedSizeList<float16>[w] column -> [n, w] numpy view (float16), zero-copy per chunk."""
    arrays = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = []
    for a in arrays:
        width = a.type.list_size
        flat = a.values.to_numpy(zero_copy_only=False)[a.offset * width:(a.offset + len(a)) * width]
        parts.append(flat.reshape(len(a), width))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
