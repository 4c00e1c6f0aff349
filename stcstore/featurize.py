"""Texts -> pooled features of chosen blocks, exactly as `extract` stores them, without a store.

Used by classifiers (and the nightly scorer) on fresh texts: same tokenisation and truncation, same
length-bucketed batches, same hooks and pooling, and the same cast to the stored dtype (float16 values
are clipped to ±65504 as in extract), so a classifier sees what it was trained on. The forward pass
stops after the deepest block any requested feature needs (early exit).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from .blocks import BlockKey
from .capture import Capturer, length_batches, pad_batch
from .models import LoadedModel

FLOAT16_MAX = 65504.0


class Featurizer:
    """Pooled features of `blocks` for lists of texts. blocks: the (kind, pooling, layer) keys wanted."""

    def __init__(self, lm: LoadedModel, blocks: Iterable[BlockKey], max_length: int, dtype: str = "float16",
                 batch_size: int = 64, max_tokens: int = 8192, device: str = "cpu") -> None:
        self.lm = lm
        self.blocks = sorted(set(blocks))
        if not self.blocks:
            raise ValueError("Featurizer needs at least one block")
        self.max_length = max_length
        self.store_dtype = torch.float16 if dtype == "float16" else torch.float32
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.device = torch.device(device)
        poolings = tuple(sorted({b.pooling for b in self.blocks}))
        self.capturer = Capturer(lm.adapter, [b.layer for b in self.blocks if b.kind == "hidden"],
                                 [b.layer for b in self.blocks if b.kind == "ffn"], poolings)

    @property
    def n_blocks_run(self) -> int:
        """Transformer blocks the forward pass runs (the rest are skipped)."""
        return self.capturer.n_blocks_run

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        enc = self.lm.tokenizer(texts, truncation=True, max_length=self.max_length, add_special_tokens=True,
                                return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def __call__(self, texts: list[str]) -> dict[BlockKey, np.ndarray]:
        """texts [n] -> {block: [n, width] float32 holding the stored-dtype values}."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not one string")
        texts = list(texts)
        seqs = self.tokenize(texts)
        widths = {"hidden": self.lm.adapter.hidden_size, "ffn": self.lm.adapter.ffn_size}
        out = {b: np.empty((len(texts), widths[b.kind]), dtype=np.float32) for b in self.blocks}
        pad_id = self.lm.tokenizer.pad_token_id
        side = getattr(self.lm.tokenizer, "padding_side", "right")
        for rows in length_batches([len(s) for s in seqs], self.batch_size, self.max_tokens):
            ids, mask = pad_batch([seqs[i] for i in rows], pad_id, side)
            pooled = self.capturer.run(ids.to(self.device), mask.to(self.device))
            index = np.asarray(rows)
            for b in self.blocks:
                x = pooled[(b.kind, b.layer)][b.pooling]
                if self.store_dtype == torch.float16:
                    x = x.clamp(-FLOAT16_MAX, FLOAT16_MAX)
                out[b][index] = x.to("cpu", dtype=self.store_dtype).float().numpy()
        return out
