"""Every CLI option, declared once, with its default and choices taken from the library (the config
dataclasses' defaults and `stcstore.core.names`), so the CLI cannot drift from the Python API."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from stcstore.core.names import (
    BATCH_SIZE,
    DEFAULT_ETAS,
    DEFAULT_MODEL,
    EXPLAIN_LIMIT,
    EXPLANATIONS,
    ID_FIELD,
    INPUT_FORMATS,
    KINDS,
    LABEL_FIELD,
    LABEL_NAME_FIELD,
    MAX_TOKENS,
    MEMORY_BUDGET_MB,
    METRICS,
    AGGREGATORS, SELECTIONS,
    PROBES,
    REGRESSION_METRICS,
    POOLINGS,
    PROBE_ROWS,
    VAL_ROWS,
    REPORT_HISTOGRAMS,
    REPORT_TOP,
    SCORE_CHUNK_ROWS,
    STORED_DTYPES,
    TASKS,
    TEXT_FIELD,
    TORCH_DTYPES,
    VAL_FRACTION,
)


def _csv(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _floats(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give numbers separated by commas, e.g. 0.1,0.5,0.8") from None


def store(required: bool = True, exists: bool = False, help: str = "Store directory."):  # noqa: A002
    return click.option("--store", required=required, default=None, help=help, type=click.Path(file_okay=False),
                        callback=_existing_store if exists else None)


def _existing_store(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--store of a command that reads a store: a missing folder gets a way forward, not click's bare
    "Directory does not exist"."""
    if value is not None and not Path(value).is_dir():
        raise click.BadParameter(f"{value!r} is not a directory. A store is created by `stcstore ingest FILE "
                                 f"--store {value} --dataset NAME` (or `stcstore demo`); check the path")
    return value


def dataset(required: bool = True, help: str = "Dataset name inside the store."):  # noqa: A002
    return click.option("--dataset", required=required, default=None, help=help)


JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


def force(what: str = "output"):
    """--force: everywhere it means one thing, replace an existing output (`what`)."""
    return click.option("--force", is_flag=True, help=f"Replace an existing {what}.")


def out(help: str, required: bool = False, default: str | None = None):  # noqa: A002
    """--out: a directory the command writes."""
    return click.option("--out", required=required, default=default, show_default=default is not None,
                        type=click.Path(file_okay=False), help=help)


def split(help: str):  # noqa: A002
    """--split: one split of a dataset."""
    return click.option("--split", default=None, help=help)


def classifier(multiple: bool = False, help: str = "Classifier directory from `stcstore fit`."):  # noqa: A002
    return click.option("--classifier", "classifiers" if multiple else "classifier", multiple=multiple, required=True,
                        type=click.Path(file_okay=False), help=help)


def old_spelling(command: str, old: str, new: str, dest: str, flag: bool = False):
    """A hidden option for a name 0.2 used, still accepted with a note naming the new one (`renamed`)."""
    return click.option(old, dest, default=None if not flag else False, is_flag=flag, hidden=True,
                        callback=renamed(command, old, new), help=f"0.2's spelling of {new}.")


FORCE = force()
THREADS = click.option("--threads", type=click.IntRange(min=1), default=None,
                       help="torch threads [default: torch's choice].")
DEVICE = click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda:0.")
BATCH_SIZE_OPT = click.option("--batch-size", type=int, default=BATCH_SIZE, show_default=True,
                              help="Most texts per forward batch.")
MAX_TOKENS_OPT = click.option("--max-tokens", type=int, default=MAX_TOKENS, show_default=True,
                              help="Token budget per batch (texts x longest text).")
GGUF_FILE = click.option("--gguf-file", default=None, help="GGUF weights file inside the model directory.")
KINDS_OPT = click.option("--kinds", default=",".join(KINDS), show_default=True, callback=_csv,
                         help=f"Comma-separated, of: {', '.join(KINDS)}.")
POOLINGS_OPT = click.option("--poolings", default=",".join(POOLINGS), show_default=True, callback=_csv,
                            help=f"Comma-separated, of: {', '.join(POOLINGS)}.")
