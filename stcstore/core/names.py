"""Names that are API, and the allowed values of options, declared once (the CLI builds its choices from
here). Kept free of torch so reading a store and SQL start fast.

Layer numbering: hidden state h0 is the embedding output (the input of block 0) and h{l+1} the output of
block l; FFN activation a{l} lives inside block l. A feature block is named `kind.pooling.layer`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import StcError

DEFAULT_MODEL = "default"  # the packaged all-MiniLM-L6-v2
DEFAULT_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
KINDS = ("hidden", "ffn")
POOLINGS = ("mean", "max", "single")
# dtype of stored feature values; int8: per-neuron affine codes of the float16 values, scales per chunk
STORED_DTYPES = ("float16", "float32", "int8")
TORCH_DTYPES = ("float32", "bfloat16", "float16")  # model compute dtype
INPUT_FORMATS = ("auto", "jsonl", "csv", "parquet", "tweets")
METRICS = ("accuracy", "macro_f1")  # validation metrics every fit choice can be made on (classification)
REGRESSION_METRICS = ("r2", "mae", "pearson", "spearman")  # ... and for a regression target (mae: lower is better)
TASKS = ("classification", "regression")
PROBES = ("lr", "slp")  # per-layer probe kinds: L1 linear (the paper's), single hidden layer (appendix A.2)
# cross-layer aggregation: the paper's L1 linear model, or the tweet-analysis preprint's consolidation head
AGGREGATORS = ("lr", "consolidation")
# how fit chooses among its LR aggregates: the validation-best of each kind/pooling averaged (the default), or
# the single validation-best aggregate (0.1/0.2's rule; one sparse linear model)
SELECTIONS = ("ensemble", "best")
# adapter families (models.adapters) that are encoders: their sentence embedding is the mean-pooled last layer
# (decoders': the last real token); tests/test_models.py checks it against the adapters
ENCODER_FAMILIES = ("bert", "roberta", "distilbert")
EXPLANATIONS = ("tokens",)
SPLITS = ("train", "validation", "test")
# defaults shared by the configs and the CLI
DEFAULT_ETAS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)  # the authors' η grid
VAL_FRACTION = 0.2  # share of train carved as validation when a dataset has none
MEMORY_BUDGET_MB = 2048  # an aggregate's train matrix above this is searched on a row sample, refitted streamed
PROBE_ROWS = 20_000  # per-layer probes fit on a stratified sample of this many train rows (bench/probe_rows.py)
VAL_ROWS = 20_000  # searches score a stratified sample of this many validation rows; choices use every row
SCORE_CHUNK_ROWS = 4096  # texts per committed predictions file (score's unit of resume)
EXPLAIN_LIMIT = 200  # texts shown on a token-explanation page
REPORT_TOP, REPORT_HISTOGRAMS = 30, 8  # neurons listed / drawn as histograms in a report
BATCH_SIZE = 64  # default most texts per forward batch (extract, score)
MAX_TOKENS = 8192  # default token budget per forward batch: rows x longest row
TEXT_FIELD, LABEL_FIELD, ID_FIELD = "text", "label", "id"  # default input fields
SPLIT_FIELD = "split"  # read as each row's split when neither --split nor --split-field is given
LABEL_NAME_FIELD = "label_name"  # read as the display name of a row's label where a row has one
# A model's recorded fields (a feature set's fingerprint, a classifier's "model"): those that define what it
# computes (its identity), and those that say where it was loaded from (recorded, not part of its identity)
IDENTITY_KEYS = ("model_type", "adapter", "weights_sha256", "tokenizer_sha256", "n_layers", "hidden_size",
                 "ffn_size", "config_sha256")
LEGACY_OPTIONAL = ("config_sha256",)  # identity keys that stores and classifiers written by 0.1.0 lack
LOCATION_KEYS = ("model", "model_source", "revision")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(value: str, what: str) -> str:
    """A dataset or split name: it becomes a directory name and a partition value."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise StcError(f"{what} {value!r} is not a valid name: use letters, digits, '_', '.' or '-' "
                       f"(at most 128 characters, starting with a letter or digit)")
    return value


