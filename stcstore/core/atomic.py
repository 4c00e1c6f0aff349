"""Atomic writes (temp name + rename), the writer lock, and the rules for output directories."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import StcError, StoreLockedError


@contextmanager
def staging(final: Path, directory: bool = False) -> Iterator[Path]:
    """A temp sibling of `final` to write into (a directory when asked); if anything fails before the
    caller commits it (a full disk, a bad row, an interrupt), the temp is removed and the error goes on."""
    tmp = tmp_name(final)
    if directory:
        tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def tmp_name(final: Path) -> Path:
    """A hidden sibling name; readers glob only final names, so a temp file is never visible as data."""
    return final.with_name(f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    if path.is_dir():
        fsync_dir(path)


def commit(tmp: Path, final: Path) -> None:
    """Make a fully written temp file or directory visible under its final name, atomically."""
    fsync_tree(tmp)
    if tmp.is_file():
        os.replace(tmp, final)  # a file (a manifest) may atomically replace an older version
    else:
        os.rename(tmp, final)  # a directory never replaces one: an existing chunk or batch is an error
    fsync_dir(final.parent)


def commit_replacing(tmp: Path, final: Path) -> bool:
    """Commit a temp directory under `final`, replacing an existing one (moved aside, then deleted).
    Returns whether something was replaced. Callers decide whether replacing is allowed."""
    if not final.exists():
        commit(tmp, final)
        return False
    old = tmp_name(final)
    final.rename(old)
    commit(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return True


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with staging(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        commit(tmp, path)


def remove_stale_temps(root: Path) -> int:
    """Delete temp files/dirs left by killed writers (only call while holding the store lock)."""
    n = 0
    if not root.exists():
        return 0
    for p in list(root.rglob(".tmp-*")):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n


def remove_dead_temps(final: Path) -> int:
    """Delete temp siblings of `final` left by writers that no longer run (the pid is in the temp name).
    For outputs outside a store, where there is no store lock to make every temp stale."""
    n = 0
    for p in final.parent.glob(f".tmp-{final.name}-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[1])
            os.kill(pid, 0)
            continue  # its writer still runs
        except ProcessLookupError:
            pass
        except (ValueError, IndexError, PermissionError):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n


@contextmanager
def store_lock(root: Path, command: str) -> Iterator[None]:
    """One writer per store. flock is released by the kernel when a process dies, even by SIGKILL."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = path.read_text().strip() or "another process"
        raise StoreLockedError(
            f"store {root} is locked by {holder}. Wait for it to finish; only one writer (ingest, extract, fit, "
            f"score into a table) may write to a store at a time (reading with `stcstore sql` is always allowed)."
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({command})\n".encode(), 0)
        yield
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)


def check_output_dir(path: Path, force: bool, option: str = "--out") -> None:
    """A directory output (classifier, report) is new or empty, or replaced only with --force."""
    if path.exists() and not path.is_dir():
        raise StcError(f"{option} {path} is a file; give a directory")
    if path.exists() and any(path.iterdir()) and not force:
        raise StcError(f"{option} {path} exists and is not empty; pick a new directory or pass --force to replace it")


def write_dir(final: Path, files: dict[str, bytes], force: bool, option: str = "--out") -> None:
    """Write a directory of files that appear together: a temp directory renamed into place (an existing
    one is replaced only with force)."""
    check_output_dir(final, force, option)
    final.parent.mkdir(parents=True, exist_ok=True)
    with staging(final, directory=True) as tmp:
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
        commit_replacing(tmp, final)
