"""What an extract can know without loading its model: that it has nothing to do.

A feature set's identity needs the loaded model (its weights' hash, its configuration). But when the model
comes from a local folder (the packaged default included), a new feature set also records that folder's
files (size and modification time of each) and the options that shaped it (`request`). A later extract with
the same options, over a folder whose files are unchanged, belongs to that feature set; when every text of
the dataset already has features there, the run ends before the model is loaded (a nightly no-op took
7.6 s, most of it loading MiniLM). Any doubt (a hub model, a changed file, other options, a feature set
written before 0.3) and the model is loaded as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..models.loading import resolve_source
from ..store.chunks import read_chunk_columns
from ..store.store import FeatureSet, Store

if TYPE_CHECKING:
    from .config import ExtractConfig

MAX_STAMPED_FILES = 1_000  # a model folder with more files is not stamped (the shortcut is then never taken)


def model_files(cfg: "ExtractConfig") -> dict[str, Any] | None:
    """{"source": the resolved folder, "files": {relative path: [size, mtime_ns]}} of a local model, else None."""
    source = Path(resolve_source(cfg.model))
    if not source.is_dir():
        return None
    files = {}
    for p in sorted(source.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts):
            st = p.stat()
            files[str(p.relative_to(source))] = [st.st_size, st.st_mtime_ns]
            if len(files) > MAX_STAMPED_FILES:
                return None
    return {"source": str(source), "files": files}


def request(cfg: "ExtractConfig") -> dict[str, Any]:
    """The options that decide a feature set's values, as given."""
    req = {"layers": cfg.layers, "kinds": list(cfg.kinds), "poolings": list(cfg.poolings),
           "max_length": cfg.max_length, "dtype": cfg.dtype, "torch_dtype": cfg.torch_dtype,
           "gguf_file": cfg.gguf_file}
    if cfg.stats_only:
        req["stats_only"] = True
    return req


def unchanged_feature_set(store: Store, cfg: "ExtractConfig") -> FeatureSet | None:
    """The feature set an extract with these options over the same, unchanged model files would extend."""
    stamp = model_files(cfg)
    if stamp is None:
        return None
    for fs in store.feature_sets(cfg.dataset):
        if fs.manifest.request == request(cfg) and fs.manifest.model_files == stamp:
            return fs
    return None


def present_ids(fs: FeatureSet) -> set[str]:
    """The ids that have features in the feature set."""
    done: set[str] = set()
    for chunk in fs.chunks():
        done.update(read_chunk_columns(chunk, ["id"]).column("id").to_pylist())
    return done


def missing_texts(store: Store, dataset: str, done: set[str]) -> int:
    """Texts of the dataset whose id is not in `done`."""
    return sum(x not in done for b in store.text_batches(dataset, ["id"]) for x in b.column("id").to_pylist())
