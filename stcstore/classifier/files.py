"""A classifier directory on disk: plain data, `manifest.json` + `.npy` arrays, never a pickle.

Arrays are written with their SHA-256 in the manifest and read with `numpy.load(allow_pickle=False)`, then
checked against it, so loading can never run code and a damaged or edited file is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.atomic import check_output_dir, commit_replacing, staging, write_json_atomic
from ..core.errors import StcError
from ..core.fingerprint import file_sha256
from .classifier import Classifier
from .manifest import array_names, check_header, check_manifest

if TYPE_CHECKING:
    from ..models.loading import LoadedModel


def save_classifier(manifest: dict[str, Any], arrays: dict[str, np.ndarray], final: Path, force: bool
                    ) -> dict[str, Any]:
    """Write manifest + arrays into a temp directory renamed to `final` (replacing it only with force);
    returns the manifest as written (with the arrays' shapes and checksums)."""
    check_output_dir(final, force)
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


def load_classifier(path: str | Path, model: "str | LoadedModel | None" = None,
                    gguf_file: str | None = None, device: str = "cpu") -> Classifier:
    """Load a classifier directory. `model`: a LoadedModel or a model name/path to score texts with; it is
    checked against the classifier's model fingerprint now. Without it, the fitted model is loaded (and
    checked) on the first text prediction, on `device`; scoring stored features never loads a model."""
    root = Path(path)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise StcError(f"{root} is not a classifier directory (no manifest.json); create one with `stcstore fit`")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        check_header(manifest)
        check_manifest(manifest)
        arrays = {name: _load_array(root, name, manifest["arrays"][name]) for name in array_names(manifest)}
        clf = Classifier(manifest, arrays)  # checks the arrays against the manifest
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise StcError(f"{mpath} is not valid UTF-8 JSON ({type(exc).__name__}); the classifier directory is "
                       f"damaged") from None
    except StcError as exc:
        raise StcError(f"classifier {root} refused: {exc}") from None
    clf.path = root
    clf.device = device
    if model is not None:
        clf.attach(clf.load_model(model, device=device, gguf_file=gguf_file) if isinstance(model, str) else model)
    return clf


def _load_array(root: Path, name: str, spec: dict[str, Any]) -> np.ndarray:
    """One array, checked against its manifest entry: the file's checksum first, then a plain float64 .npy
    (allow_pickle=False: an object array or a pickle is refused, never run)."""
    f = root / spec["file"]
    if not f.is_file():
        raise StcError(f"{f.name} is missing; the classifier directory is incomplete")
    if file_sha256(f) != spec["sha256"]:
        raise StcError(f"{f.name} does not match the checksum in manifest.json; the file was changed or damaged")
    try:
        arr = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise StcError(f"{f.name} is not a plain numeric .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 or list(arr.shape) != spec["shape"]:
        what = f"dtype {arr.dtype} and shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise StcError(f"{f.name} holds {what}; the manifest says float64 {spec['shape']}")
    return arr
