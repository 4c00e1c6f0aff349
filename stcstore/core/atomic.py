"""Atomic writes (temp name + rename), the writer lock, and the rules for output directories.

Temp names carry their writer's pid (`.tmp-NAME-PID-RAND`), so a later run can tell a live writer's temp
from a dead one's and sweep it. Replacing a directory (`--force`) swaps the new one in with one atomic
exchange where the system has it (Linux renameat2), so the old or the new directory is in place at every
instant; elsewhere the old one is first moved to `.old-NAME-PID-RAND`, which the next run puts back if
the new one never arrived.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import StcError, StoreLockedError
from .paths import check_output


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


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE). False where the
    system or file system cannot, and nothing was changed."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit_replacing(tmp: Path, final: Path) -> bool:
    """Commit a temp directory under `final`, replacing an existing one; returns whether something was
    replaced. The old or the new directory is under `final` at every instant (an atomic exchange), and
    a kill at any point leaves at most a dead writer's temp that the next run sweeps (`remove_dead_temps`,
    `remove_stale_temps`). Callers decide whether replacing is allowed."""
    if not final.exists():
        commit(tmp, final)
        return False
    fsync_tree(tmp)
    if exchange(tmp, final):  # tmp now holds the old directory
        fsync_dir(final.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        return True
    old = final.with_name(f".old-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.rename(final, old)  # until the next rename only `old` exists: the next run puts it back
    os.rename(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return True


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with staging(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        commit(tmp, path)


def _remove(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def _temp_owner(name: str) -> tuple[str, int | None]:
    """A temp's name `PREFIX-NAME-PID-RAND` -> (`PREFIX-NAME`, PID); PID None when the name holds none."""
    parts = name.rsplit("-", 2)
    try:
        return parts[0], int(parts[1])
    except (ValueError, IndexError):
        return name, None


def _restore_or_remove(old: Path) -> None:
    """A directory moved aside by a replacement that was killed: put it back if the new one never arrived."""
    final = old.with_name(_temp_owner(old.name)[0][len(".old-"):])
    if not final.exists() and not final.is_symlink():
        os.rename(old, final)
    else:
        _remove(old)


def remove_stale_temps(root: Path) -> int:
    """Delete temp files/dirs left by killed writers, and put back a directory a killed replacement moved
    aside (only call while holding the lock that every writer under `root` takes)."""
    n = 0
    if not root.exists():
        return 0
    for p in sorted(root.rglob(".tmp-*")):
        _remove(p)
        n += 1
    for p in sorted(root.rglob(".old-*")):
        _restore_or_remove(p)
        n += 1
    return n


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_dead_temps(final: Path) -> int:
    """Clean up beside an output outside a store (where no lock makes every temp stale): delete the temps
    of `final` whose writer no longer runs (the pid is in the name), and put back a directory that a killed
    replacement moved aside."""
    n = 0
    for prefix, fix in ((".tmp-", _remove), (".old-", _restore_or_remove)):
        for p in sorted(final.parent.glob(glob.escape(f"{prefix}{final.name}") + "-*")):
            owner, pid = _temp_owner(p.name)
            if pid is None or owner != f"{prefix}{final.name}" or pid_alive(pid):
                continue
            fix(p)
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


def check_output_dir(path: Path, force: bool, option: str = "--out", what: str = "classifier",
                     owned: Callable[[Path], bool] | None = None,
                     reads: tuple[tuple[str, str | Path], ...] = ()) -> None:
    """A directory output (a classifier, a report) is new or empty, or with --force an earlier output of
    the same kind (`owned`: whether an existing directory is one); never a store, inside one or around
    one, nor what the command reads (core.paths.check_output). Also cleans up what a killed earlier
    writer of `path` left beside it."""
    check_output(path, option, reads)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise StcError(f"{option} {path} is a {'link' if path.is_symlink() else 'file'}; give a directory")
    if path.parent.is_dir():
        remove_dead_temps(path)
    if path.exists() and any(path.iterdir()):
        if not force:
            raise StcError(f"{option} {path} exists and is not empty; pick a new directory or pass --force to "
                           f"replace it")
        if owned is not None and not owned(path):
            raise StcError(f"{option} {path} is not a {what} directory (it holds other files); --force replaces only "
                           f"an earlier {what}. Pick a new directory")


def write_dir(final: Path, files: dict[str, bytes], force: bool, option: str = "--out", what: str = "report",
              owned: Callable[[Path], bool] | None = None) -> None:
    """Write a directory of files that appear together: a temp directory renamed into place (an existing
    one is replaced only with force, and only when `owned` says it is an earlier output of this kind)."""
    check_output_dir(final, force, option, what, owned)
    final.parent.mkdir(parents=True, exist_ok=True)
    with staging(final, directory=True) as tmp:
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
        commit_replacing(tmp, final)
