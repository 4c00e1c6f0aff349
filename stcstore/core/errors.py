"""Errors a person can act on.

`StcError` is a *handled* failure: bad input, a refused operation, nothing done. The CLI prints its
message and exits 1. Anything else is a bug and exits 2 with a traceback.
"""

from __future__ import annotations


class StcError(Exception):
    """A handled failure whose message says what was wrong and what to do next."""


class StoreLockedError(StcError):
    """Another writer holds the store's lock."""


class FingerprintMismatchError(StcError):
    """Stored data was produced by a different model, tokenizer or configuration."""
