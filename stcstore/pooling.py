"""Masked pooling over real tokens: padding never reaches a pooled value, whatever side it is on."""

from __future__ import annotations

import torch

from .blocks import KINDS, POOLINGS  # noqa: F401  (re-exported)


def single_index(mask: torch.Tensor, encoder: bool) -> torch.Tensor:
    """Position of the token `single` reads: first real token (encoders, CLS) or last real token (decoders).

    Works for left and right padding alike. mask: [B, T] bool -> [B] long.
    """
    t = mask.shape[1]
    if encoder:
        return mask.to(torch.int8).argmax(dim=1)
    return (t - 1) - mask.flip(1).to(torch.int8).argmax(dim=1)


def pool(x: torch.Tensor, mask: torch.Tensor, poolings: tuple[str, ...], single_idx: torch.Tensor,
         n_real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pool x [B, T, W] over real tokens. mask [B, T] bool; n_real [B, 1] float. -> {pooling: [B, W] float32}.

    masked_fill (not a multiply) so a NaN or inf that a model leaves at a padded position cannot leak.
    """
    out: dict[str, torch.Tensor] = {}
    pad = ~mask.unsqueeze(-1)
    if "mean" in poolings:
        out["mean"] = x.masked_fill(pad, 0).sum(dim=1, dtype=torch.float32) / n_real
    if "max" in poolings:
        out["max"] = x.masked_fill(pad, float("-inf")).amax(dim=1).float()
    if "single" in poolings:
        out["single"] = x[torch.arange(x.shape[0], device=x.device), single_idx].float()
    return out
