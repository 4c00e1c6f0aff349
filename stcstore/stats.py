"""Per-chunk sufficient statistics of every stored neuron, grouped by (split, label).

They are computed from the stored (float16-rounded) values while a chunk is still in memory, so the
`neuron_stats` view only sums small partial tables instead of unnesting every feature value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .blocks import BlockKey

STATS_SCHEMA = pa.schema([
    ("kind", pa.string()), ("pooling", pa.string()), ("layer", pa.int32()), ("neuron", pa.int32()),
    ("split", pa.string()), ("label", pa.string()), ("n", pa.int64()), ("sum", pa.float64()),
    ("sumsq", pa.float64()), ("min", pa.float32()), ("max", pa.float32()), ("npos", pa.int64()),
])


def chunk_stats(meta: pa.Table, bufs: dict[str, np.ndarray], blocks: list[BlockKey]) -> pa.Table:
    """meta: id/split/label of the chunk's rows; bufs: {column: [n, width]} -> long table (STATS_SCHEMA)."""
    splits = meta.column("split").to_pylist()
    labels = meta.column("label").to_pylist()
    groups: dict[tuple[str, str | None], list[int]] = {}
    for i, key in enumerate(zip(splits, labels)):
        groups.setdefault(key, []).append(i)
    cols: dict[str, list[np.ndarray]] = {name: [] for name in STATS_SCHEMA.names}
    for b in blocks:
        buf = bufs[b.column]
        width = buf.shape[1]
        for (split, label), rows in groups.items():
            x = buf[rows].astype(np.float32) if len(rows) != buf.shape[0] else buf.astype(np.float32)
            cols["kind"].append(np.full(width, b.kind, dtype=object))
            cols["pooling"].append(np.full(width, b.pooling, dtype=object))
            cols["layer"].append(np.full(width, b.layer, dtype=np.int32))
            cols["neuron"].append(np.arange(width, dtype=np.int32))
            cols["split"].append(np.full(width, split, dtype=object))
            cols["label"].append(np.full(width, label, dtype=object))
            cols["n"].append(np.full(width, len(rows), dtype=np.int64))
            cols["sum"].append(x.sum(axis=0, dtype=np.float64))
            cols["sumsq"].append(np.einsum("ij,ij->j", x, x, dtype=np.float64))
            cols["min"].append(x.min(axis=0))
            cols["max"].append(x.max(axis=0))
            cols["npos"].append((x > 0).sum(axis=0).astype(np.int64))
    arrays = [pa.array(np.concatenate(cols[f.name]), type=f.type) for f in STATS_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=STATS_SCHEMA)
