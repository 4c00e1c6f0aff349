"""stcstore: Sparsify-then-Classify on a streaming feature store of pooled transformer neurons."""

from .core.errors import StcError
from .core.version import __version__
from .store import Store


def load_classifier(path, model=None, gguf_file=None, device="cpu"):  # noqa: ANN001, ANN201 - see classifier.classifier
    """Load a saved classifier directory (lazy import: reading a store does not need torch)."""
    from .classifier.classifier import load_classifier as _load

    return _load(path, model=model, gguf_file=gguf_file, device=device)


__all__ = ["Store", "StcError", "__version__", "load_classifier"]
