"""The `stcstore` command: click wiring only. Options are declared once in `params.py`; each command
builds its library config, calls one library function and prints its result object: a readable summary
for people, or pure JSON on stdout with --json (logs and progress bars always go to stderr).
Exit codes: 0 ok, 1 handled failure (bad input, nothing done), 2 unexpected.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import click

from stcstore.core.errors import StcError, os_error_message
from stcstore.core.names import DEFAULT_MODEL, LABEL_NAME_FIELD, parse_label_names

from . import params as P


def emit(result: Any, as_json: bool) -> None:
    """Print a result object: `to_dict()` as JSON, or its `to_text()`."""
    if as_json:
        click.echo(json.dumps(result.to_dict() if hasattr(result, "to_dict") else result, default=str, indent=2))
    elif hasattr(result, "to_text"):
        text = result.to_text()
        if text:  # all of it may already be on stderr (extract's plan)
            click.echo(text)
    else:
        click.echo("\n".join(f"{k:20s} {v}" for k, v in result.items()))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stcstore")
def cli() -> None:
    """stcstore: pooled transformer neurons in a feature store, for Sparsify-then-Classify."""


@cli.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@P.store(help="Store directory (created if new).")
@P.dataset()
@P.FORMAT
@P.TEXT_FIELD_OPT
@P.LABEL_FIELD_OPT
@P.ID_FIELD_OPT
@click.option("--split-field", default=None,
              help="Field holding each row's split [default: a field named 'split' where a row has one].")
@click.option("--split", default=None, help="One split for every row (train, validation, test, ...).")
@click.option("--label-names", default=None, metavar="L=NAME,...",
              help="Names for the labels, e.g. 0=negative,1=positive: shown by fit, report and explanations "
                   "(predictions keep the stored label).")
@click.option("--label-name-field", default=LABEL_NAME_FIELD, show_default=True,
              help="Field holding the display name of a row's label, where a row has one (--label-names overrides).")
@click.option("--replace", is_flag=True, help="Drop the dataset's texts, features and fits first (put back if a "
                                              "file cannot be read).")
@P.JSON
def ingest(sources, store, dataset, fmt, text_field, label_field, id_field, split_field, split, label_names,
           label_name_field, replace, as_json) -> None:
    """Read tweet dumps, JSONL(.gz), CSV or Parquet into the store's texts table."""
    from stcstore.ingest import IngestConfig
    from stcstore.ingest import ingest as run

    cfg = IngestConfig(dataset=dataset, format=fmt, text_field=text_field, label_field=label_field,
                       id_field=id_field, split_field=split_field, split=split, replace=replace,
                       label_names=tuple(parse_label_names(label_names).items()) if label_names else (),
                       label_name_field=label_name_field)
    emit(run(store, list(sources), cfg), as_json)


@cli.command()
@P.store(exists=True)
@P.dataset()
@click.option("--yes", is_flag=True, help="Really drop it (without: say what would be deleted, and exit 1).")
@P.JSON
def drop(store, dataset, yes, as_json) -> None:
    """Delete one dataset from a store: its texts, rejects, feature sets and fit tables (not predictions)."""
    from stcstore.store.drop import drop as run

    emit(run(store, dataset, yes), as_json)


@cli.command()
@P.store(exists=True)
@P.dataset()
@P.MODEL
@click.option("--layers", default="all", show_default=True, help="all, A-B, :B or A,B,C (h0..hL, a0..aL-1).")
@P.KINDS_OPT
@P.POOLINGS_OPT
@click.option("--max-length", type=int, default=None, help="Tokens per text [default: min(model limit, 512)].")
@P.BATCH_SIZE_OPT
@P.MAX_TOKENS_OPT
@P.STORED_DTYPE
@P.TORCH_DTYPE
@P.DEVICE
@P.THREADS
@click.option("--chunk-rows", type=int, default=None, help="Rows per chunk [default: ~128 MB of features per chunk].")
@P.GGUF_FILE
@click.option("--ignore-free-space", "force", is_flag=True,
              help="Start even when the estimated size exceeds the free disk space.")