def check_choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise StcError(f"{option} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def check_kinds_poolings(kinds: tuple[str, ...], poolings: tuple[str, ...]) -> None:
    """Validate --kinds / --poolings values (shared by the extract and fit configs)."""
    for k in kinds:
        check_choice(k, KINDS, "--kinds")
    for p in poolings:
        check_choice(p, POOLINGS, "--poolings")
    if not kinds or not poolings:
        raise StcError("--kinds and --poolings each need at least one value")


def check_at_least(obj: object, names: tuple[str, ...], minimum: int = 1) -> None:
    """Integer options of a config that must be >= minimum when set (None means: the default)."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < minimum:
            raise StcError(f"--{name.replace('_', '-')} must be at least {minimum}")


@dataclass(frozen=True, order=True)
class FeatureBlock:
    """One (kind, pooling, layer) block of pooled features: a column of the store, `kind.pooling.layer`."""

    kind: str  # "hidden" | "ffn"
    pooling: str  # "mean" | "max" | "single"
    layer: int

    @property
    def column(self) -> str:
        return f"{self.kind}.{self.pooling}.{self.layer}"

    @classmethod
    def parse(cls, column: str) -> "FeatureBlock":
        kind, pooling, layer = column.split(".")
        return cls(kind, pooling, int(layer))


# numeric labels with more distinct values than this are values (a regression target), not classes
MAX_NUMERIC_CLASSES = 20


# What counts as a number in a label: an ASCII decimal, optionally signed, with an optional fraction and
# exponent ("3", "-0.25", "1e-3", ".5"), surrounding spaces ignored. Not: "1_0" or "١٢" (which Python's
# float() reads as 10 and 12), "nan", "inf", "0x10".
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The largest |value| a regression target may have: scores are computed in float32 (max 3.4e38), and a
# prediction must stay finite with room to spare.
MAX_TARGET = 1e30


MAX_LABEL_NAME = 200  # characters of a label's display name


def parse_label_names(text: str) -> dict[str, str]:
    """`--label-names 0=negative,1=positive` -> {"0": "negative", "1": "positive"} (a stored label, then the name
    pages and results show for it; predictions keep the stored label)."""
    names: dict[str, str] = {}
    for part in (p for p in text.split(",") if p.strip()):
        raw, sep, name = part.partition("=")
        raw, name = raw.strip(), name.strip()
        if not sep or not raw or not name or len(name) > MAX_LABEL_NAME or raw in names:
            raise StcError(f"--label-names: {part.strip()!r} is not LABEL=NAME (each label once, a name of 1 to "
                           f"{MAX_LABEL_NAME} characters); e.g. --label-names 0=negative,1=positive")
        names[raw] = name
    if not names:
        raise StcError("--label-names: give LABEL=NAME pairs, e.g. --label-names 0=negative,1=positive")
    return names


def shown(label: object, names: dict[str, str]) -> str:
    """A label as results and pages show it: "negative (0)" when it has a name, else the label itself."""
    return f"{names[str(label)]} ({label})" if str(label) in names else str(label)


def parse_number(value: object) -> float | None:
    """A stored label as a finite number, or None when it is not one (by the rule above)."""
    if not isinstance(value, str):
        return None
    s = value.strip(" \t\r\n")
    if not _NUMBER.fullmatch(s):
        return None
    x = float(s)
    return x if math.isfinite(x) else None


def labels_look_like_values(distinct: set[str]) -> bool:
    """Whether a set of distinct stored labels looks like a regression target: more than
    MAX_NUMERIC_CLASSES of them, every one a number (`parse_number`). (Fit refuses them without --task;
    extract keeps their neuron statistics per split, not per label.)"""
    if len(distinct) <= MAX_NUMERIC_CLASSES:
        return False
    return all(parse_number(v) is not None for v in distinct)


def blocks_to_run(hidden_layers: list[int], ffn_layers: list[int]) -> int:
    """How many transformer blocks a forward pass must run: h{l} needs blocks 0..l-1, a{l} blocks 0..l."""
    return max(list(hidden_layers) + [l + 1 for l in ffn_layers], default=0)
