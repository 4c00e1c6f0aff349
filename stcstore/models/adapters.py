"""Model adapters: where the blocks are, where each block's FFN output projection is, and how to read them.

One small spec per architecture family, and a structural fallback that fails with a clear message.

Numbering is API (see README, "Layer numbering"):

* hidden state ``h0`` is the embedding output (the input of block 0); ``h{l+1}`` is the output of
  block ``l``. All hidden states are the residual stream *before* any final norm (GPT-2's ``ln_f``,
  Llama's ``norm``), so every ``h`` is the same kind of quantity. Hugging Face's
  ``output_hidden_states`` applies the final norm to its last entry for decoders; the parity tests
  check both facts.
* FFN activation ``a{l}`` lives inside block ``l``: the d_ff-wide *input* of the FFN's output
  projection (``act(x W1)`` for BERT/GPT-2, ``act(gate) * up`` for gated families).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..core.errors import StcError


@dataclass(frozen=True)
class AdapterSpec:
    """Where things are in one architecture family (attribute paths relative to the base model)."""

    family: str
    blocks: str  # dotted path to the nn.ModuleList of blocks
    ffn_out: str  # dotted path, relative to a block, of the FFN output projection
    final_norm: str | None  # dotted path of the norm applied after the last block, if any
    encoder: bool  # encoders pool "single" on the first token, decoders on the last real token
    # Whether we pass position ids computed from the attention mask. RoBERTa must compute its own
    # from input_ids (padding_idx offset). Everything else needs them under left padding. (Only passed
    # when the forward accepts position_ids; older DistilBERT does not, and is right-padded only.)
    positions_from_mask: bool


ADAPTERS: dict[str, AdapterSpec] = {
    "bert": AdapterSpec("bert", "encoder.layer", "output.dense", None, True, True),
    "roberta": AdapterSpec("roberta", "encoder.layer", "output.dense", None, True, False),
    "xlm-roberta": AdapterSpec("roberta", "encoder.layer", "output.dense", None, True, False),
    "distilbert": AdapterSpec("distilbert", "transformer.layer", "ffn.lin2", None, True, True),
    "gpt2": AdapterSpec("gpt2", "h", "mlp.c_proj", "ln_f", False, True),
    "gpt_neox": AdapterSpec("gpt_neox", "layers", "mlp.dense_4h_to_h", "final_layer_norm", False, True),
}
for _gated in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "olmo2"):
    ADAPTERS[_gated] = AdapterSpec(_gated, "layers", "mlp.down_proj", "norm", False, True)


def _get(module: nn.Module, path: str) -> Any:
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def _find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """Structural fallback: the longest ModuleList whose length equals config.num_hidden_layers."""
    n = getattr(model.config, "num_hidden_layers", None)
    best: tuple[str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n):
            if best is None or name.count(".") < best[0].count("."):
                best = (name, mod)
    return best


_FFN_OUT_NAMES = ("down_proj", "dense_4h_to_h", "c_proj", "fc2", "lin2", "w2", "wo", "output.dense")


def _find_ffn_out(block: nn.Module) -> str | None:
    """Structural fallback: a projection named like an FFN output inside an `mlp`/`ffn`-like child."""
    for name, _ in block.named_modules():
        if any(name.endswith(c) for c in _FFN_OUT_NAMES) and "attn" not in name and "attention" not in name:
            return name
    return None


@dataclass
class Adapter:
    """A resolved adapter bound to one loaded model."""

    spec: AdapterSpec
    model: nn.Module
    blocks: nn.ModuleList
    ffn_out_path: str

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def ffn_size(self) -> int:
        proj = _get(self.blocks[0], self.ffn_out_path)
        if isinstance(proj, nn.Linear):
            return int(proj.in_features)
        weight = getattr(proj, "weight", None)  # GPT-2 Conv1D stores weight as [in, out]
        if weight is not None and proj.__class__.__name__ == "Conv1D":
            return int(weight.shape[0])
        raise StcError(f"cannot tell the FFN width of {proj.__class__.__name__} in {self.spec.family}")

    def ffn_out(self, layer: int) -> nn.Module:
        return _get(self.blocks[layer], self.ffn_out_path)

    def final_norm(self) -> nn.Module | None:
        return _get(self.model, self.spec.final_norm) if self.spec.final_norm else None

    @property
    def widths(self) -> dict[str, int]:
        """{kind: width} of the two kinds of features."""
        return {"hidden": self.hidden_size, "ffn": self.ffn_size}


def resolve_adapter(model: nn.Module) -> Adapter:
    """Pick the family adapter for `model`, or fall back to structure; fail with a clear message."""
    model_type = getattr(model.config, "model_type", "")
    spec = ADAPTERS.get(model_type)
    if spec is not None:
        try:
            blocks = _get(model, spec.blocks)
            _get(blocks[0], spec.ffn_out)
            return Adapter(spec, model, blocks, spec.ffn_out)
        except (AttributeError, IndexError) as exc:
            raise StcError(
                f"model type {model_type!r} does not have the layout the {spec.family} adapter expects "
                f"({spec.blocks}[i].{spec.ffn_out}): {exc}. Load the base model (AutoModel), not a wrapper."
            ) from exc
    found = _find_blocks(model)
    if found is None:
        raise StcError(
            f"no adapter for model type {model_type!r} and no block list found by structure "
            f"(looked for an nn.ModuleList of config.num_hidden_layers blocks). Supported families: "
            f"{', '.join(sorted(set(ADAPTERS)))}."
        )
    blocks_path, blocks = found
    ffn_path = _find_ffn_out(blocks[0])
    if ffn_path is None:
        children = ", ".join(n for n, _ in blocks[0].named_modules() if n)
        raise StcError(
            f"model type {model_type!r}: found blocks at {blocks_path!r} but no FFN output projection "
            f"(looked for {', '.join(_FFN_OUT_NAMES)}); block children: {children}"
        )
    is_decoder = bool(getattr(model.config, "is_decoder", False)) or "causal" in str(
        getattr(model.config, "architectures", "")
    ).lower()
    spec = AdapterSpec(f"generic:{model_type}", blocks_path, ffn_path, None, not is_decoder, is_decoder)
    return Adapter(spec, model, blocks, ffn_path)


def forward_accepts(model: nn.Module, arg: str) -> bool:
    return arg in inspect.signature(model.forward).parameters
