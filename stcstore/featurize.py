"""Texts -> pooled features of chosen blocks, exactly as `extract` stores them, without a store.

Used by classifiers and by `stcstore score` on fresh texts: same tokenisation and truncation, same
length-bucketed batches, same hooks and pooling, and the same cast to the stored dtype (float16 values
are clipped to ±65504 as in extract), so a classifier sees what it was trained on. The forward pass
stops after the deepest block any requested feature needs (early exit), and with `columns` only the
neurons a classifier uses are pooled at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from .blocks import BlockKey
from .capture import Capturer, length_batches, pad_batch
from .models import LoadedModel

FLOAT16_MAX = 65504.0


@dataclass
class Features:
    """The features of one list of texts.

    blocks: {block: [n, width] float32 holding stored-dtype values}; width is the number of `columns` of
    the block's (kind, layer) when columns were given, else the full width.
    token_ids: [n] lists of the token ids each text ran with (after truncation).
    tokens: with keep_tokens, [n] dicts {(kind, layer): [n_tokens, width] float32}: each real token's values
    (stored dtype), in token order; None otherwise."""

    blocks: dict[BlockKey, np.ndarray]
    token_ids: list[list[int]]
    tokens: list[dict[tuple[str, int], np.ndarray]] | None = None


class Featurizer:
    """Pooled features of `blocks` for lists of texts. blocks: the (kind, pooling, layer) keys wanted.

    columns: optional {(kind, layer): neuron indices}; only those neurons are pooled, in that order."""

    def __init__(self, lm: LoadedModel, blocks: Iterable[BlockKey], max_length: int, dtype: str = "float16",
                 batch_size: int = 64, max_tokens: int = 8192, device: str = "cpu",
                 columns: Mapping[tuple[str, int], Sequence[int]] | None = None, keep_tokens: bool = False) -> None:
        self.lm = lm
        self.blocks = sorted(set(blocks))
        if not self.blocks:
            raise ValueError("Featurizer needs at least one block")
        self.max_length = max_length
        self.store_dtype = torch.float16 if dtype == "float16" else torch.float32
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.device = torch.device(device)
        self.columns = {key: [int(i) for i in idx] for key, idx in (columns or {}).items()}
        self.keep_tokens = keep_tokens
        poolings = tuple(sorted({b.pooling for b in self.blocks}))
        self.capturer = Capturer(lm.adapter, [b.layer for b in self.blocks if b.kind == "hidden"],
                                 [b.layer for b in self.blocks if b.kind == "ffn"], poolings,
                                 columns={k: torch.tensor(v, dtype=torch.long) for k, v in self.columns.items()},
                                 keep_tokens=keep_tokens)

    @property
    def n_blocks_run(self) -> int:
        """Transformer blocks the forward pass runs (the rest are skipped)."""
        return self.capturer.n_blocks_run

    def width(self, kind: str, layer: int) -> int:
        cols = self.columns.get((kind, layer))
        if cols is not None:
            return len(cols)
        return self.lm.adapter.hidden_size if kind == "hidden" else self.lm.adapter.ffn_size

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        enc = self.lm.tokenizer(texts, truncation=True, max_length=self.max_length, add_special_tokens=True,
                                return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def _stored(self, x: torch.Tensor) -> np.ndarray:
        if self.store_dtype == torch.float16:
            x = x.clamp(-FLOAT16_MAX, FLOAT16_MAX)
        return x.to("cpu", dtype=self.store_dtype).float().numpy()

    def run(self, texts: list[str]) -> Features:
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not one string")
        texts = list(texts)
        seqs = self.tokenize(texts)
        out = {b: np.empty((len(texts), self.width(b.kind, b.layer)), dtype=np.float32) for b in self.blocks}
        tokens: list[dict[tuple[str, int], np.ndarray]] | None = [{} for _ in texts] if self.keep_tokens else None
        pad_id = self.lm.tokenizer.pad_token_id
        side = getattr(self.lm.tokenizer, "padding_side", "right")
        for rows in length_batches([len(s) for s in seqs], self.batch_size, self.max_tokens):
            ids, mask = pad_batch([seqs[i] for i in rows], pad_id, side)
            pooled = self.capturer.run(ids.to(self.device), mask.to(self.device))
            index = np.asarray(rows)
            for b in self.blocks:
                out[b][index] = self._stored(pooled[(b.kind, b.layer)][b.pooling])
            if tokens is not None:
                real = mask.bool()
                for key, x in self.capturer.tokens.items():
                    values = self._stored(x)
                    for j, i in enumerate(rows):
                        tokens[i][key] = values[j][real[j].numpy()]
        return Features(out, seqs, tokens)

    def __call__(self, texts: list[str]) -> dict[BlockKey, np.ndarray]:
        """texts [n] -> {block: [n, width] float32 holding the stored-dtype values}."""
        return self.run(texts).blocks
