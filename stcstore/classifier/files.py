"""A classifier directory on disk: plain data, `manifest.json` + `.npy` arrays, never a pickle.

Arrays are written with their SHA-256 in the manifest and read with `numpy.load(allow_pickle=False)`, then
checked against it, so loading can never run code and a damaged or edited file is refused.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import check_output_dir, commit_replacing, staging, write_json_atomic
from ..core.errors import StcError
from ..core.fingerprint import file_sha256, sha256_hex
from .manifest import MAX_MANIFEST_BYTES, array_names, check_header, check_manifest

NPY_HEADER_MAX = 4096  # bytes of a .npy header before the data (numpy writes 128)

def is_classifier_dir(path: Path) -> bool:
    """Whether a directory holds a classifier and nothing else (what `--force` may replace)."""
    names = [p.name for p in path.iterdir()]
    return "manifest.json" in names and all(n == "manifest.json" or n.endswith(".npy") for n in names)


def check_classifier_out(final: Path, force: bool, option: str = "--out") -> None:
    """`final` may receive a classifier: new or empty, or an earlier classifier with force; never a store or
    a path in or around one (core.atomic.check_output_dir)."""
    check_output_dir(final, force, option, "classifier", is_classifier_dir)


def save_classifier(manifest: dict[str, Any], arrays: dict[str, np.ndarray], final: Path, force: bool
                    ) -> dict[str, Any]:
    """Write manifest + arrays into a temp directory renamed to `final` (replacing an earlier classifier
    only with force); returns the manifest as written (with the arrays' shapes and checksums)."""
    check_classifier_out(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(json.dumps(manifest))
    manifest["arrays"] = {}
    with staging(final, directory=True) as tmp:
        for name in array_names(manifest):
            arr = arrays[name]
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
            manifest["arrays"][name] = {"file": f"{name}.npy", "shape": list(arr.shape), "dtype": str(arr.dtype),
                                        "sha256": file_sha256(tmp / f"{name}.npy")}
        write_json_atomic(tmp / "manifest.json", manifest)
        commit_replacing(tmp, final)
    return manifest


def read_classifier_dir(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The validated manifest and arrays of a classifier directory (`classifier.load_classifier` builds the
    classifier from them).

    Every file is a regular file inside the directory (no link), of the size its manifest implies, read
    once: nothing outside the directory is read and no file can make loading exhaust memory."""
    root = Path(path)
    mpath = root / "manifest.json"
    if not mpath.is_file() and not mpath.is_symlink():
        raise StcError(f"{root} is not a classifier directory (no manifest.json); create one with `stcstore fit`")
    try:
        manifest = json.loads(read_regular(root, "manifest.json", MAX_MANIFEST_BYTES).decode("utf-8"))
        check_header(manifest)
        check_manifest(manifest)  # also bounds every array's shape by the model and groups it records
        return manifest, {name: _load_array(root, name, manifest["arrays"][name]) for name in array_names(manifest)}
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise StcError(f"{mpath} is not valid UTF-8 JSON ({type(exc).__name__}); the classifier directory is "
                       f"damaged") from None
    except StcError as exc:
        raise StcError(f"classifier {root} refused: {exc}") from None


def read_regular(root: Path, name: str, limit: int) -> bytes:
    """The bytes of root/name: a regular file (a link is refused, never followed) of at most `limit` bytes."""
    try:
        fd = os.open(root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO never blocks
    except FileNotFoundError:
        raise StcError(f"{name} is missing; the classifier directory is incomplete") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StcError(f"{name} is a symbolic link; a classifier's files must be regular files inside its "
                           f"directory") from None
        raise
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StcError(f"{name} is not a regular file; a classifier's files must be regular files inside its "
                           f"directory")
        if info.st_size > limit:
            raise StcError(f"{name} is {info.st_size:,} bytes; its manifest allows at most {limit:,}")
        return f.read(limit + 1)


def _load_array(root: Path, name: str, spec: dict[str, Any]) -> np.ndarray:
    """One array, checked against its manifest entry (whose shape check_manifest has bounded): the file's
    size and checksum first, then a plain float64 .npy (allow_pickle=False: an object array or a pickle is
    refused, never run)."""
    data = read_regular(root, spec["file"], 8 * math.prod(spec["shape"]) + NPY_HEADER_MAX)
    if sha256_hex(data) != spec["sha256"]:
        raise StcError(f"{spec['file']} does not match the checksum in manifest.json; the file was changed or damaged")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise StcError(f"{spec['file']} is not a plain numeric .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 or list(arr.shape) != spec["shape"]:
        what = f"dtype {arr.dtype} and shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise StcError(f"{spec['file']} holds {what}; the manifest says float64 {spec['shape']}")
    return arr
