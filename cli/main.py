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
from stcstore.core.names import parse_label_names

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


def run_stage(ray: Any, stage: Any, ray_stage: str, cfg: Any, **resources: Any) -> Any:
    """The one local/Ray switch: `stage(cfg)` here, or its twin `stcstore.cluster.<ray_stage>(cfg, opts=ray)`."""
    if ray is None:
        return stage(cfg, **resources)
    import stcstore.cluster as cluster

    return getattr(cluster, ray_stage)(cfg, opts=ray, **resources)


@cli.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@P.store(help="Store directory (created if new).")
@P.dataset()
@P.FORMAT
@P.TEXT_FIELD_OPT
@P.LABEL_FIELD_OPT
@P.ID_FIELD_OPT
@P.SPLIT_FIELD_OPT
@P.split("One split for every row (train, validation, test, ...).")
@P.LABEL_NAMES
@P.LABEL_NAME_FIELD_OPT
@P.REPLACE
@P.JSON
def ingest(sources, store, dataset, fmt, text_field, label_field, id_field, split_field, split, label_names,
           label_name_field, replace, as_json) -> None:
    """Read tweet dumps, JSONL(.gz), CSV or Parquet into the store's texts table."""
    from stcstore.ingest import IngestConfig
    from stcstore.ingest import ingest as run

    cfg = IngestConfig(dataset=dataset, format=fmt, text_field=text_field, label_field=label_field,
                       id_field=id_field, split_field=split_field, split=split, replace=replace,
                       label_names=tuple(parse_label_names(label_names).items()) if label_names else (),
                       label_name_field=label_name_field, store=store, sources=tuple(sources))
    emit(run(cfg), as_json)


@cli.command()
@P.store(exists=True)
@P.dataset()
@P.YES
@P.JSON
def drop(store, dataset, yes, as_json) -> None:
    """Delete one dataset from a store: its texts, rejects, feature sets and fit tables (not predictions)."""
    from stcstore.store.drop import DropConfig
    from stcstore.store.drop import drop as run

    emit(run(DropConfig(dataset, store=store, yes=yes)), as_json)


@cli.command()
@P.store(exists=True)
@P.dataset()
@P.MODEL
@P.LAYERS
@P.KINDS_OPT
@P.POOLINGS_OPT
@P.MAX_LENGTH
@P.BATCH_SIZE_OPT
@P.MAX_TOKENS_OPT
@P.STORED_DTYPE
@P.TORCH_DTYPE
@P.DEVICE
@P.THREADS
@P.EXTRACT_CHUNK_ROWS
@P.GGUF_FILE
@P.IGNORE_FREE_SPACE
@P.STATS_ONLY
@P.PACK
@P.old_spelling("extract", "--force", "--ignore-free-space", "force_old", flag=True)
@P.engine("extraction")
@P.JSON
def extract(store, dataset, model, layers, kinds, poolings, max_length, batch_size, max_tokens, dtype, torch_dtype,
            device, threads, chunk_rows, gguf_file, ignore_free_space, stats_only, pack, force_old, ray, as_json) -> None:
    """Extract pooled hidden states and FFN activations of every text that has none yet (resumable)."""
    from stcstore.features import ExtractConfig
    from stcstore.features import extract as run

    cfg = ExtractConfig(dataset=dataset, model=model, layers=layers, kinds=kinds, poolings=poolings,
                        max_length=max_length, batch_size=batch_size, max_tokens=max_tokens, dtype=dtype,
                        torch_dtype=torch_dtype, device=device, threads=threads, chunk_rows=chunk_rows,
                        gguf_file=gguf_file, ignore_free_space=ignore_free_space or force_old, stats_only=stats_only,
                        pack=pack, store=store)
    emit(run_stage(ray, run, "ray_extract", cfg), as_json)


@cli.command()
@click.argument("query", required=False)
@P.store(exists=True)
@P.SQL_FILE
@P.SQL_NAME
@P.SQL_PARAMS
@P.SQL_LIST
@P.SQL_MAX_ROWS
@P.SQL_TIMEOUT
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
@P.FEATURE_SET
@P.old_spelling("fit", "--model", "--feature-set", "model_old")
@P.out("Classifier directory to write (must be new or empty unless --force).")
@P.ETAS
@P.TASK
@P.PROBE
@P.AGGREGATOR
@P.SELECTION
@P.METRIC
@P.KINDS_OPT
@P.POOLINGS_OPT
@P.MIX_KINDS
@P.VAL_FRACTION_OPT
@P.SEED
@P.PROBE_ROWS_OPT
@P.VAL_ROWS_OPT
@P.MEMORY_BUDGET_OPT
@P.THREADS
@P.DEVICE
@P.force("classifier directory (--out)")
@P.engine("the per-layer probes", local_workers="Probes and kind/pooling aggregate searches fitted at a time, "
                                                 "each on one thread (local: processes [default: the CPUs "
                                                 "available; with --device cuda, up to 8 sharing the GPU]; Ray: "
                                                 "probe tasks).")
