"""Where a command may write: never onto, into or around a store, nor onto what the command reads.

Every output option (`fit --out`, `report --out`, `score --output` / `--explain-out`, a new `--store`) is
checked here before anything is written, `--force` or not. A store is any folder holding a `store.json`;
the one place inside a store that an output may be is `STORE/predictions`, the predictions table that
`score --output STORE/predictions` appends to (and its rejects and explanations below it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .errors import StcError

STORE_MARKER = "store.json"
PREDICTIONS = "predictions"  # STORE/predictions: score's table inside a store


def real(path: str | Path) -> Path:
    """The absolute path with every existing symlink resolved (a link cannot smuggle an output in)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _within(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def store_around(path: str | Path) -> Path | None:
    """The store that `path` is, or lies inside (the nearest folder at or above it with a store.json)."""
    p = real(path)
    for d in (p, *p.parents):
        if (d / STORE_MARKER).is_file():
            return d
    return None


def store_below(path: str | Path) -> Path | None:
    """A store inside the existing directory `path` (the first found), or None."""
    p = real(path)
    if not p.is_dir():
        return None
    for d, dirs, files in os.walk(p):
        if STORE_MARKER in files:
            return Path(d)
        dirs.sort()
    return None


def check_output(path: str | Path, option: str, reads: Iterable[tuple[str, str | Path]] = (),
                 in_predictions: str = "no") -> None:
    """Refuse an output path that is, lies inside or contains a store, or is, lies inside or contains
    something the command reads (`reads`: (what, path) pairs, e.g. ("classifier", dir)). `in_predictions`:
    "table" lets the path be exactly a store's predictions table (score's directory output), "below" lets
    it lie anywhere inside one (score's rejects and explanation files); "no" refuses both."""
    p = real(path)
    store = store_around(p)
    if store is not None:
        table = store / PREDICTIONS
        allowed = (in_predictions == "table" and p == table) or (in_predictions == "below" and _within(p, table))
        if not allowed:
            where = "is the store" if p == store else "lies inside the store"
            hint = (f"; the only place inside a store for predictions is {table}" if in_predictions != "no" else "")
            raise StcError(f"{option} {path} {where} {store}: writing there would replace or corrupt it. "
                           f"Pick a path outside the store{hint}")
    below = store_below(p)
    if below is not None:
        raise StcError(f"{option} {path} contains the store {below}: writing there would replace it. "
                       f"Pick a path that holds no store")
    for what, r in reads:
        rp = real(r)
        if _within(p, rp) or _within(rp, p):
            where = "is" if p == rp else ("lies inside" if _within(p, rp) else "contains")
            raise StcError(f"{option} {path} {where} the {what} {r} that this command reads; pick another path")