FORMAT = click.option("--format", "fmt", default=INPUT_FORMATS[0], show_default=True,
                      type=click.Choice(INPUT_FORMATS), help="Input format (auto: by extension and content).")
TEXT_FIELD_OPT = click.option("--text-field", default=TEXT_FIELD, show_default=True,
                              help="Field/column with the text (dotted path in JSON).")
LABEL_FIELD_OPT = click.option("--label-field", default=LABEL_FIELD, show_default=True, help="Field/column with the label.")
ID_FIELD_OPT = click.option("--id-field", default=ID_FIELD, show_default=True,
                            help="Field/column with the id; without one, the id is a hash of the text.")
MODEL = click.option("--model", default=DEFAULT_MODEL, show_default=True,
                     help="Hub name or local path; `default` is the packaged all-MiniLM-L6-v2.")
STORED_DTYPE = click.option("--dtype", default=STORED_DTYPES[0], show_default=True, type=click.Choice(STORED_DTYPES),
                            help="Stored feature dtype (int8: per-neuron codes of the float16 values, scales per "
                                 "chunk; about 0.45 of float16's bytes).")
TORCH_DTYPE = click.option("--torch-dtype", default=TORCH_DTYPES[0], show_default=True,
                           type=click.Choice(TORCH_DTYPES), help="Model compute dtype.")
METRIC = click.option("--metric", default=None, type=click.Choice(METRICS + REGRESSION_METRICS),
                      help="Validation metric that every choice is made on [default: accuracy; with --task "
                           "regression: r2]. mae: lower is better.")
PROBE = click.option("--probe", default=None, type=click.Choice(PROBES),
                     help="Per-layer probes: lr (L1 path, the paper's) or slp (one hidden layer of √width ReLU "
                          "units, early-stopped on validation; neuron importance: L2 norm of its input weights) "
                          "[default: lr; slp with --aggregator consolidation].")
AGGREGATOR = click.option("--aggregator", default="lr", show_default=True, type=click.Choice(AGGREGATORS),
                          help="Cross-layer aggregation: lr (L1 model on the kept neurons, the paper's) or "
                               "consolidation (the tweet-analysis preprint's dual-phase head: the SLP probes' "
                               "frozen first layers on the kept neurons feed a cross-layer network). "
                               "consolidation also runs the lr pipeline (LR probes, LR aggregate) and reports both; "
                               "it saves the consolidation head.")
SELECTION = click.option("--selection", default="ensemble", show_default=True, type=click.Choice(SELECTIONS),
                         help="What the LR aggregation saves: ensemble (the validation-best aggregate of each "
                              "kind/pooling, class probabilities averaged; one forward pass to the deepest L_temp; "
                              "measured to test better than the single best: docs/selection.md) or best (the "
                              "single validation-best aggregate, one sparse linear model, as in 0.1/0.2).")
TASK = click.option("--task", default=None, type=click.Choice(TASKS),
                    help="classification (labels are classes) or regression (labels are numbers) [default: "
                         "classification; numeric labels with many distinct values are refused without --task].")
ETAS = click.option("--etas", default=",".join(str(e) for e in DEFAULT_ETAS), show_default=True, callback=_floats,
                    help="η grid of the sparsification.")
EXPLAIN = click.option("--explain", default=None, type=click.Choice(EXPLANATIONS),
                       help="Per-token class probabilities (JSON lines + an HTML page), for mean/max-pooled "
                            "classifiers.")
SPLIT_FIELD_OPT = click.option("--split-field", default=None,
                               help="Field holding each row's split [default: a field named 'split' where a row "
                                    "has one].")
LABEL_NAMES = click.option("--label-names", default=None, metavar="L=NAME,...",
                           help="Names for the labels, e.g. 0=negative,1=positive: shown by fit, report and "
                                "explanations (predictions keep the stored label).")
LABEL_NAME_FIELD_OPT = click.option("--label-name-field", default=LABEL_NAME_FIELD, show_default=True,
                                    help="Field holding the display name of a row's label, where a row has one "
                                         "(--label-names overrides).")
