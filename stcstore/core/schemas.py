"""Every Arrow schema that is API: the store's tables, the fit's tables, predictions and report outputs.

Column names, types and order here are what users query (the SQL views are written against them) and
what older stores hold, so they change only with a format version.
"""

from __future__ import annotations

import pyarrow as pa

UTC_TIME = pa.timestamp("us", tz="UTC")

# ---------------------------------------------------------------- ingest: STORE/ingest/dataset=D/batch=N/
TEXTS = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("label", pa.string()), ("split", pa.string()),
    ("content_hash", pa.string()), ("source", pa.string()), ("line", pa.int64()), ("seq", pa.int64()),
    ("is_retweet", pa.bool_()), ("ingested_at", UTC_TIME),
])
REJECTS = pa.schema([
    ("source", pa.string()), ("line", pa.int64()), ("id", pa.string()), ("reason", pa.string()),
    ("raw", pa.string()), ("ingested_at", UTC_TIME),
])
SOURCES = pa.schema([  # the ingest log: one row per ingested file
    ("source", pa.string()), ("sha256", pa.string()), ("config_hash", pa.string()), ("format", pa.string()),
    ("rows_read", pa.int64()), ("ingested", pa.int64()), ("duplicates", pa.int64()), ("rejected", pa.int64()),
    ("seq_start", pa.int64()), ("seq_end", pa.int64()), ("ingested_at", UTC_TIME),
])

# ---------------------------------------------------------------- features: STORE/features/dataset=D/fs=F/
CHUNK_META = [pa.field("id", pa.string(), nullable=False), pa.field("split", pa.string(), nullable=False),
              pa.field("label", pa.string())]


def chunk_schema(columns: list[tuple[str, int]], value_type: pa.DataType) -> pa.Schema:
    """features.arrow: id, split, label, then one non-nullable FixedSizeList<value_type>[width] per block."""
    return pa.schema(CHUNK_META + [pa.field(name, pa.list_(value_type, width), nullable=False)
                                   for name, width in columns])


NEURON_STATS = pa.schema([  # per-chunk sufficient statistics (stats.parquet), merged by the neuron_stats view
    ("kind", pa.string()), ("pooling", pa.string()), ("layer", pa.int32()), ("neuron", pa.int32()),
    ("split", pa.string()), ("label", pa.string()), ("n", pa.int64()), ("sum", pa.float64()),
    ("sumsq", pa.float64()), ("min", pa.float32()), ("max", pa.float32()), ("npos", pa.int64()),
])
FEATURE_SETS = pa.schema([  # the feature_sets view: one row per feature set, from its featureset.json
    ("dataset", pa.string()), ("feature_set", pa.string()), ("model", pa.string()), ("model_type", pa.string()),
    ("adapter", pa.string()), ("weights_sha256", pa.string()), ("max_length", pa.int64()), ("dtype", pa.string()),
    ("torch_dtype", pa.string()), ("n_layers", pa.int64()), ("hidden_size", pa.int64()), ("ffn_size", pa.int64()),
    ("n_columns", pa.int64()), ("chunks", pa.int64()), ("rows", pa.int64()), ("bytes", pa.int64()),
    ("stcstore_version", pa.string()),
    ("stats_only", pa.bool_()),  # `extract --stats-only`: neuron statistics, no values (fit and score need values)
])

# ---------------------------------------------------------------- fit: STORE/fits/dataset=D/fit=ID/
# validation scores of a regression target (`fit --task regression`); the classification ones are null then
REGRESSION_COLUMNS = [(f"val_{m}", pa.float64()) for m in ("r2", "mae", "pearson", "spearman", "mse")]
PROBES = pa.schema([
    ("fit_id", pa.string()), ("feature_set", pa.string()), ("kind", pa.string()), ("pooling", pa.string()),
    ("layer", pa.int64()), ("step", pa.int64()), ("lam", pa.float64()), ("C", pa.float64()),
    ("n_nonzero", pa.int64()), ("objective", pa.float64()), ("val_accuracy", pa.float64()),
    ("val_macro_f1", pa.float64()), ("val_log_loss", pa.float64()), ("iterations", pa.int64()),
    ("seconds", pa.float64()), ("chosen", pa.bool_()),
    *REGRESSION_COLUMNS,  # null for classification (and in tables written before 0.3)
    ("probe", pa.string()),  # lr | slp (null in tables written before 0.3: lr); slp rows: step = epoch
])
AGGREGATES = pa.schema([
    ("fit_id", pa.string()), ("feature_set", pa.string()), ("kind", pa.string()), ("pooling", pa.string()),
    ("eta", pa.float64()), ("l_temp", pa.int64()), ("n_neurons", pa.int64()), ("n_nonzero", pa.int64()),
    ("lam", pa.float64()), ("C", pa.float64()), ("val_accuracy", pa.float64()), ("val_macro_f1", pa.float64()),
    ("val_log_loss", pa.float64()), ("train_accuracy", pa.float64()), ("path_points", pa.int64()),
    ("seconds", pa.float64()), ("chosen", pa.bool_()),
    *REGRESSION_COLUMNS,
    ("aggregator", pa.string()),  # lr | consolidation (null in tables written before 0.3: lr)
])

# ---------------------------------------------------------------- score: predictions (file or run_date=... table)
PREDICTIONS = pa.schema([
    ("id", pa.string()), ("classifier", pa.string()), ("classifier_fingerprint", pa.string()),
    ("label", pa.string()), ("probabilities", pa.list_(pa.float64())), ("scored_at", UTC_TIME),
    ("text_hash", pa.string()),  # content hash of the text scored (null in files written by 0.1.0)
    ("value", pa.float64()),  # a regression classifier's predicted value (label and probabilities null then)
])

# ---------------------------------------------------------------- report: OUT/neurons.parquet
REPORT_NEURONS = pa.schema([
    ("rank", pa.int32()), ("kind", pa.string()), ("pooling", pa.string()), ("layer", pa.int32()),
    ("neuron", pa.int32()), ("column", pa.int32()), ("importance", pa.float64()), ("weights", pa.list_(pa.float64())),
    ("toward", pa.string()), ("effect_size", pa.float64()),
    ("label_stats", pa.list_(pa.struct([("label", pa.string()), ("count", pa.int64()), ("mean", pa.float64()),
                                         ("std", pa.float64())]))),
])
