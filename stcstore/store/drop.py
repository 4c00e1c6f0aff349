"""`stcstore drop` and `ingest --replace`: one dataset's texts, features and fit tables taken out of a store.

Under the store's lock (refused while an ingest, extract or fit holds it), each of the dataset's folders
(`fits/`, `features/`, then `ingest/dataset=NAME`: the texts last, so the dataset stays listed until they go)
is renamed aside in one step, then deleted. A drop killed between the two leaves `.tmp-` folders that the
next writer under the same table removes: the drop completes, nothing is half-read. `ingest --replace`
moves the old folders aside the same way, ingests the files, and puts the old ones back if a file cannot be
read (the dataset is then exactly as before); predictions already scored (`STORE/predictions`) are kept.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.atomic import store_lock
from ..core.errors import StcError
from ..core.names import check_name
from ..core.result import Result, require_store
from .store import Store

DATASET_TABLES = ("fits", "features", "ingest")  # moved aside in this order: the texts last


def stash(store: Store, dataset: str) -> list[tuple[Path, Path]]:
    """Rename the dataset's folders aside (each rename atomic); returns [(aside, where it was)]. Call under the
    store lock."""
    moved = []
    for table in DATASET_TABLES:
        where = store.table_dir(table, dataset)
        if where.exists():
            aside = where.parent / f".tmp-drop-{where.name}-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(where, aside)
            moved.append((aside, where))
    return moved


def restore(moved: list[tuple[Path, Path]]) -> None:
    """Put stashed folders back (what a failed `ingest --replace` wrote in their place is removed first)."""
    for aside, where in reversed(moved):
        if where.exists():
            shutil.rmtree(where)
        os.rename(aside, where)


def discard(moved: list[tuple[Path, Path]]) -> None:
    for aside, _ in moved:
        shutil.rmtree(aside, ignore_errors=True)


@dataclass
class DropResult(Result):
    dataset: str
    store: str
    texts: int
    feature_sets: int
    fits: int
    bytes: int

    def to_text(self) -> str:
        return (f"dropped dataset {self.dataset!r} from {self.store}: {self.texts:,} texts, {self.feature_sets} "
                f"feature sets, {self.fits} fits ({self.bytes / 2**20:,.1f} MiB)")


def contents(store: Store, dataset: str) -> tuple[int, int, int, int]:
    """(texts, feature sets, fits, bytes) a dataset holds in the store."""
    fits = store.table_dir("fits", dataset)
    size = sum(f.stat().st_size for t in DATASET_TABLES for f in store.table_dir(t, dataset).rglob("*") if f.is_file())
    return (store.text_count(dataset), len(store.feature_sets(dataset)),
            len(list(fits.glob("fit=*"))) if fits.exists() else 0, size)


@dataclass(frozen=True)
class DropConfig:
    """Options of one drop: the dataset, the store, and `yes` (without it, drop refuses and says what would go)."""

    dataset: str
    store: str | None = None
    yes: bool = False

    def __post_init__(self) -> None:
        check_name(self.dataset, "--dataset")


def drop(cfg: DropConfig, *legacy: Any, yes: bool | None = None) -> DropResult:
    """Remove one dataset (its texts and rejects, feature sets and fit tables) from the store `cfg.store`.
    Without `cfg.yes`, refuses and says what would go. 0.2's `drop(store, dataset, yes=False)` still works."""
    if not isinstance(cfg, DropConfig):  # 0.2: drop(store, dataset, yes=False)
        store, dataset, *rest = (cfg, *legacy)
        cfg = DropConfig(dataset, store=str(store), yes=bool(rest[0] if rest else yes))
    dataset, yes = cfg.dataset, cfg.yes
    store = Store(require_store(cfg.store, "drop"))
    store.require()
    with store_lock(store.root, "stcstore drop"):
        store.require_dataset(dataset)
        texts, sets, fits, size = contents(store, dataset)
        if not yes:
            raise StcError(f"dropping dataset {dataset!r} would delete {texts:,} texts, {sets} feature sets and {fits} "
                           f"fits ({size / 2**20:,.1f} MiB) from {store.root}; run again with --yes to drop it")
        discard(stash(store, dataset))
    return DropResult(dataset, str(store.root), texts, sets, fits, size)
