"""Masked pooling over real tokens: padding never reaches a pooled value, whatever side it is on."""

from __future__ import annotations

import math

import torch


def single_index(mask: torch.Tensor, encoder: bool) -> torch.Tensor:
    """Position of the token `single` reads: first real token (encoders, CLS) or last real token (decoders).

    Works for left and right padding alike. mask: [B, T] bool -> [B] long.
    """
    t = mask.shape[1]
    if encoder:
        return mask.to(torch.int8).argmax(dim=1)
    return (t - 1) - mask.flip(1).to(torch.int8).argmax(dim=1)


def dense_span(mask: torch.Tensor) -> tuple[int, int] | None:
    """The contiguous positions [a, b) that are real in *every* row, if the rest is only padding at the edges.

    With right padding this is [0, shortest), with left padding [T - shortest, T). Length-bucketed batches
    are mostly dense, so pooling reads that span as a view and masks only the ragged edge."""
    full = mask.all(dim=0)
    idx = torch.nonzero(full).flatten()
    if idx.numel() == 0:
        return None
    a, b = int(idx[0]), int(idx[-1]) + 1
    if b - a != idx.numel():
        return None
    return a, b


def pool(x: torch.Tensor, mask: torch.Tensor, poolings: tuple[str, ...], single_idx: torch.Tensor,
         n_real: torch.Tensor, span: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Pool x [B, T, W] over real tokens. mask [B, T] bool; n_real [B, 1] float. -> {pooling: [B, W] float32}.

    masked_fill (not a multiply) on the ragged edge, so a NaN or inf that a model leaves at a padded
    position cannot leak. `span` (from `dense_span`) lets the all-real part be read without a copy.
    """
    out: dict[str, torch.Tensor] = {}
    t = x.shape[1]
    if span is None:
        parts = [(x, mask)]
    else:
        a, b = span
        parts = [(x[:, a:b], None)]
        if a > 0:
            parts.append((x[:, :a], mask[:, :a]))
        if b < t:
            parts.append((x[:, b:], mask[:, b:]))
    if "mean" in poolings and not x.is_cuda and x.dtype == torch.float32:
        # one 0/1-weighted batched matmul over the whole slab (no copy): 2.5x the speed of a sum over the dense
        # part plus the ragged edge. 0 * NaN/inf would leak a padded value, so a non-finite result (the sum of
        # all of it is a 20x cheaper test than isfinite().all()) is recomputed the safe way.
        s = torch.bmm(mask.unsqueeze(1).to(x.dtype), x).squeeze(1)
        if not math.isfinite(float(s.sum())):
            s = x.masked_fill(~mask.unsqueeze(-1), 0).sum(dim=1, dtype=torch.float32)
        out["mean"] = s / n_real
    elif "mean" in poolings:
        total = None
        for xs, ms in parts:
            if ms is None:
                s = xs.sum(dim=1, dtype=torch.float32)
            elif xs.is_cuda:  # the safe way at once: checking the fast one would make the host wait for the GPU
                s = xs.masked_fill(~ms.unsqueeze(-1), 0).sum(dim=1, dtype=torch.float32)
            else:
                # 0/1-weighted batched matmul: no copy of the slab. 0 * NaN/inf would leak a padded value,
                # so a non-finite result is recomputed the safe way.
                s = torch.bmm(ms.unsqueeze(1).to(xs.dtype), xs).squeeze(1).float()
                if not math.isfinite(float(s.sum())):
                    s = xs.masked_fill(~ms.unsqueeze(-1), 0).sum(dim=1, dtype=torch.float32)
            total = s if total is None else total + s
        out["mean"] = total / n_real
    if "max" in poolings:
        best = None
        for xs, ms in parts:
            if ms is None:
                m = xs.amax(dim=1)
            elif xs.is_cuda:  # no host check on a GPU (it would wait for the device)
                m = xs.masked_fill(~ms.unsqueeze(-1), float("-inf")).amax(dim=1)
            else:
                # a -inf bias on padded positions: 3.5x faster than masked_fill on the CPU. A +inf or NaN at a
                # padded position would turn into NaN here, so a NaN or +inf result is recomputed the safe way
                # (-inf is expected: a row whose edge is all padding; amax propagates NaN)
                bias = torch.zeros(ms.shape, dtype=xs.dtype).masked_fill_(~ms, float("-inf"))
                m = (xs + bias.unsqueeze(-1)).amax(dim=1)
                top = float(m.amax())
                if math.isnan(top) or top == math.inf:
                    m = xs.masked_fill(~ms.unsqueeze(-1), float("-inf")).amax(dim=1)
            best = m if best is None else torch.maximum(best, m)
        out["max"] = best.float()
    if "single" in poolings:
        out["single"] = x[torch.arange(x.shape[0], device=x.device), single_idx].float()
    return out
