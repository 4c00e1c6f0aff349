"""What long-running commands say on stderr: messages and progress bars (stdout is for results)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def progress(total: int | None, desc: str, unit: str) -> tqdm:
    """A tqdm bar on stderr, off when stderr is not a terminal (callers then log one line per chunk)."""
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True, desc=desc)