@click.option("--force", "force_old", is_flag=True, hidden=True,
              callback=P.renamed("extract", "--force", "--ignore-free-space"),
              help="0.2's spelling of --ignore-free-space (elsewhere --force replaces an output).")
@P.engine("extraction")
@P.JSON
def extract(store, dataset, model, layers, kinds, poolings, max_length, batch_size, max_tokens, dtype,
            torch_dtype, device, threads, chunk_rows, gguf_file, force, force_old, engine, ray_address, workers,
            cpus_per_worker, gpus_per_worker, as_json) -> None:
    """Extract pooled hidden states and FFN activations of every text that has none yet (resumable)."""
    from stcstore.features import ExtractConfig
    from stcstore.features import extract as run

    force = force or force_old  # 0.2's spelling: --force means "replace an output" everywhere else

    cfg = ExtractConfig(dataset=dataset, model=model, layers=layers, kinds=kinds, poolings=poolings,
                        max_length=max_length, batch_size=batch_size, max_tokens=max_tokens, dtype=dtype,
                        torch_dtype=torch_dtype, device=device, threads=threads, chunk_rows=chunk_rows,
                        gguf_file=gguf_file, force=force)
    opts = P.ray_options(engine, ray_address, workers, cpus_per_worker, gpus_per_worker)
    if opts is None:
        emit(run(store, cfg), as_json)
    else:
        from stcstore.cluster import ray_extract

        emit(ray_extract(store, cfg, opts), as_json)


@cli.command()
@click.argument("query", required=False)
@P.store(exists=True)
@click.option("--file", "file", default=None, type=click.Path(dir_okay=False), help="Run the SQL in this file.")
@click.option("--query", "name", default=None, help="Run a named query (see --list).")
@click.option("--param", "params", multiple=True, help="NAME=VALUE, bound as $NAME (repeatable).")
@click.option("--list", "list_queries", is_flag=True, help="List the named queries.")
@click.option("--max-rows", default=100, show_default=True, help="Rows shown in the table view.")
@click.option("--timeout", type=click.FloatRange(min=0), default=300, show_default=True,
              help="Stop a query after this many seconds (exit 1); 0: no limit.")
@P.JSON
def sql(query, store, file, name, params, list_queries, max_rows, timeout, as_json) -> None:
    """Query the store read-only with DuckDB (views: texts, rejects, sources, feature_sets, neuron_stats,
    neuron_label_gaps, probes, aggregates, predictions)."""
    from stcstore.store.query import run_query
    from stcstore.store.sql import param_pairs, query_list

    if list_queries:
        emit(query_list(), as_json)
        return
    result = run_query(store, sql=query, file=file, name=name, params=param_pairs(params), timeout=timeout)
    click.echo(json.dumps(result.to_dict(), default=str, indent=2) if as_json else result.to_text(max_rows))


@cli.command()
@P.store(exists=True)
@P.dataset()
@click.option("--feature-set", "model", default=DEFAULT_MODEL, show_default=True,
              help="The features to fit on: the model as given to extract (its name or path), or a feature-set id "
                   "prefix.")
@click.option("--model", "model_old", default=None, hidden=True, callback=P.renamed("fit", "--model", "--feature-set"),
              help="0.2's spelling of --feature-set.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Classifier directory to write (must be new or empty unless --force).")
@P.ETAS
@P.TASK
@P.PROBE
@P.AGGREGATOR
@P.SELECTION
@P.METRIC
@P.KINDS_OPT
@P.POOLINGS_OPT
@click.option("--mix-kinds", is_flag=True, help="Also aggregate hidden and ffn neurons together.")
@P.VAL_FRACTION_OPT
@click.option("--seed", default=0, show_default=True, help="Seed of that carve and of the probes' row sample.")
@P.PROBE_ROWS_OPT
@P.VAL_ROWS_OPT
@P.MEMORY_BUDGET_OPT
@P.THREADS
@P.DEVICE
@P.FORCE
@P.engine("the per-layer probes", local_workers="Probes and kind/pooling aggregate searches fitted at a time, "
                                                 "each on one thread (local: processes [default: the CPUs "
                                                 "available; with --device cuda, up to 8 sharing the GPU]; Ray: "
                                                 "probe tasks).")
