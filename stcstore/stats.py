"""Sufficient statistics of every stored neuron, per chunk, grouped by (split, label).

They are accumulated batch by batch from the values *as stored* (after the float16 cast), while the
batch is still small and in cache, so the `neuron_stats` view only sums small per-chunk tables
instead of unnesting every feature value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from .blocks import BlockKey
from .store import STATS_SCHEMA



class StatsAccumulator:
    """Per-group running count, sum, sum of squares, min, max and count > 0 over [*, total_width] rows."""

    def __init__(self, blocks: list[BlockKey], widths: list[int], groups: list[tuple[str, str | None]]) -> None:
        self.blocks, self.widths, self.groups = blocks, widths, groups
        g, w = len(groups), sum(widths)
        self.n = np.zeros(g, dtype=np.int64)
        self.sum = torch.zeros(g, w, dtype=torch.float64)
        self.sumsq = torch.zeros(g, w, dtype=torch.float64)
        self.npos = torch.zeros(g, w, dtype=torch.float64)
        self.min = torch.full((g, w), float("inf"))
        self.max = torch.full((g, w), float("-inf"))

    def add(self, x: torch.Tensor, group: torch.Tensor) -> None:
        """x: [B, total_width] float32 stored values; group: [B] long index into `groups`."""
        # Within a batch, float32 sums of at most a few hundred rows lose nothing that matters; the
        # running totals across batches are float64.
        onehot = torch.nn.functional.one_hot(group, len(self.groups)).T.to(torch.float32)  # [G, B]
        self.sum += onehot @ x
        self.sumsq += onehot @ (x * x)
        self.npos += onehot @ (x > 0).to(torch.float32)
        present = torch.unique(group)
        if len(present) == 1:
            gi = int(present[0])
            torch.minimum(self.min[gi], x.amin(dim=0), out=self.min[gi])
            torch.maximum(self.max[gi], x.amax(dim=0), out=self.max[gi])
        else:
            order = torch.argsort(group, stable=True)
            xs, counts = x[order], torch.bincount(group, minlength=len(self.groups)).tolist()
            r0 = 0
            for gi, c in enumerate(counts):
                if c:
                    torch.minimum(self.min[gi], xs[r0:r0 + c].amin(dim=0), out=self.min[gi])
                    torch.maximum(self.max[gi], xs[r0:r0 + c].amax(dim=0), out=self.max[gi])
                    r0 += c
        self.n += np.bincount(group.numpy(), minlength=len(self.groups))

    def table(self) -> pa.Table:
        """Long table (STATS_SCHEMA): one row per block, neuron and non-empty group."""
        cols: dict[str, list[np.ndarray]] = {name: [] for name in STATS_SCHEMA.names}
        arrays = {k: getattr(self, k).numpy() for k in ("sum", "sumsq", "npos", "min", "max")}
        c0 = 0
        for b, width in zip(self.blocks, self.widths):
            sl = slice(c0, c0 + width)
            c0 += width
            for gi, (split, label) in enumerate(self.groups):
                if self.n[gi] == 0:
                    continue
                cols["kind"].append(np.full(width, b.kind, dtype=object))
                cols["pooling"].append(np.full(width, b.pooling, dtype=object))
                cols["layer"].append(np.full(width, b.layer, dtype=np.int32))
                cols["neuron"].append(np.arange(width, dtype=np.int32))
                cols["split"].append(np.full(width, split, dtype=object))
                cols["label"].append(np.full(width, label, dtype=object))
                cols["n"].append(np.full(width, self.n[gi], dtype=np.int64))
                for k in ("sum", "sumsq", "min", "max"):
                    cols[k].append(arrays[k][gi, sl])
                cols["npos"].append(arrays["npos"][gi, sl].astype(np.int64))
        return pa.Table.from_arrays([pa.array(np.concatenate(cols[f.name]), type=f.type) for f in STATS_SCHEMA],
                                    schema=STATS_SCHEMA)
