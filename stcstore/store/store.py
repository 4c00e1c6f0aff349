"""The on-disk store: texts, rejects and pooled features, and the Python read API.

Layout (partition keys and column names are API, see README "Store layout"; schemas in core.schemas)::

    STORE/store.json
    STORE/ingest/dataset=NAME/batch=NNNNNN/texts.parquet     id, text, label, split, content_hash, source, line, ...
    STORE/ingest/dataset=NAME/batch=NNNNNN/rejects.parquet   source, line, id, reason, raw, ingested_at
    STORE/ingest/dataset=NAME/batch=NNNNNN/source.parquet    one row: the ingested file (the ingest log)
    STORE/features/dataset=NAME/fs=FSID/featureset.json     fingerprint + config of one feature set
    STORE/features/dataset=NAME/fs=FSID/chunk-NNNNNN/features.arrow   Arrow IPC, uncompressed:
            id, split, label, then one FixedSizeList<float16>[width] column per block "kind.pooling.layer"
    STORE/features/dataset=NAME/fs=FSID/chunk-NNNNNN/stats.parquet    per-chunk neuron sufficient statistics
    STORE/features/dataset=NAME/fs=FSID/chunk-NNNNNN/int8.arrow       `--dtype int8` only: each column's (lo, step)
            (its features.arrow holds FixedSizeList<int8> codes, zstd-compressed; `--stats-only`: id, split, label)

One ingested file is one batch directory and one feature chunk is one chunk directory; each appears
only by an atomic rename once complete, so a reader (or a resumed run) never sees half of either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..core import schemas
from ..core.atomic import write_json_atomic
from ..core.errors import StcError
from ..core.paths import store_around
from ..core.names import DEFAULT_MODEL, DEFAULT_MODEL_HUB_ID, FeatureBlock, check_name
from .chunks import decode_int8, fsl_to_numpy, read_chunk_columns, read_int8_scales
from .featureset import FEATURE_FORMAT_VERSION, MANIFEST_NAME, FeatureSet, FeatureSetManifest  # noqa: F401 (API)

if TYPE_CHECKING:
    import polars

STORE_FORMAT = "stcstore-store"
STORE_VERSION = 1
FIT_TABLES_VERSION = 1  # of STORE/fits/*/{probes,aggregates}.parquet (Parquet metadata; 0.1.0 wrote none: 1)
FIT_TABLES_KEY = b"stcstore.fit_tables_version"
# Tables `Store.table` returns; each is also a view of `stcstore sql`.
TABLES = ("texts", "rejects", "sources", "predictions", "probes", "aggregates", "neuron_stats", "feature_sets")


class Store:
    """A store directory. Reads never lock; writers (ingest, extract, fit) take the store lock."""

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)

    # ------------------------------------------------------------------ layout
    def ensure(self) -> None:
        meta = self.root / "store.json"
        if meta.exists():
            self._check_manifest()
            return
        if self.root.exists() and any(p.name != ".lock" for p in self.root.iterdir()):
            raise StcError(f"{self.root} exists, is not empty and is not an stcstore store; pick an empty or new --store")
        self.check_location()
        write_json_atomic(meta, {"format": STORE_FORMAT, "version": STORE_VERSION})

    def check_location(self) -> None:
        """A new store never lies inside another (its files would be mixed into the outer store's)."""
        if (self.root / "store.json").exists():
            return
        outer = store_around(self.root)
        if outer is not None:
            raise StcError(f"--store {self.root} lies inside the store {outer}: a new store there would be mixed "
                           f"into its files. Pick a path outside it")

    def require(self) -> None:
        """Refuse a directory that is not a store, or a store of a newer format than this stcstore reads."""
        if not (self.root / "store.json").exists():
            raise StcError(f"{self.root} is not an stcstore store (no store.json). Create one with `stcstore ingest`.")
        self._check_manifest()

    def _check_manifest(self) -> None:
        meta = self.root / "store.json"
        try:
            info = json.loads(meta.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StcError(f"{meta} is not valid JSON ({exc}); the store's manifest is damaged") from None
        if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
            raise StcError(f"{self.root} holds a {meta.name} that is not an stcstore store; pick another --store")
        if not isinstance(info.get("version"), int) or info["version"] > STORE_VERSION:
            raise StcError(f"store {self.root} has format version {info.get('version')!r}; this stcstore reads "
                           f"version {STORE_VERSION} and older: upgrade stcstore")

    def table_dir(self, table: str, dataset: str) -> Path:
        return self.root / table / f"dataset={check_name(dataset, 'dataset')}"

    def ingest_dir(self, dataset: str) -> Path:
        return self.table_dir("ingest", dataset)

    def features_dir(self, dataset: str) -> Path:
        return self.table_dir("features", dataset)

    def datasets(self) -> list[str]:
        base = self.root / "ingest"
        return sorted(p.name.split("=", 1)[1] for p in base.glob("dataset=*")) if base.exists() else []

    def label_names(self, dataset: str) -> dict[str, str]:
        """The display names of the dataset's labels (`ingest --label-names`), {} when none were given."""
        path = self.ingest_dir(dataset) / "label_names.json"
        if not path.exists():
            return {}
        names = json.loads(path.read_text())
        if not isinstance(names, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
            raise StcError(f"{path} is not a JSON object of label -> name strings; fix or delete it")
        return names

    def set_label_names(self, dataset: str, names: dict[str, str]) -> dict[str, str]:
        """Add or change label display names (atomic; call under the store lock); returns all of them."""
        merged = {**self.label_names(dataset), **names}
        write_json_atomic(self.ingest_dir(dataset) / "label_names.json", merged)
        return merged

    def require_dataset(self, dataset: str) -> None:
        """Refuse a dataset the store holds neither texts nor features of, naming those it holds."""
        have = sorted(set(self.datasets()) | {p.name.split("=", 1)[1] for p in (self.root / "features").glob("dataset=*")})
        if dataset not in have:
            raise StcError(f"store {self.root} has no dataset {dataset!r} (it has: {', '.join(have) or 'none'}); "
                           f"check --dataset, or run `stcstore ingest` first")

    # ------------------------------------------------------------------ texts
    def _parquet_table(self, table: str, dataset: str, schema: pa.Schema, columns: list[str] | None,
                       filter_expr=None) -> pa.Table:
        files = sorted(str(p) for p in self.ingest_dir(dataset).glob(f"batch=*/{table}.parquet"))
        if not files:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        return pads.dataset(files, schema=schema, format="parquet").to_table(columns=columns, filter=filter_expr)

    def texts(self, dataset: str, columns: list[str] | None = None, filter_expr=None) -> pa.Table:
        """The texts table of one dataset, in ingest order (by `seq`)."""
        t = self._parquet_table("texts", dataset, schemas.TEXTS, columns if columns is None or "seq" in columns
                                else columns + ["seq"], filter_expr)
        t = t.sort_by("seq")
        return t if columns is None else t.select(columns)

    def text_batches(self, dataset: str, columns: list[str], rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The texts of one dataset in ingest order, streamed: one ingest batch file at a time, `rows` rows
        per record batch (batch files hold consecutive seq ranges, each written in seq order)."""
        for f in sorted(self.ingest_dir(dataset).glob("batch=*/texts.parquet")):
            yield from pq.ParquetFile(f).iter_batches(batch_size=rows, columns=columns)

    def text_count(self, dataset: str) -> int:
        """How many texts a dataset holds, from the Parquet footers only."""
        return sum(pq.ParquetFile(f).metadata.num_rows
                   for f in self.ingest_dir(dataset).glob("batch=*/texts.parquet"))

    def rejects(self, dataset: str) -> pa.Table:
        return self._parquet_table("rejects", dataset, schemas.REJECTS, None)

    def sources(self, dataset: str) -> pa.Table:
        return self._parquet_table("source", dataset, schemas.SOURCES, None)

    # ------------------------------------------------------------------ features
    def feature_sets(self, dataset: str) -> list[FeatureSet]:
        """The dataset's feature sets, each manifest read and checked (a damaged or newer one is an error)."""
        return [FeatureSet.read(p) for p in sorted(self.features_dir(dataset).glob("fs=*"))
                if (p / MANIFEST_NAME).exists()]

    def feature_set(self, dataset: str, model: str, kind: str | None = None, pooling: str | None = None,
                    layer: int | None = None, values: bool = True) -> FeatureSet:
        """The one feature set of `dataset` for `model` (name as given to extract, its resolved path, or a
        feature-set id prefix of at least 6 hex digits)
        that holds the block (kind, pooling, layer). Ambiguity is an error, never a silent pick. With `values`
        (what fit, score and the read API need) a stats-only set (`extract --stats-only`) is never picked; one
        that is the only match is refused, saying what it can and cannot do."""
        sets = self.feature_sets(dataset)
        if not sets:
            self.require_dataset(dataset)
            raise StcError(f"dataset {dataset!r} in store {self.root} has no features yet; run `stcstore extract`")
        wanted = DEFAULT_MODEL_HUB_ID if model == DEFAULT_MODEL else model
        as_id = len(model) >= 6 and all(c in "0123456789abcdef" for c in model)
        match = [s for s in sets if s.model == wanted or (as_id and s.id.startswith(model))
                 or s.manifest.model.source == model]
        if values:
            with_values = [s for s in match if not s.manifest.stats_only]
            if not with_values and match:
                match[0].require_values()
            match = with_values
        if kind is not None:
            match = [s for s in match if s.has(kind, pooling, layer)]  # type: ignore[arg-type]
        if len(match) == 1:
            return match[0]
        listing = "\n".join(f"  {s.id[:12]}  model={s.model}  max_length={s.manifest.max_length}"
                            f"  columns={len(s.blocks)}" + ("  (statistics only)" if s.manifest.stats_only else "")
                            for s in sets)
        what = f"model {model!r}" + (f" with block {kind}.{pooling}.{layer}" if kind else "")
        if not match:
            raise StcError(f"no feature set of dataset {dataset!r} for {what}. Feature sets in the store:\n{listing}")
        raise StcError(f"{len(match)} feature sets of dataset {dataset!r} match {what}; pass a feature-set id "
                       f"(or a unique prefix of one) as the model:\n{listing}")

    def check_fit_tables(self) -> None:
        """Refuse fit tables of a format this stcstore cannot read (a newer stcstore wrote them)."""
        for f in sorted((self.root / "fits").glob("dataset=*/fit=*/*.parquet")):
            meta = pq.read_schema(f).metadata or {}
            raw = meta.get(FIT_TABLES_KEY, b"1")
            if not raw.isdigit() or int(raw) > FIT_TABLES_VERSION:
                raise StcError(f"{f} has fit-table format {raw.decode(errors='replace')!r}; this stcstore reads format "
                               f"{FIT_TABLES_VERSION} and older: upgrade stcstore")

    def chunk_meta(self, fs: FeatureSet) -> list[pa.Table]:
        """Per chunk, in chunk order: the (id, split, label) columns. Row plans index into these."""
        return [read_chunk_columns(c, ["id", "split", "label"]) for c in fs.chunks()]

    def split_plan(self, fs: FeatureSet, split: str | None) -> list[np.ndarray | None]:
        """Per chunk, the row indices of one split (None: every row)."""
        plan: list[np.ndarray | None] = []
        for meta in self.chunk_meta(fs):
            plan.append(None if split is None else
                        np.flatnonzero(meta.column("split").to_numpy(zero_copy_only=False) == split))
        return plan

    def gather(self, fs: FeatureSet, column_picks: list[tuple[str, np.ndarray | None]],
               plan: list[np.ndarray | None], dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stream chunks; for each (column, neuron indices or None for all) copy the planned rows into
        one preallocated matrix of `dtype` (float32; the stored dtype keeps the values as stored). plan: per
        chunk, the row indices to take (None: all rows; an empty array skips the chunk).

        Returns (ids [n], X [n, sum of widths], labels [n]). Peak heap = the output; chunk columns are
        memory-mapped."""
        fs.require_values()
        chunks = fs.chunks()
        if len(plan) != len(chunks):
            raise StcError(f"feature set {fs.id[:12]} changed while being read (chunks {len(chunks)}, plan {len(plan)})")
        # chunk metadata only of the chunks read (a plan that skips most chunks reads few)
        metas = [None if r is not None and len(r) == 0 else read_chunk_columns(c, ["id", "split", "label"])
                 for c, r in zip(chunks, plan)]
        sizes = [len(r) if r is not None else m.num_rows for m, r in zip(metas, plan)]  # type: ignore[union-attr]
        n = sum(sizes)
        widths = [len(idx) if idx is not None else fs.width(FeatureBlock.parse(col).kind) for col, idx in column_picks]
        coded = fs.manifest.dtype == "int8"
        if coded and np.dtype(dtype) != np.float32:
            raise StcError(f"feature set {fs.id[:12]} stores int8 codes: read them as float32")
        X = np.empty((n, sum(widths)), dtype=dtype)
        ids: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        r0 = 0
        for chunk, meta, rows, size in zip(chunks, metas, plan, sizes):
            if size == 0:
                continue
            r1 = r0 + size
            table = read_chunk_columns(chunk, [c for c, _ in column_picks])
            scales = read_int8_scales(chunk, [c for c, _ in column_picks]) if coded else {}
            c0 = 0
            for (col, idx), w in zip(column_picks, widths):
                block = fsl_to_numpy(table.column(col))
                if idx is None:
                    part = block if rows is None else block[rows]
                else:
                    part = block[:, idx] if rows is None else block[np.ix_(rows, idx)]
                if coded:  # int8 codes -> the values they stand for (float32)
                    decode_int8(part, scales[col] if idx is None else scales[col][:, idx], out=X[r0:r1, c0:c0 + w])
                else:
                    X[r0:r1, c0:c0 + w] = part
                c0 += w
            sel = meta if rows is None else meta.take(rows)  # type: ignore[union-attr]  (read for every chunk with rows)
            ids.append(sel.column("id").to_numpy(zero_copy_only=False))
            labels.append(sel.column("label").to_numpy(zero_copy_only=False))
            r0 = r1
        cat = (lambda parts: np.concatenate(parts) if parts else np.array([], dtype=object))
        return cat(ids), X, cat(labels)

    def gather_by_chunk(self, fs: FeatureSet, column_picks: list[tuple[str, np.ndarray | None]],
                        plan: list[np.ndarray | None], dtype: type = np.float32) -> Iterator[tuple[int, np.ndarray]]:
        """`gather`, one store chunk at a time: (chunk index, X of its planned rows) for every chunk with rows,
        in plan order. Memory holds one chunk's rows, whatever the plan's size."""
        fs.require_values()
        skip = np.array([], dtype=np.int64)
        for i, rows in enumerate(plan):
            if rows is not None and len(rows) == 0:
                continue
            yield i, self.gather(fs, column_picks, [rows if j == i else skip for j in range(len(plan))], dtype)[1]

    def gather_split(self, fs: FeatureSet, column_picks: list[tuple[str, np.ndarray | None]], split: str | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`gather` of one split's rows (None: all rows), in ingest order."""
        return self.gather(fs, column_picks, self.split_plan(fs, split))

    def matrix(self, dataset: str, model: str, kind: str, pooling: str, layer: int, split: str | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One (kind, pooling, layer) block of one split -> (ids [n], X [n, width] float32, y [n] labels).

        Rows come in ingest order whatever the chunking. `split=None` returns every row."""
        fs = self.feature_set(dataset, model, kind, pooling, layer)
        return self.gather_split(fs, [(f"{kind}.{pooling}.{layer}", None)], split)

    def columns(self, dataset: str, model: str, kind: str, pooling: str, neurons: dict[int, Iterable[int]],
                split: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chosen neurons of many layers -> (ids [n], X [n, sum of neurons] float32, y [n]).

        Columns are ordered by layer, then by the given neuron order within a layer."""
        if not neurons:
            raise StcError("columns(): give at least one layer with neuron indices")
        fs = self.feature_set(dataset, model, kind, pooling, min(neurons))
        picks = neuron_picks(fs, [(kind, pooling, layer, neurons[layer]) for layer in sorted(neurons)])
        return self.gather_split(fs, picks, split)

    # ------------------------------------------------------------------ SQL, as polars DataFrames
    def sql(self, query: str, params: dict[str, Any] | None = None) -> "polars.DataFrame":
        """Run one query with DuckDB over the store's views (those of `stcstore sql`, with its read-only
        session); `params` bind `$name` placeholders, like `stcstore sql --param`."""
        from .sql import StoreSQL

        with StoreSQL(self) as db:
            return db.frame(query, params)

    def table(self, name: str, dataset: str | None = None) -> "polars.DataFrame":
        """One of the store's tables (`TABLES`) as a polars DataFrame, optionally of one dataset only
        (for `predictions`: the predictions of that dataset's text ids)."""
        if name not in TABLES:
            raise StcError(f"no table {name!r}; the tables are {', '.join(TABLES)}")
        if dataset is None:
            return self.sql(f"SELECT * FROM {name}")  # name is one of TABLES, never user text
        where = ("id IN (SELECT id FROM texts WHERE dataset = $dataset)" if name == "predictions"
                 else "dataset = $dataset")
        return self.sql(f"SELECT * FROM {name} WHERE {where}", {"dataset": dataset})


def neuron_picks(fs: FeatureSet, groups: Iterable[tuple[str, str, int, Iterable[int]]]
                 ) -> list[tuple[str, np.ndarray]]:
    """[(kind, pooling, layer, neuron indices)] -> checked column picks for `Store.gather`."""
    picks = []
    for kind, pooling, layer, idx_list in groups:
        if not fs.has(kind, pooling, layer):
            raise StcError(f"feature set {fs.id[:12]} has no block {kind}.{pooling}.{layer}")
        idx = np.asarray(list(idx_list), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= fs.width(kind)):
            raise StcError(f"neuron index out of range for {kind}.{pooling}.{layer} (width {fs.width(kind)})")
        picks.append((f"{kind}.{pooling}.{layer}", idx))
    return picks
