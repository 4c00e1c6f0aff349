"""Models: family adapters (where blocks and FFN output projections are) and offline loading with a
fingerprint of what the model computes."""

from .adapters import ADAPTERS, Adapter, AdapterSpec, resolve_adapter
from .loading import IDENTITY_KEYS, LoadedModel, default_model_path, identity, load_model, wrap_model

__all__ = ["ADAPTERS", "Adapter", "AdapterSpec", "IDENTITY_KEYS", "LoadedModel", "default_model_path", "identity",
           "load_model", "resolve_adapter", "wrap_model"]
