"""stcstore: Sparsify-then-Classify on a streaming feature store of pooled transformer neurons."""

__version__ = "0.1.0"

from .errors import StcError  # noqa: E402
from .store import Store  # noqa: E402

__all__ = ["Store", "StcError", "__version__"]