@P.JSON
def fit(store, dataset, model, model_old, out, etas, task, probe, aggregator, selection, metric, kinds, poolings,
        mix_kinds, val_fraction, seed, probe_rows, val_rows, memory_budget, threads, device, force, engine, ray_address,
        workers, cpus_per_worker, gpus_per_worker, as_json) -> None:
    """Per-layer L1 probes, η-sparsification and cross-layer aggregation, all chosen on validation."""
    from stcstore.core.pool import default_workers, start_workers, stop_workers

    model = model_old if model_old is not None else model

    if engine == "local":  # the pool's processes get ready while this one imports torch
        start_workers(workers or default_workers(device))
    try:
        _fit(store, dataset, model, out, etas, task, probe, aggregator, selection, metric, kinds, poolings, mix_kinds,
             val_fraction, seed, probe_rows, val_rows, memory_budget, threads, device, force, engine, ray_address,
             workers, cpus_per_worker, gpus_per_worker, as_json)
    finally:  # exit now: not once the workers have imported torch (a failure), or ended their interpreters (1 s)
        stop_workers()


def _fit(store, dataset, model, out, etas, task, probe, aggregator, selection, metric, kinds, poolings, mix_kinds,
         val_fraction, seed, probe_rows, val_rows, memory_budget, threads, device, force, engine, ray_address, workers,
         cpus_per_worker, gpus_per_worker, as_json) -> None:
    from stcstore.fit import FitConfig
    from stcstore.fit import fit as run

    cfg = FitConfig(dataset=dataset, model=model, etas=etas, task=task, probe=probe, aggregator=aggregator, selection=selection,
                    metric=metric, kinds=kinds, poolings=poolings,
                    mix_kinds=mix_kinds, val_fraction=val_fraction, seed=seed, probe_rows=probe_rows or None,
                    val_rows=val_rows or None, memory_budget_mb=memory_budget or None, threads=threads, device=device,
                    workers=workers if engine == "local" else None)
    opts = P.ray_options(engine, ray_address, workers if engine == "ray" else None, cpus_per_worker, gpus_per_worker)
    if opts is None:
        emit(run(store, cfg, out=out, force=force), as_json)
    else:
        from stcstore.cluster import ray_fit

        emit(ray_fit(store, cfg, opts, out=out, force=force), as_json)


@cli.command()
@click.option("--classifier", "classifiers", multiple=True, required=True, type=click.Path(file_okay=False),
              help="Classifier directory from `stcstore fit` (repeatable; classifiers on one model share a pass).")
@P.store(required=False, exists=True, help="Score the texts of a store dataset...")
@P.dataset(required=False, help="... this one (with --store).")
@click.option("--split", default=None, help="Only texts of this split (with --store).")
@click.option("--input", "input_path", default=None, type=click.Path(dir_okay=False),
              help="... or score the texts of this file (JSONL(.gz), tweet dumps, CSV, Parquet).")
@click.option("--output", required=True, type=click.Path(),
              help="FILE.parquet (one file), or a directory: a predictions table by run date, scored incrementally.")
@P.FORMAT
@P.TEXT_FIELD_OPT
@P.ID_FIELD_OPT
@P.EXPLAIN
@click.option("--explain-out", default=None, help="Path prefix of the explanation files [default: beside --output].")
@P.EXPLAIN_LIMIT_OPT
@click.option("--model-path", "model", default=None,
              help="Local path of the classifiers' model, if not where it was fitted (still checked against it).")
@click.option("--model", "model_old", default=None, hidden=True, callback=P.renamed("score", "--model", "--model-path"),
              help="0.2's spelling of --model-path.")