REPLACE = click.option("--replace", is_flag=True, help="Drop the dataset's texts, features and fits first (put back "
                                                       "if a file cannot be read).")
YES = click.option("--yes", is_flag=True, help="Really drop it (without: say what would be deleted, and exit 1).")
LAYERS = click.option("--layers", default="all", show_default=True, help="all, A-B, :B or A,B,C (h0..hL, a0..aL-1).")
MAX_LENGTH = click.option("--max-length", type=int, default=None, help="Tokens per text [default: min(model limit, 512)].")
EXTRACT_CHUNK_ROWS = click.option("--chunk-rows", type=int, default=None,
                                  help="Rows per chunk [default: ~128 MB of features per chunk].")
IGNORE_FREE_SPACE = click.option("--ignore-free-space", is_flag=True,
                                 help="Start even when the estimated size exceeds the free disk space.")
STATS_ONLY = click.option("--stats-only", is_flag=True,
                          help="Record only the neuron statistics the neuron_stats and neuron_label_gaps views read "
                               "(a separate feature set; fit and score need values): for a dump you inspect but "
                               "do not fit on. Bytes per text: about 48 instead of the values'.")
PACK = click.option("--pack", is_flag=True,
                    help="Put several texts in a row, with no padding between them (a per-text attention mask and "
                         "position ids); features equal the padded path's within float16 rounding.")
SQL_FILE = click.option("--file", "file", default=None, type=click.Path(dir_okay=False), help="Run the SQL in this file.")
SQL_NAME = click.option("--query", "name", default=None, help="Run a named query (see --list).")
SQL_PARAMS = click.option("--param", "params", multiple=True, help="NAME=VALUE, bound as $NAME (repeatable).")
SQL_LIST = click.option("--list", "list_queries", is_flag=True, help="List the named queries.")
SQL_MAX_ROWS = click.option("--max-rows", default=100, show_default=True, help="Rows shown in the table view.")
SQL_TIMEOUT = click.option("--timeout", type=click.FloatRange(min=0), default=300, show_default=True,
                           help="Stop a query after this many seconds (exit 1); 0: no limit.")
FEATURE_SET = click.option("--feature-set", "model", default=DEFAULT_MODEL, show_default=True,
                           help="The features to fit on: the model as given to extract (its name or path), or a "
                                "feature-set id prefix.")
MIX_KINDS = click.option("--mix-kinds", is_flag=True, help="Also aggregate hidden and ffn neurons together.")
SEED = click.option("--seed", default=0, show_default=True, help="Seed of that carve and of the probes' row sample.")
INPUT = click.option("--input", "input_path", default=None, type=click.Path(dir_okay=False),
                     help="... or score the texts of this file (JSONL(.gz), tweet dumps, CSV, Parquet).")
OUTPUT = click.option("--output", required=True, type=click.Path(),
                      help="FILE.parquet (one file), or a directory: a predictions table by run date, scored "
                           "incrementally.")
EXPLAIN_OUT = click.option("--explain-out", default=None,
                           help="Path prefix of the explanation files [default: beside --output].")
MODEL_PATH = click.option("--model-path", "model", default=None,
                          help="Local path of the classifiers' model, if not where it was fitted (still checked "
                               "against it).")
VAL_FRACTION_OPT = click.option("--val-fraction", default=VAL_FRACTION, show_default=True,
                                help="Share of train carved as validation when the dataset has no validation split.")
SCORE_CHUNK_ROWS_OPT = click.option("--chunk-rows", type=int, default=SCORE_CHUNK_ROWS, show_default=True,
                                    help="Texts per committed output file (a killed run resumes after the last one).")
EXPLAIN_LIMIT_OPT = click.option("--explain-limit", default=EXPLAIN_LIMIT, show_default=True,
                                 help="Texts shown in the HTML page.")
TOP = click.option("--top", default=REPORT_TOP, show_default=True, help="Neurons listed in the page and the JSON.")
HISTOGRAMS = click.option("--histograms", default=REPORT_HISTOGRAMS, show_default=True,
                          help="Top neurons whose per-label value distributions are drawn (read from the store; 0: none).")
