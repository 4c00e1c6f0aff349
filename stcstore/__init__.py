"""stcstore: Sparsify-then-Classify on a streaming feature store of pooled transformer neurons."""

__version__ = "0.3.0.dev0"

from .core.errors import StcError  # noqa: E402
from .store import Store  # noqa: E402


def load_classifier(path, model=None, gguf_file=None, device="cpu"):  # noqa: ANN001, ANN201 - see classifier.files
    """Load a saved classifier directory (lazy import: reading a store does not need torch)."""
    from .classifier.files import load_classifier as _load

    return _load(path, model=model, gguf_file=gguf_file, device=device)


__all__ = ["Store", "StcError", "__version__", "load_classifier"]