@P.GGUF_FILE
@P.BATCH_SIZE_OPT
@P.MAX_TOKENS_OPT
@P.SCORE_CHUNK_ROWS_OPT
@P.THREADS
@P.DEVICE
@click.option("--force", is_flag=True, help="Replace an existing --output FILE.parquet.")
@P.engine("scoring")
@P.JSON
def score(classifiers, store, dataset, split, input_path, output, fmt, text_field, id_field, explain, explain_out,
          explain_limit, model, model_old, gguf_file, batch_size, max_tokens, chunk_rows, threads, device, force,
          engine, ray_address, workers, cpus_per_worker, gpus_per_worker, as_json) -> None:
    """Score texts with fitted classifiers: early exit, one pass per model, incremental, explanations."""
    model = model_old if model_old is not None else model
    from stcstore.score import ScoreConfig
    from stcstore.score import score as run

    cfg = ScoreConfig(classifiers=tuple(classifiers), output=output, store=store, dataset=dataset, split=split,
                      input=input_path, format=fmt, text_field=text_field, id_field=id_field, explain=explain,
                      explain_out=explain_out, explain_limit=explain_limit, model=model, gguf_file=gguf_file,
                      batch_size=batch_size, max_tokens=max_tokens, chunk_rows=chunk_rows, threads=threads,
                      device=device, force=force)
    opts = P.ray_options(engine, ray_address, workers, cpus_per_worker, gpus_per_worker)
    if opts is None:
        emit(run(cfg), as_json)
    else:
        from stcstore.cluster import ray_score

        emit(ray_score(cfg, opts), as_json)


@cli.command()
@P.store(exists=True, help="Store the classifier was fitted in.")
@click.option("--classifier", required=True, type=click.Path(file_okay=False),
              help="Classifier directory from `stcstore fit`.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for report.html, report.json and neurons.parquet.")
@P.TOP
@P.HISTOGRAMS
@click.option("--split", default=None, help="Split of the per-label neuron statistics [default: the fit's train split].")
@click.option("--force", is_flag=True, help="Replace an existing, non-empty --out directory.")
@P.JSON
def report(store, classifier, out, top, histograms, split, force, as_json) -> None:
    """What a classifier learned and where: probe curves, the η/L_temp grid, its neurons (HTML + JSON)."""
    from stcstore.report import ReportConfig
    from stcstore.report import report as run

    emit(run(ReportConfig(store=store, classifier=classifier, out=out, top=top, histograms=histograms, split=split,
                          force=force)), as_json)


@cli.command()
@click.option("--out", default="stcstore-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo: OUT/store, OUT/classifier, OUT/report and the predictions (re-running it "
                   "resumes and does nothing new).")
@P.THREADS
@P.JSON
def demo(out, threads, as_json) -> None:
    """The whole pipeline on the embedded default data and model."""
    from stcstore.demo import run_demo

    emit(run_demo(out, threads=threads), as_json)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with its code (0 ok, 1 handled failure, 2 unexpected)."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI in this process and return its exit code (tests call this; `main` exits with it)."""
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, standalone_mode=False)
    except StcError as exc:
        return _fail(str(exc), 1, as_json)
    except click.exceptions.Abort:
        return _fail("aborted", 1, as_json)
    except click.ClickException as exc:  # bad options: handled, nothing done
        return _fail(exc.format_message(), 1, as_json)
    except OSError as exc:  # a full disk, a permission: every write is atomic, so nothing half-written remains
        return _fail(os_error_message(exc), 1, as_json)
    except KeyboardInterrupt:
        return _fail("interrupted", 1, as_json)
    except Exception as exc:  # a bug: say so, with the traceback
        traceback.print_exc()
        return _fail(f"unexpected error ({type(exc).__name__}): {exc}", 2, as_json)
    return 0


def _fail(message: str, code: int, as_json: bool) -> int:
    click.echo(f"error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}))
    return code


if __name__ == "__main__":
    main()
