"""Errors a person can act on.

`StcError` is a *handled* failure: bad input, a refused operation, nothing done. The CLI prints its
message and exits 1. Anything else is a bug and exits 2 with a traceback.
"""

from __future__ import annotations

import errno


class StcError(Exception):
    """A handled failure whose message says what was wrong and what to do next."""


class StoreLockedError(StcError):
    """Another writer holds the store's lock."""


class FingerprintMismatchError(StcError):
    """Stored data was produced by a different model, tokenizer or configuration."""


class WriteError(StcError):
    """Writing failed (a full disk, no permission): nothing half-written is visible, and the same command
    resumes once the cause is fixed."""


def os_error_message(exc: OSError, path: object = None) -> str:
    """What a person should read when the operating system refused a read or write: the path and what to do."""
    where = path or exc.filename or "a file"
    text = f"{exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc):
        advice = ("the disk is full: free space, then run the same command again; what was committed is kept "
                  "and the run resumes where it stopped")
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "no permission to write there: fix the permissions or pick another path"
    else:
        advice = "fix the cause and run the same command again; what was committed is kept"
    return f"{where}: {text} ({advice})"
