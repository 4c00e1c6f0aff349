"""Sufficient statistics of every stored neuron, per chunk, grouped by (split, label).

They are accumulated batch by batch from the values *as stored* (after the float16 cast), while the
batch is still small and in cache, so the `neuron_stats` view only sums small per-chunk tables
instead of unnesting every feature value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from ..core.names import FeatureBlock
from ..core.schemas import NEURON_STATS


class NeuronStats:
    """Per-group running count, sum, sum of squares, min, max and count > 0 over [*, total_width] rows."""

    def __init__(self, blocks: list[FeatureBlock], widths: list[int], groups: list[tuple[str, str | None]],
                 device: str | torch.device = "cpu") -> None:
        """device: where the running totals live (the model's: a batch is reduced before its host copy)."""
        self.blocks, self.widths, self.groups = blocks, widths, groups
        g, w = len(groups), sum(widths)
        self.n = np.zeros(g, dtype=np.int64)
        self.sum = torch.zeros(g, w, dtype=torch.float64, device=device)
        self.sumsq = torch.zeros(g, w, dtype=torch.float64, device=device)
        self.npos = torch.zeros(g, w, dtype=torch.float64, device=device)
        self.min = torch.full((g, w), float("inf"), device=device)
        self.max = torch.full((g, w), float("-inf"), device=device)

    def add(self, x: torch.Tensor, group: torch.Tensor) -> None:
        """x: [B, total_width] float32 stored values; group: [B] long index into `groups`.

        Memory-bound, so only the fastest CPU reductions (measured: plain sum/amin/amax run 10-50x faster
        than var_mean, aminmax or a bool sum). Within a batch float32 sums are exact enough (the positive
        count is exact below 2**24 rows); running totals are float64."""
        group = group.cpu()  # counted on the host: reading them from a GPU would wait for it
        counts = torch.bincount(group, minlength=len(self.groups))
        if int((counts > 0).sum()) > 1:
            x = x.index_select(0, torch.argsort(group, stable=True).to(x.device))  # faster than x[order]
        r0 = 0
        for gi, c in enumerate(counts.tolist()):
            if not c:
                continue
            rows = x[r0:r0 + c]
            r0 += c
            self.sum[gi] += rows.sum(dim=0)
            self.sumsq[gi] += (rows * rows).sum(dim=0)
            torch.minimum(self.min[gi], rows.amin(dim=0), out=self.min[gi])
            torch.maximum(self.max[gi], rows.amax(dim=0), out=self.max[gi])
            self.npos[gi] += torch.relu(rows).sign_().sum(dim=0)
        self.n += counts.numpy()

    def ranges(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{block column: (minimum, maximum) [width] float32 on the CPU} of each neuron over every row added
        (NaN where a NaN was added; +inf, -inf before any row)."""
        lo, hi = self.min.amin(dim=0).cpu(), self.max.amax(dim=0).cpu()
        bounds = np.cumsum([0, *self.widths])
        return {b.column: (lo[s0:s1], hi[s0:s1]) for b, s0, s1 in zip(self.blocks, bounds[:-1], bounds[1:])}

    def table(self) -> pa.Table:
        """Long table (NEURON_STATS): one row per block, neuron and non-empty group (rows by block, group, neuron).

        String columns are built with Arrow `take` from small dictionaries (no Python objects per row)."""
        live = [gi for gi in range(len(self.groups)) if self.n[gi] > 0]
        if not live:
            return NEURON_STATS.empty_table()
        g = len(live)
        starts = np.cumsum(self.widths) - np.asarray(self.widths)
        # rows ordered by block, then group, then neuron: each (block, group) is one contiguous slice of the
        # running totals, copied as such (a gather of 2.3 M rows a chunk at GPT2-XL widths took 4x as long)
        spans = [(gi, o, o + w) for o, w in zip(starts, self.widths) for gi in live]
        host = {k: getattr(self, k).cpu().numpy() for k in ("sum", "sumsq", "min", "max", "npos")}
        vals = {k: np.concatenate([a[gi, s0:s1] for gi, s0, s1 in spans]) for k, a in host.items()}
        kinds = sorted({b.kind for b in self.blocks})
        pools = sorted({b.pooling for b in self.blocks})
        reps = np.asarray(self.widths) * g  # rows of each block
        kind_code = np.repeat(np.asarray([kinds.index(b.kind) for b in self.blocks]), reps)
        pool_code = np.repeat(np.asarray([pools.index(b.pooling) for b in self.blocks]), reps)
        layer = np.repeat(np.asarray([b.layer for b in self.blocks], dtype=np.int32), reps)
        neuron = np.concatenate([np.tile(np.arange(w, dtype=np.int32), g) for w in self.widths])
        grp_idx = np.concatenate([np.repeat(np.asarray(live), w) for w in self.widths])
        splits = pa.array([self.groups[gi][0] for gi in range(len(self.groups))], pa.string())
        labels = pa.array([self.groups[gi][1] for gi in range(len(self.groups))], pa.string())
        columns = {
            "kind": pa.array(kinds, pa.string()).take(pa.array(kind_code)),
            "pooling": pa.array(pools, pa.string()).take(pa.array(pool_code)),
            "layer": pa.array(layer, pa.int32()),
            "neuron": pa.array(neuron, pa.int32()),
            "split": splits.take(pa.array(grp_idx)),
            "label": labels.take(pa.array(grp_idx)),
            "n": pa.array(self.n[grp_idx], pa.int64()),
            "sum": pa.array(vals["sum"], pa.float64()),
            "sumsq": pa.array(vals["sumsq"], pa.float64()),
            "min": pa.array(vals["min"], pa.float32()),
            "max": pa.array(vals["max"], pa.float32()),
            "npos": pa.array(vals["npos"].astype(np.int64), pa.int64()),
        }
        return pa.Table.from_arrays([columns[f.name] for f in NEURON_STATS], schema=NEURON_STATS)


# How stats.parquet is written: floats split by byte stream then zstd (smaller than plain zstd and twice as
# fast to encode), dictionaries only where values repeat, no column statistics (nobody reads them);
# bench/sink.py measured the whole chunk writer against the disk
PARQUET_OPTIONS = dict(compression="zstd", use_dictionary=["kind", "pooling", "split", "label", "layer", "n"],
                       write_statistics=False, use_byte_stream_split=["sum", "sumsq", "min", "max"])
