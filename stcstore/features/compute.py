"""Texts -> pooled features in the stored dtype: the one feature path.

`extract` (into store chunks), `score`, `Classifier.predict_proba` and token explanations all compute
features here, so they cannot drift: the same tokenisation and truncation, the same length-bucketed
batches under a token budget, the same padding (`tokenizer.pad`, on the tokenizer's side), the same
forward pass that stops after the deepest block needed, the same pooling, and the same clip (counted)
and cast to the stored dtype. With `columns` only the neurons a classifier reads are pooled at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..core.errors import StcError
from ..core.names import BATCH_SIZE, MAX_TOKENS, STORED_DTYPES, FeatureBlock, check_choice
from ..models.loading import LoadedModel
from .hooks import PooledForward
from .packing import pack_rows, packed_batch

FLOAT16_MAX = 65504.0  # largest finite float16; stored float16 values are clipped to ±this (and counted)
# the dtype values are cast to on the device (int8 chunks are coded from float16 values when written)
TORCH_STORED = {"float16": torch.float16, "float32": torch.float32, "int8": torch.float16}


def length_batches(lengths: list[int], max_rows: int, max_tokens: int) -> Iterator[list[int]]:
    """Group row indices into batches of similar length: longest first, rows * longest <= max_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        if batch and (len(batch) >= max_rows or (len(batch) + 1) * longest > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@dataclass
class Batch:
    """One forward batch. rows: [B] indices into the texts; values: [B, total width] in the stored dtype
    on the CPU, blocks side by side in `FeatureComputer.blocks` order; real: [B, T] bool, the real tokens;
    tokens: with keep_tokens, {(kind, layer): [B, T, width]} per-token values in the stored dtype."""

    rows: np.ndarray
    values: torch.Tensor
    real: torch.Tensor
    tokens: dict[tuple[str, int], torch.Tensor] | None
    device_values: torch.Tensor  # the same values on the model's device (statistics are computed there)


@dataclass
class Features:
    """The features of one list of texts.

    blocks: {block: [n, width] float32 holding stored-dtype values}; width is the number of `columns` of the
    block's (kind, layer) when columns were given, else the full width.
    token_ids: [n] lists of the token ids each text ran with (after truncation).
    tokens: with keep_tokens, [n] dicts {(kind, layer): [n_tokens, width] float32}: each real token's values
    (stored dtype), in token order; None otherwise.
    truncated: how many texts lost tokens to max_length.
    empty: rows whose tokens are all special tokens (nothing of the text reached the model)."""

    blocks: dict[FeatureBlock, np.ndarray]
    token_ids: list[list[int]]
    tokens: list[dict[tuple[str, int], np.ndarray]] | None
    truncated: int
    empty: list[int]


class FeatureComputer:
    """Pooled features of `blocks` for lists of texts, exactly as the store holds them.

    columns: optional {(kind, layer): neuron indices}; only those neurons are pooled, in that order.
    bucket: sort texts by length into batches (off only for benchmarks)."""

    def __init__(self, lm: LoadedModel, blocks: Iterable[FeatureBlock], max_length: int, dtype: str = "float16",
                 batch_size: int = BATCH_SIZE, max_tokens: int = MAX_TOKENS, device: str = "cpu",
                 columns: Mapping[tuple[str, int], Sequence[int]] | None = None, keep_tokens: bool = False,
                 bucket: bool = True, pack: bool = False) -> None:
        self.lm = lm
        self.blocks = sorted(set(blocks))
        if not self.blocks:
            raise StcError("no feature blocks to compute: give at least one (kind, pooling, layer)")
        self.max_length = max_length
        self.dtype = check_choice(dtype, STORED_DTYPES, "--dtype")
        self.stored_torch = TORCH_STORED[dtype]
        self.host_dtype = np.dtype(str(self.stored_torch).removeprefix("torch."))  # of `Batch.values`
        self.batch_size, self.max_tokens, self.bucket = batch_size, max_tokens, bucket
        self.device = torch.device(device)
        self.columns = {key: [int(i) for i in idx] for key, idx in (columns or {}).items()}
        self.keep_tokens = keep_tokens
        self.widths = [self.width(b.kind, b.layer) for b in self.blocks]
        self.offsets = np.cumsum([0] + self.widths)
        self.forward = PooledForward(
            lm.adapter, [b.layer for b in self.blocks if b.kind == "hidden"],
            [b.layer for b in self.blocks if b.kind == "ffn"], tuple(sorted({b.pooling for b in self.blocks})),
            columns={k: torch.tensor(v, dtype=torch.long) for k, v in self.columns.items()}, keep_tokens=keep_tokens)
        self._clipped = 0  # stored values clipped to the float16 range so far (`clipped`)
        self._clipped_on_device: torch.Tensor | None = None  # the same count on a GPU, read when asked for
        self.forward_seconds = 0.0
        self.pack = pack  # several texts a row, no padding between them (features.packing)
        if pack and not self.forward.can_pack:
            raise StcError(f"--pack needs a model whose forward takes position_ids ({lm.adapter.spec.family} does "
                           f"not) and no per-token values; extract without --pack")

    @property
    def clipped(self) -> int:
        """Stored values clipped to the float16 range so far."""
        if self._clipped_on_device is not None:
            self._clipped += int(self._clipped_on_device)
            self._clipped_on_device = None
        return self._clipped

    @property
    def n_blocks_run(self) -> int:
        """Transformer blocks the forward pass runs (the rest are skipped)."""
        return self.forward.n_blocks_run

    def width(self, kind: str, layer: int) -> int:
        cols = self.columns.get((kind, layer))
        return len(cols) if cols is not None else self.lm.adapter.widths[kind]

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], int]:
        """Token ids per text (truncated to max_length) and how many texts were truncated."""
        if isinstance(texts, str):
            raise StcError("pass a list of texts, not one string")
        enc = self.lm.tokenizer(list(texts), truncation=True, max_length=self.max_length, add_special_tokens=True,
                                return_attention_mask=False, return_token_type_ids=False)
        seqs = enc["input_ids"]
        encodings = getattr(enc, "encodings", None)
        if encodings:  # fast tokenizers say exactly which texts lost tokens
            truncated = sum(1 for e in encodings if e.overflowing)
        else:  # slow tokenizers: an upper bound
            truncated = sum(1 for s in seqs if len(s) >= self.max_length)
        return seqs, truncated

    def batches(self, seqs: list[list[int]]) -> list[list[int]]:
        if self.bucket:
            return list(length_batches([len(s) for s in seqs], self.batch_size, self.max_tokens))
        n = len(seqs)
        return [list(range(i, min(i + self.batch_size, n))) for i in range(0, n, self.batch_size)]

    def stored(self, x: torch.Tensor, count: bool = True, host: bool = True) -> torch.Tensor:
        """Cast to the stored dtype (on the CPU when host); float16 values beyond ±65504 are clipped (and
        counted)."""
        if self.stored_torch == torch.float16 and x.device.type == "cuda":
            # on a GPU clip always and count on the device: a host read here would wait for every forward pass
            if count:
                n = (x > FLOAT16_MAX).sum() + (x < -FLOAT16_MAX).sum()
                self._clipped_on_device = n if self._clipped_on_device is None else self._clipped_on_device + n
            return x.clamp(-FLOAT16_MAX, FLOAT16_MAX).to("cpu" if host else x.device, dtype=self.stored_torch)
        # on the CPU, two fast reductions instead of abs() (a full copy); count and clip only when needed
        if self.stored_torch == torch.float16 and (float(x.amax()) > FLOAT16_MAX or float(x.amin()) < -FLOAT16_MAX):
            if count:
                self._clipped += int((x > FLOAT16_MAX).sum() + (x < -FLOAT16_MAX).sum())
            x = x.clamp(-FLOAT16_MAX, FLOAT16_MAX)
        return x.to("cpu" if host else x.device, dtype=self.stored_torch)

    def iter_batches(self, seqs: list[list[int]], host: bool = True) -> Iterator[Batch]:
        """Forward every batch of `seqs` (token ids from `tokenize`) and yield its stored values (host=False:
        on the model's device only; `Batch.values` is then that same tensor).

        On a CUDA device the host copy goes into pinned memory on a side stream without blocking, and a batch
        is handed over only once the next one's forward pass is queued: the GPU computes batch k+1 while its
        values of batch k travel, and while the caller scatters them on the host."""
        if host and self.device.type == "cuda" and not self.keep_tokens:
            yield from _overlapped(self._device_batches(seqs), self.device)
            return
        yield from self._device_batches(seqs, host)

    def _device_batches(self, seqs: list[list[int]], host: bool = False) -> Iterator[Batch]:
        """The batches as computed, their `values` copied to the host only when `host` (synchronously)."""
        if self.pack:
            yield from self._packed_batches(seqs, host)
            return
        tok = self.lm.tokenizer
        for rows in self.batches(seqs):
            enc = tok.pad({"input_ids": [seqs[i] for i in rows]}, padding=True, return_tensors="pt",
                          return_attention_mask=True)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            t0 = time.perf_counter()
            out = self.forward.run(ids.to(self.device), mask.to(self.device), host_mask=mask)
            self.forward_seconds += time.perf_counter() - t0
            yield self._batch(out, rows, mask.bool(), host)

    def _packed_batches(self, seqs: list[list[int]], host: bool) -> Iterator[Batch]:
        """Packed batches: texts back to back in rows of at most max_length tokens (features.packing); a batch's
        `rows` are its texts in segment order and `real` is None."""
        spec, model = self.lm.adapter.spec, self.lm.adapter.model
        offset = (model.config.pad_token_id + 1) if spec.family == "roberta" else 0  # RoBERTa counts from padding
        dtype = next(model.parameters()).dtype
        pad = self.lm.tokenizer.pad_token_id if self.lm.tokenizer.pad_token_id is not None else 0
        for rows in pack_rows([len(s) for s in seqs], self.max_length, self.max_tokens, self.max_tokens):
            packed = packed_batch(seqs, rows, pad, not spec.encoder, offset, dtype if dtype.is_floating_point
                                  else torch.float32)
            t0 = time.perf_counter()
            out = self.forward.run_packed(packed.to(self.device))
            self.forward_seconds += time.perf_counter() - t0
            yield self._batch(out, packed.texts, None, host)

    def _batch(self, out: dict[tuple[str, int], dict[str, torch.Tensor]], rows: Sequence[int],
               real: torch.Tensor | None, host: bool) -> Batch:
        """One forward pass's pooled outputs as a Batch: one [B, total_width] tensor for all blocks (a single
        clip, cast and copy), on the host too when `host` (the one host copy; none on the CPU)."""
        on_device = self.stored(torch.cat([out[(b.kind, b.layer)][b.pooling] for b in self.blocks], dim=1),
                                host=False)
        values = on_device.to("cpu") if host else on_device
        tokens = ({key: self.stored(x, count=False) for key, x in self.forward.tokens.items()}
                  if self.keep_tokens else None)
        return Batch(np.asarray(rows), values, real, tokens, on_device)  # type: ignore[arg-type]  (packed: real None)

    def run(self, texts: list[str]) -> Features:
        """texts [n] -> Features, rows in the given order."""
        seqs, truncated = self.tokenize(texts)
        n = len(seqs)
        out = {b: np.empty((n, w), dtype=np.float32) for b, w in zip(self.blocks, self.widths)}
        tokens: list[dict[tuple[str, int], np.ndarray]] | None = [{} for _ in seqs] if self.keep_tokens else None
        for batch in self.iter_batches(seqs):
            values = batch.values.float().numpy()
            for b, c0, c1 in zip(self.blocks, self.offsets[:-1], self.offsets[1:]):
                out[b][batch.rows] = values[:, c0:c1]
            if tokens is not None and batch.tokens is not None:
                for key, x in batch.tokens.items():
                    x = x.float().numpy()
                    for j, i in enumerate(batch.rows):
                        tokens[i][key] = x[j][batch.real[j].numpy()]
        # [UNK] stands for text the vocabulary lacks: it counts as content; [CLS], [SEP], BOS, EOS do not
        special = set(self.lm.tokenizer.all_special_ids) - {self.lm.tokenizer.unk_token_id}
        empty = [i for i, s in enumerate(seqs) if all(t in special for t in s)]
        return Features(out, seqs, tokens, truncated, empty)


def _overlapped(batches: Iterator[Batch], device: torch.device) -> Iterator[Batch]:
    """Device batches -> the same batches with `values` on the host, each copied into pinned memory on a side
    stream as soon as its forward pass is done, and yielded one batch later (when the next forward is queued)."""
    copy_stream = torch.cuda.Stream(device)
    pending: tuple[Batch, torch.Tensor, torch.cuda.Event] | None = None
    for batch in batches:
        computed = torch.cuda.Event()
        computed.record()  # on the compute stream, after this batch's forward and cast
        buf = torch.empty(batch.device_values.shape, dtype=batch.device_values.dtype, pin_memory=True)
        with torch.cuda.stream(copy_stream):
            copy_stream.wait_event(computed)
            buf.copy_(batch.device_values, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(copy_stream)
        batch.device_values.record_stream(copy_stream)  # not reused by the allocator before the copy is done
        if pending is not None:
            yield _arrived(*pending)
        pending = (batch, buf, copied)
    if pending is not None:
        yield _arrived(*pending)


def _arrived(batch: Batch, buf: torch.Tensor, copied: "torch.cuda.Event") -> Batch:
    copied.synchronize()
    batch.values = buf
    return batch
