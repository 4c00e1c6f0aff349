"""Packed batches (`extract --pack`): several texts share one row, with no padding between them.

Each row holds whole texts back to back; a 4D attention mask lets a token attend only to tokens of its own
text (and, in a decoder, only to earlier ones), and position ids restart at every text, so each text is
computed as if alone (transformers takes such masks for BERT, RoBERTa, GPT-2 and Llama-style models; on a
GPU with varlen attention this is where padding-free batches pay; on a CPU the saving is the padding's share
of the matrix products). Pooling then runs per text over its own tokens (`pool_packed`): the features equal
the padded path's within float16 rounding (tests/test_packing.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch


def pack_rows(lengths: list[int], capacity: int, max_tokens: int, max_texts: int) -> Iterator[list[list[int]]]:
    """Batches of rows of text indices: texts longest first, each placed in the first row of the batch with
    room (first-fit decreasing), a row at most `capacity` tokens, a batch at most `max_tokens` tokens (rows x
    longest row) and `max_texts` texts."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    used: list[int] = []
    n = 0
    for i in order:
        size = min(lengths[i], capacity)
        slot = next((r for r, u in enumerate(used) if u + size <= capacity), None)
        if rows and (n >= max_texts or (slot is None and (len(rows) + 1) * capacity > max_tokens)):
            yield rows
            rows, used, n, slot = [], [], 0, None
        if slot is None:
            rows.append([i])
            used.append(size)
        else:
            rows[slot].append(i)
            used[slot] += size
        n += 1
    if rows:
        yield rows


@dataclass
class Packed:
    """One packed batch, ready for the model and the pooling."""

    input_ids: torch.Tensor  # [R, L]
    attention_mask: torch.Tensor  # [R, 1, L, L] float: 0 where a token may attend, the dtype's minimum elsewhere
    position_ids: torch.Tensor  # [R, L]
    texts: list[int]  # text index of each segment, in segment order
    segment: torch.Tensor  # [R * L] long: the segment of each token, -1 for padding at a row's end
    first: torch.Tensor  # [S] long: flat index of each segment's first token
    last: torch.Tensor  # [S] long: ... and of its last
    counts: torch.Tensor  # [S, 1] float: tokens of each segment

    def to(self, device: torch.device) -> "Packed":
        return Packed(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                      self.texts, self.segment.to(device), self.first.to(device), self.last.to(device),
                      self.counts.to(device))


def packed_batch(seqs: list[list[int]], rows: list[list[int]], pad_id: int, causal: bool, position_offset: int,
                 dtype: torch.dtype) -> Packed:
    """The tensors of one batch of rows (text indices into `seqs`)."""
    width = max(sum(len(seqs[i]) for i in row) for row in rows)
    n_rows = len(rows)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    pos = torch.zeros((n_rows, width), dtype=torch.long)
    seg = torch.full((n_rows, width), -1, dtype=torch.long)
    texts, first, last, counts = [], [], [], []
    for r, row in enumerate(rows):
        t = 0
        for i in row:
            n = len(seqs[i])
            ids[r, t:t + n] = torch.tensor(seqs[i], dtype=torch.long)
            pos[r, t:t + n] = torch.arange(n) + position_offset
            seg[r, t:t + n] = len(texts)
            first.append(r * width + t)
            last.append(r * width + t + n - 1)
            counts.append(max(n, 1))
            texts.append(i)
            t += n
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
    if causal:
        same &= torch.ones(width, width, dtype=torch.bool).tril()
    # a padding position attends to itself only (its values are never pooled; no row is all masked)
    same |= torch.eye(width, dtype=torch.bool)[None] & (seg[:, :, None] < 0)
    mask = torch.zeros(same.shape, dtype=dtype).masked_fill_(~same, torch.finfo(dtype).min)[:, None]
    return Packed(ids, mask, pos, texts, seg.reshape(-1), torch.tensor(first), torch.tensor(last),
                  torch.tensor(counts, dtype=torch.float32)[:, None])


def pool_packed(x: torch.Tensor, p: Packed, poolings: tuple[str, ...], encoder: bool) -> dict[str, torch.Tensor]:
    """Pool x [R, L, W] per segment over its own tokens -> {pooling: [S, W] float32}, segments in `p.texts` order."""
    flat = x.reshape(-1, x.shape[-1])
    real = torch.nonzero(p.segment >= 0).squeeze(1)
    values, seg = flat.index_select(0, real), p.segment.index_select(0, real)
    n_seg, width = len(p.texts), flat.shape[1]
    out: dict[str, torch.Tensor] = {}
    if "mean" in poolings:
        total = torch.zeros((n_seg, width), dtype=torch.float32, device=x.device)
        out["mean"] = total.index_add_(0, seg, values.float()) / p.counts
    if "max" in poolings:
        best = torch.full((n_seg, width), float("-inf"), dtype=values.dtype, device=x.device)
        out["max"] = best.scatter_reduce_(0, seg[:, None].expand(-1, width), values, "amax").float()
    if "single" in poolings:
        out["single"] = flat.index_select(0, p.first if encoder else p.last).float()
    return out
