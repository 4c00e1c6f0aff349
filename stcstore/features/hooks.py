"""One forward pass over a token batch that returns pooled hidden states and FFN activations, via hooks.

Pooling happens inside the hooks, on the model's device, batch by batch, so per-token tensors never
pile up. The forward pass is aborted right after the deepest block that any requested feature needs,
so `--layers` really saves the compute of the remaining blocks.
"""

from __future__ import annotations

import torch

from ..core.errors import StcError
from ..core.names import blocks_to_run
from ..models.adapters import Adapter, forward_accepts
from .packing import Packed, pool_packed
from .pooling import dense_span, pool, single_index


class _Stop(Exception):
    """Raised from a hook once everything needed has been captured."""


class PooledForward:
    """Hooks for the requested (kind, layer) pairs; `run` returns pooled features for one batch."""

    def __init__(self, adapter: Adapter, hidden_layers: list[int], ffn_layers: list[int],
                 poolings: tuple[str, ...], columns: dict[tuple[str, int], torch.Tensor] | None = None,
                 keep_tokens: bool = False) -> None:
        """columns: optional {(kind, layer): neuron indices [k] (long)}: only those neurons are pooled (and
        kept), in that order. keep_tokens: also return each batch's per-token values (for explanations)."""
        self.adapter = adapter
        self.columns = dict(columns or {})
        self.keep_tokens = keep_tokens
        self.tokens: dict[tuple[str, int], torch.Tensor] = {}
        self.hidden_layers = sorted(set(hidden_layers))
        self.ffn_layers = sorted(set(ffn_layers))
        self.poolings = poolings
        self.n_blocks_run = blocks_to_run(self.hidden_layers, self.ffn_layers)
        self._accepts_positions = forward_accepts(adapter.model, "position_ids")
        self._accepts_cache = forward_accepts(adapter.model, "use_cache")
        self._out: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        self._ctx: tuple = ()
        self._remaining = 0

    # The last capture of a batch raises _Stop, so blocks after it never run.
    def _record(self, kind: str, layer: int, x: torch.Tensor) -> None:
        cols = self.columns.get((kind, layer))
        if cols is not None:
            x = x.index_select(-1, cols.to(x.device))
        if isinstance(self._ctx, Packed):  # several texts a row (run_packed)
            self._out[(kind, layer)] = pool_packed(x, self._ctx, self.poolings, self.adapter.spec.encoder)
        else:
            mask, idx, n_real, span = self._ctx  # set by run() for the duration of the forward pass
            self._out[(kind, layer)] = pool(x, mask, self.poolings, idx, n_real, span)
        if self.keep_tokens:
            self.tokens[(kind, layer)] = x.to(torch.float32, copy=True)
        self._remaining -= 1
        if self._remaining == 0:
            raise _Stop

    def _hooks(self) -> list[torch.utils.hooks.RemovableHandle]:
        blocks, handles = self.adapter.blocks, []

        def block_input(layer: int):
            def hook(_mod, args, kwargs):
                x = args[0] if args else kwargs["hidden_states"]
                self._record("hidden", layer, x)
            return hook

        def block_output(layer: int):
            def hook(_mod, _args, output):
                x = output[0] if isinstance(output, (tuple, list)) else output
                self._record("hidden", layer, x)
            return hook

        def ffn_input(layer: int):
            def hook(_mod, args):
                self._record("ffn", layer, args[0])
            return hook

        for l in self.hidden_layers:
            if l == 0:
                handles.append(blocks[0].register_forward_pre_hook(block_input(0), with_kwargs=True))
            else:
                handles.append(blocks[l - 1].register_forward_hook(block_output(l)))
        for l in self.ffn_layers:
            handles.append(self.adapter.ffn_out(l).register_forward_pre_hook(ffn_input(l)))
        return handles

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, host_mask: torch.Tensor | None = None
            ) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
        """input_ids, attention_mask: [B, T] on the model's device -> {(kind, layer): {pooling: [B, W] float32}}.
        host_mask: the same mask on the CPU, if at hand (on a GPU nothing then waits for the device here)."""
        mask = attention_mask.bool()
        idx = single_index(mask, self.adapter.spec.encoder)
        n_real = mask.sum(dim=1, keepdim=True).clamp(min=1).float()
        span = dense_span(host_mask.bool() if host_mask is not None else mask)
        kwargs: dict = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.adapter.spec.positions_from_mask and self._accepts_positions:
            kwargs["position_ids"] = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        return self._forward((mask, idx, n_real, span), kwargs)

    @property
    def can_pack(self) -> bool:
        """Whether packed rows can be given (the model takes position ids), and no per-token values are kept."""
        return self._accepts_positions and not self.keep_tokens

    @torch.inference_mode()
    def run_packed(self, packed: Packed) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
        """A packed batch (features.packing; on the model's device) -> {(kind, layer): {pooling: [S, W]}}, one row
        per text, in `packed.texts` order."""
        if not self.can_pack:
            raise StcError(f"packed batches need a model whose forward takes position_ids; "
                           f"{self.adapter.spec.family} does not (extract without --pack)")
        kwargs = {"input_ids": packed.input_ids, "attention_mask": packed.attention_mask,
                  "position_ids": packed.position_ids}
        return self._forward(packed, kwargs)

    def _forward(self, ctx: "tuple | Packed", kwargs: dict) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
        self._ctx, self._out, self.tokens = ctx, {}, {}
        self._remaining = len(self.hidden_layers) + len(self.ffn_layers)
        if self._accepts_cache:
            kwargs["use_cache"] = False
        handles = self._hooks()
        try:
            self.adapter.model(**kwargs)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
            self._ctx = ()
        if self._remaining:
            raise StcError(f"{self._remaining} requested features were not captured: the adapter "
                           f"{self.adapter.spec.family} does not match this model's forward pass (report it "
                           f"with the model's config.json)")
        return self._out
