"""Synthetic feature sets: stores of any shape written without a model, for benchmarks and tests.

`write_synthetic(root, ...)` writes texts-less feature chunks in the store layout (the same `write_chunk`
as extract), so `fit`, `sql` and the fit tables work on them. The label signal is spread densely, as in
real models: every neuron of a block carries a little of it (a random dense direction, scaled so that one
block alone is a weak-to-fair classifier) and the strength peaks in the middle layers, instead of being
planted in a handful of neurons that a probe would find trivially. GPT2-XL's shape is
`layers=48, widths={"hidden": 1600, "ffn": 6400}` (bench/scale.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..core.names import KINDS, POOLINGS, FeatureBlock
from ..core.schemas import NEURON_STATS
from ..store.featureset import FEATURE_FORMAT_VERSION, MANIFEST_NAME, FeatureSet, FeatureSetManifest
from ..store.store import Store
from .chunking import write_chunk


class _NoStats:
    def table(self) -> pa.Table:
        return NEURON_STATS.empty_table()


def synthetic_blocks(layers: int, kinds: tuple[str, ...] = KINDS, poolings: tuple[str, ...] = POOLINGS
                     ) -> list[FeatureBlock]:
    """hidden.*.0..layers (the embeddings and every block's output) and ffn.*.0..layers-1, as extract."""
    return [FeatureBlock(k, p, layer) for k in kinds for p in poolings
            for layer in range(layers + 1 if k == "hidden" else layers)]


def write_synthetic(root: str | Path, dataset: str, rows: int, layers: int, widths: dict[str, int],
                    kinds: tuple[str, ...] = KINDS, poolings: tuple[str, ...] = POOLINGS, n_classes: int = 2,
                    signal: float = 2.0, shared: float = 1.0, splits: tuple[float, float] = (0.75, 0.125), rows_per_chunk: int = 2000,
                    seed: int = 0, model: str = "synthetic") -> FeatureSet:
    """Write one feature set of `rows` rows (train / validation / test by the `splits` fractions, the rest
    test) into the store at `root`. `signal` is the distance between class means, in noise standard
    deviations along the class direction, of the strongest layer (the middle one). `shared` is the standard
    deviation of a per-row noise along the class directions that every layer shares (layers of a real model
    are strongly correlated, so aggregating layers does not average everything away)."""
    rng = np.random.default_rng(seed)
    Store(root).ensure()
    blocks = synthetic_blocks(layers, kinds, poolings)
    fs_id = f"{seed:04x}{rows:012x}"[-16:]
    no_weights = "0" * 64  # no model: classifiers fitted here load, and score stored features only
    fp = {"model": model, "max_length": 64, "dtype": "float16", "torch_dtype": "float32", "n_layers": layers,
          "columns": [b.column for b in blocks], "feature_format": FEATURE_FORMAT_VERSION,
          "model_type": "synthetic", "adapter": "synthetic", "weights_sha256": no_weights,
          "tokenizer_sha256": no_weights, "config_sha256": no_weights, "hidden_size": widths.get("hidden", 0),
          "ffn_size": widths.get("ffn", 0)}
    path = Path(root) / "features" / f"dataset={dataset}" / f"fs={fs_id}"
    manifest = FeatureSetManifest({"id": fs_id, "dataset": dataset, "fingerprint": fp, "columns": fp["columns"],
                                   "widths": {k: widths[k] for k in kinds}, "chunk_rows": rows_per_chunk})
    manifest.write(path / MANIFEST_NAME)
    fs = FeatureSet(path, manifest)
    # per block: a dense unit direction per class, and a strength that peaks in the middle layers
    directions = {b.column: rng.standard_normal((n_classes, widths[b.kind])).astype(np.float32) for b in blocks}
    for d in directions.values():
        d /= np.linalg.norm(d, axis=1, keepdims=True)
    strength = {b.column: signal * np.exp(-((b.layer / max(layers, 1) - 0.5) ** 2) / 0.08) for b in blocks}
    y = rng.integers(0, n_classes, rows)
    cut = np.cumsum([int(rows * splits[0]), int(rows * splits[1])])
    split = np.where(np.arange(rows) < cut[0], "train", np.where(np.arange(rows) < cut[1], "validation", "test"))
    perm = rng.permutation(rows)  # splits interleaved across chunks, as ingest of several files would be
    split = split[perm]
    for c, r0 in enumerate(range(0, rows, rows_per_chunk)):
        sl = slice(r0, min(rows, r0 + rows_per_chunk))
        yc = y[sl]
        z = rng.standard_normal((len(yc), n_classes), dtype=np.float32) * shared  # shared by every layer
        meta = pa.table({"id": [f"{dataset}-{i}" for i in range(sl.start, sl.stop)], "split": split[sl],
                         "label": [f"c{k}" for k in yc]})
        bufs = {}
        for b in blocks:
            x = rng.standard_normal((len(yc), widths[b.kind]), dtype=np.float32)
            x += strength[b.column] / 2 * directions[b.column][yc] + z @ directions[b.column]
            bufs[b.column] = x.astype(np.float16)
        write_chunk(fs, c, meta, bufs, blocks, "float16", _NoStats())  # type: ignore[arg-type]
    return fs