PROBE_ROWS_OPT = click.option("--probe-rows", type=click.IntRange(min=0), default=PROBE_ROWS, show_default=True,
                              help="Per-layer probes fit on a stratified sample of this many train rows "
                                   "(0: all rows); the aggregated classifier always trains on every row.")
VAL_ROWS_OPT = click.option("--val-rows", type=click.IntRange(min=0), default=VAL_ROWS, show_default=True,
                            help="The searches (each probe's and aggregate's strength) score a stratified sample of "
                                 "this many validation rows (0: all rows); every choice between candidates, and "
                                 "every reported validation score, uses every validation row, read chunk by chunk.")
MEMORY_BUDGET_OPT = click.option("--memory-budget", "memory_budget", type=click.IntRange(min=0), default=MEMORY_BUDGET_MB,
                                 show_default=True, metavar="MB",
                                 help="Most memory an aggregate search holds (float32 rows x neurons: its train "
                                      "rows twice, the solver's copy included, and its validation rows); above "
                                      "it the aggregates are searched on a stratified row sample and the "
                                      "chosen one is refitted on every train row, streamed from disk (0: no limit).")


def engine(what: str, local_workers: str | None = None):
    """--engine and the Ray options, declared once for every command that can run on Ray. The command receives
    them as one argument, `ray` (RayOptions, or None: run locally), and, when `local_workers` gives --workers a
    local meaning too (fit's probe processes), `workers` (its value when local, else None)."""
    def decorate(body):
        @functools.wraps(body)
        def command(*args: Any, engine: str, ray_address: str | None, workers: int | None, cpus_per_worker: float,
                    gpus_per_worker: float, **kwargs: Any) -> Any:
            local = engine == "local"
            ray = ray_options(engine, ray_address, None if local and local_workers else workers, cpus_per_worker,
                              gpus_per_worker)
            if local_workers:
                kwargs["workers"] = workers if local else None
            return body(*args, ray=ray, **kwargs)

        f = command
        for opt in reversed([
            click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                         help=f"Where to run {what}: this process, or a Ray cluster (pip install 'stcstore[ray]')."),
            click.option("--ray-address", default=None,
                         help="Ray cluster to join [default: RAY_ADDRESS, else a cluster started by `ray start` on "
                              "this machine, else a new local one]; 'local' always starts a new local one."),
            click.option("--workers", type=click.IntRange(min=1), default=None,
                         help=local_workers or "Ray workers [default: as many as the cluster's CPUs/GPUs hold]."),
            click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=1.0,
                         show_default=True, help="CPUs Ray reserves per worker (also its torch threads)."),
            click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
                         help="GPUs Ray reserves per worker (a worker with a GPU computes on it)."),
        ]):
            f = opt(f)
        return f
    return decorate


def ray_options(engine: str, ray_address: str | None, workers: int | None, cpus_per_worker: float,
                gpus_per_worker: float):
    """The RayOptions of `--engine ray` (None for local); Ray options without it are refused."""
    if engine != "ray":
        given = [name for name, v, default in (("--ray-address", ray_address, None), ("--workers", workers, None),
                                               ("--cpus-per-worker", cpus_per_worker, 1.0),
                                               ("--gpus-per-worker", gpus_per_worker, 0.0)) if v != default]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply with --engine ray")
        return None
    from stcstore.cluster import RayOptions

    return RayOptions(address=ray_address, workers=workers, cpus_per_worker=cpus_per_worker,
                      gpus_per_worker=gpus_per_worker)


def renamed(command: str, old: str, new: str):
    """A callback for an option's old spelling, kept working after a rename: a note on stderr names the new one
    (each option has one meaning in every command: `--force` replaces an output, `--model` names a model to
    load)."""
    def note(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value not in (None, False):
            click.echo(f"note: `{command} {old}` is now `{command} {new}` ({old} still works, for now)", err=True)
        return value
    return note