@P.JSON
def fit(store, dataset, model, model_old, out, etas, task, probe, aggregator, selection, metric, kinds, poolings,
        mix_kinds, val_fraction, seed, probe_rows, val_rows, memory_budget, threads, device, force, ray, workers,
        as_json) -> None:
    """Per-layer L1 probes, η-sparsification and cross-layer aggregation, all chosen on validation."""
    from stcstore.core.pool import default_workers, start_workers, stop_workers

    if ray is None:  # the pool's processes get ready while this one imports torch
        start_workers(workers or default_workers(device))
    try:
        from stcstore.fit import FitConfig
        from stcstore.fit import fit as run

        cfg = FitConfig(dataset=dataset, model=model_old if model_old is not None else model, etas=etas, task=task,
                        probe=probe, aggregator=aggregator, selection=selection, metric=metric, kinds=kinds,
                        poolings=poolings, mix_kinds=mix_kinds, val_fraction=val_fraction, seed=seed,
                        probe_rows=probe_rows or None, val_rows=val_rows or None,
                        memory_budget_mb=memory_budget or None, threads=threads, device=device, workers=workers,
                        store=store, out=out, force=force)
        emit(run_stage(ray, run, "ray_fit", cfg), as_json)
    finally:  # exit now: not once the workers have imported torch (a failure), or ended their interpreters (1 s)
        stop_workers()


@cli.command()
@P.classifier(multiple=True, help="Classifier directory from `stcstore fit` (repeatable; classifiers on one model "
                                  "share a pass).")
@P.store(required=False, exists=True, help="Score the texts of a store dataset...")
@P.dataset(required=False, help="... this one (with --store).")
@P.split("Only texts of this split (with --store).")
@P.INPUT
@P.OUTPUT
@P.FORMAT
@P.TEXT_FIELD_OPT
@P.ID_FIELD_OPT
@P.EXPLAIN
@P.EXPLAIN_OUT
@P.EXPLAIN_LIMIT_OPT
@P.MODEL_PATH
@P.old_spelling("score", "--model", "--model-path", "model_old")
@P.GGUF_FILE
@P.BATCH_SIZE_OPT
@P.MAX_TOKENS_OPT
@P.SCORE_CHUNK_ROWS_OPT
@P.THREADS
@P.DEVICE
@P.force("--output FILE.parquet")
@P.engine("scoring")
@P.JSON
def score(classifiers, store, dataset, split, input_path, output, fmt, text_field, id_field, explain, explain_out,
          explain_limit, model, model_old, gguf_file, batch_size, max_tokens, chunk_rows, threads, device, force,
          ray, as_json) -> None:
    """Score texts with fitted classifiers: early exit, one pass per model, incremental, explanations."""
    from stcstore.score import ScoreConfig
    from stcstore.score import score as run

    cfg = ScoreConfig(classifiers=tuple(classifiers), output=output, store=store, dataset=dataset, split=split,
                      input=input_path, format=fmt, text_field=text_field, id_field=id_field, explain=explain,
                      explain_out=explain_out, explain_limit=explain_limit,
                      model=model_old if model_old is not None else model, gguf_file=gguf_file,
                      batch_size=batch_size, max_tokens=max_tokens, chunk_rows=chunk_rows, threads=threads,
                      device=device, force=force)
    emit(run_stage(ray, run, "ray_score", cfg), as_json)


@cli.command()
@P.store(exists=True, help="Store the classifier was fitted in.")
@P.classifier()
@P.out("Directory for report.html, report.json and neurons.parquet.", required=True)
@P.TOP
@P.HISTOGRAMS
@P.split("Split of the per-label neuron statistics [default: the fit's train split].")
@P.force("non-empty --out directory")
@P.JSON
def report(store, classifier, out, top, histograms, split, force, as_json) -> None:
    """What a classifier learned and where: probe curves, the η/L_temp grid, its neurons (HTML + JSON)."""
    from stcstore.report import ReportConfig
    from stcstore.report import report as run

    emit(run(ReportConfig(store=store, classifier=classifier, out=out, top=top, histograms=histograms, split=split,
                          force=force)), as_json)


@cli.command()
@P.out("Folder for the demo: OUT/store, OUT/classifier, OUT/report and the predictions (re-running it resumes "
       "and does nothing new).", default="stcstore-demo")
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
