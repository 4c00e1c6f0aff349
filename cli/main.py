"""The `stcstore` command: click wiring only. Each command calls one library function and prints its
result object: a readable summary for people, or pure JSON on stdout with --json (logs and progress
bars always go to stderr). Exit codes: 0 ok, 1 handled failure (bad input, nothing done), 2 unexpected.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any, Callable

import click

from stcstore.errors import StcError

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def emit(result: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    if as_json:
        payload = result.to_dict() if hasattr(result, "to_dict") else result
        click.echo(json.dumps(payload, default=str, indent=2))
    else:
        click.echo(text(result))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stcstore")
def cli() -> None:
    """stcstore: pooled transformer neurons in a feature store, for Sparsify-then-Classify."""


@cli.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--store", required=True, type=click.Path(file_okay=False), help="Store directory (created if new).")
@click.option("--dataset", required=True, help="Dataset name inside the store.")
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "jsonl", "csv", "parquet", "tweets"]))
@click.option("--text-field", default="text", show_default=True, help="Field/column with the text (dotted path in JSON).")
@click.option("--label-field", default="label", show_default=True)
@click.option("--id-field", default="id", show_default=True, help="Without one, the id is a hash of the text.")
@click.option("--split-field", default=None, help="Field holding each row's split.")
@click.option("--split", default=None, help="One split for every row (train, validation, test, ...).")
@JSON_OPTION
def ingest(sources, store, dataset, fmt, text_field, label_field, id_field, split_field, split, as_json) -> None:
    """Read tweet dumps, JSONL(.gz), CSV or Parquet into the store's texts table."""
    from stcstore.ingest import IngestConfig, ingest as run

    cfg = IngestConfig(dataset=dataset, format=fmt, text_field=text_field, label_field=label_field,
                       id_field=id_field, split_field=split_field, split=split)
    result = run(store, list(sources), cfg)

    def text(r) -> str:
        lines = []
        for f in r.files:
            if f.skipped:
                lines.append(f"{f.source}: already ingested with these options, nothing added")
                continue
            why = ", ".join(f"{k}: {v}" for k, v in sorted(f.reasons.items()))
            lines.append(f"{f.source} [{f.format}]: {f.rows_read} rows read, {f.ingested} ingested, "
                         f"{f.duplicates} duplicates, {f.rejected} rejected" + (f" ({why})" if why else ""))
        t = r.totals()
        lines.append(f"dataset {r.dataset}: {t['ingested']} texts added, {t['rejected']} rejects "
                     f"(see `stcstore sql --store {r.store} --query rejects_by_reason`), {r.seconds:.1f}s")
        return "\n".join(lines)

    emit(result, as_json, text)


@cli.command()
@click.option("--store", required=True, type=click.Path(file_okay=False))
@click.option("--dataset", required=True)
@click.option("--model", default="default", show_default=True,
              help="Hub name or local path; `default` is the packaged all-MiniLM-L6-v2.")
@click.option("--layers", default="all", show_default=True, help="all, A-B, :B or A,B,C (h0..hL, a0..aL-1).")
@click.option("--kinds", default="hidden,ffn", show_default=True)
@click.option("--poolings", default="mean,max,single", show_default=True)
@click.option("--max-length", type=int, default=None, help="Tokens per text [default: min(model limit, 512)].")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Most texts per forward batch.")
@click.option("--max-tokens", type=int, default=8192, show_default=True, help="Token budget per batch.")
@click.option("--dtype", default="float16", show_default=True, type=click.Choice(["float16", "float32"]),
              help="Stored feature dtype.")
@click.option("--torch-dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "bfloat16", "float16"]), help="Model compute dtype.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, default=None, help="torch threads [default: torch's choice].")
@click.option("--chunk-rows", type=int, default=None, help="Rows per chunk [default: ~128 MB of features per chunk].")
@click.option("--gguf-file", default=None, help="GGUF weights file inside the model directory.")
@JSON_OPTION
def extract(store, dataset, model, layers, kinds, poolings, max_length, batch_size, max_tokens, dtype,
            torch_dtype, device, threads, chunk_rows, gguf_file, as_json) -> None:
    """Extract pooled hidden states and FFN activations of every text that has none yet (resumable)."""
    from stcstore.extract import ExtractConfig, extract as run

    cfg = ExtractConfig(dataset=dataset, model=model, layers=layers, kinds=_csv(kinds), poolings=_csv(poolings),
                        max_length=max_length, batch_size=batch_size, max_tokens=max_tokens, dtype=dtype,
                        torch_dtype=torch_dtype, device=device, threads=threads, chunk_rows=chunk_rows,
                        gguf_file=gguf_file)
    result = run(store, cfg)

    def text(r) -> str:
        lines = list(r.messages)
        if r.texts_extracted:
            lines.append(f"extracted {r.texts_extracted} texts in {r.chunks_written} chunks, "
                         f"{r.texts_per_s:.1f} texts/s; feature set {r.feature_set[:12]} now holds "
                         f"{r.texts_total} texts, {r.store_bytes / 2**20:,.1f} MiB")
        return "\n".join(lines)

    emit(result, as_json, text)


@cli.command()
@click.argument("query", required=False)
@click.option("--store", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--file", "file", default=None, type=click.Path(dir_okay=False), help="Run the SQL in this file.")
@click.option("--query", "name", default=None, help="Run a named query (see --list).")
@click.option("--param", "params", multiple=True, help="NAME=VALUE, bound as $NAME (repeatable).")
@click.option("--list", "list_queries", is_flag=True, help="List the named queries and views.")
@click.option("--max-rows", default=100, show_default=True, help="Rows shown in the table view.")
@JSON_OPTION
def sql(query, store, file, name, params, list_queries, max_rows, as_json) -> None:
    """Query the store read-only with DuckDB (views: texts, rejects, sources, feature_sets, neuron_stats)."""
    from stcstore.query import named_queries, run_query

    if list_queries:
        names = {n: p.read_text().splitlines()[0].lstrip("- ") for n, p in named_queries().items()}
        emit(names, as_json, lambda d: "\n".join(f"{k:20s} {v}" for k, v in d.items()))
        return
    bound = {}
    for p in params:
        if "=" not in p:
            raise StcError(f"--param {p!r}: expected NAME=VALUE")
        k, v = p.split("=", 1)
        bound[k] = v
    result = run_query(store, sql=query, file=file, name=name, params=bound)
    emit(result, as_json, lambda r: r.to_text(max_rows))


@cli.command()
@click.option("--store", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--dataset", required=True)
@click.option("--model", default="default", show_default=True,
              help="Model as given to extract (or its path, or a feature-set id prefix).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Classifier directory to write (must be new or empty unless --force).")
@click.option("--etas", default=",".join(str(e) for e in (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)),
              show_default=True, help="η grid of the sparsification.")
@click.option("--metric", default="accuracy", show_default=True, type=click.Choice(["accuracy", "macro_f1"]),
              help="Validation metric that every choice is made on.")
@click.option("--kinds", default="hidden,ffn", show_default=True)
@click.option("--poolings", default="mean,max,single", show_default=True)
@click.option("--mix-kinds", is_flag=True, help="Also aggregate hidden and ffn neurons together.")
@click.option("--val-fraction", default=0.2, show_default=True,
              help="Share of train carved as validation when the dataset has no validation split.")
@click.option("--seed", default=0, show_default=True, help="Seed of that carve and of the Hessian row sample.")
@click.option("--threads", type=int, default=None, help="torch threads [default: torch's choice].")
@click.option("--force", is_flag=True, help="Replace an existing --out directory.")
@JSON_OPTION
def fit(store, dataset, model, out, etas, metric, kinds, poolings, mix_kinds, val_fraction, seed, threads, force,
        as_json) -> None:
    """Per-layer L1 probes, η-sparsification and cross-layer aggregation, all chosen on validation."""
    from stcstore.fit import FitConfig, fit as run
    from stcstore.probe import PathConfig

    try:
        eta_values = tuple(float(e) for e in _csv(etas))
    except ValueError:
        raise StcError(f"--etas {etas!r}: give numbers separated by commas, e.g. 0.1,0.5,0.8") from None
    cfg = FitConfig(dataset=dataset, model=model, etas=eta_values, metric=metric, kinds=_csv(kinds),
                    poolings=_csv(poolings), mix_kinds=mix_kinds, val_fraction=val_fraction, seed=seed,
                    threads=threads, path=PathConfig())
    result = run(store, cfg, out=out, force=force)
    emit(result, as_json, lambda r: r.to_text())


@cli.command()
@click.option("--classifier", "classifiers", multiple=True, required=True, type=click.Path(file_okay=False),
              help="Classifier directory from `stcstore fit` (repeatable; classifiers on one model share a pass).")
@click.option("--store", default=None, type=click.Path(file_okay=False), help="Score the texts of a store dataset...")
@click.option("--dataset", default=None, help="... this one (with --store).")
@click.option("--split", default=None, help="Only texts of this split (with --store).")
@click.option("--input", "input_path", default=None, type=click.Path(dir_okay=False),
              help="... or score the texts of this file (JSONL(.gz), tweet dumps, CSV, Parquet).")
@click.option("--output", required=True, type=click.Path(),
              help="FILE.parquet (one file), or a directory: a predictions table by run date, scored incrementally.")
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "jsonl", "csv", "parquet", "tweets"]), help="Format of --input.")
@click.option("--text-field", default="text", show_default=True, help="Text field/column of --input.")
@click.option("--id-field", default="id", show_default=True, help="Id field of --input (else a hash of the text).")
@click.option("--explain", default=None, type=click.Choice(["tokens"]),
              help="Per-token class probabilities (JSON lines + an HTML page), for mean/max-pooled classifiers.")
@click.option("--explain-out", default=None, help="Path prefix of the explanation files [default: beside --output].")
@click.option("--explain-limit", default=200, show_default=True, help="Texts shown in the HTML page.")
@click.option("--model", default=None, help="Local path of the classifiers' model, if not where it was fitted.")
@click.option("--gguf-file", default=None, help="GGUF weights file inside the model directory.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--max-tokens", type=int, default=8192, show_default=True)
@click.option("--chunk-rows", type=int, default=4096, show_default=True,
              help="Texts per committed output file (a killed run resumes after the last one).")
@click.option("--threads", type=int, default=None, help="torch threads [default: torch's choice].")
@click.option("--device", default="cpu", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing --output FILE.parquet.")
@JSON_OPTION
def score(classifiers, store, dataset, split, input_path, output, fmt, text_field, id_field, explain, explain_out,
          explain_limit, model, gguf_file, batch_size, max_tokens, chunk_rows, threads, device, force,
          as_json) -> None:
    """Score texts with fitted classifiers: early exit, one pass per model, incremental, explanations."""
    from stcstore.score import ScoreConfig, score as run

    cfg = ScoreConfig(classifiers=tuple(classifiers), output=output, store=store, dataset=dataset, split=split,
                      input=input_path, format=fmt, text_field=text_field, id_field=id_field, explain=explain,
                      explain_out=explain_out, explain_limit=explain_limit, model=model, gguf_file=gguf_file,
                      batch_size=batch_size, max_tokens=max_tokens, chunk_rows=chunk_rows, threads=threads,
                      device=device, force=force)
    emit(run(cfg), as_json, lambda r: r.to_text())


@cli.command()
@click.option("--store", required=True, type=click.Path(file_okay=False), help="Store the classifier was fitted in.")
@click.option("--classifier", required=True, type=click.Path(file_okay=False),
              help="Classifier directory from `stcstore fit`.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for report.html, report.json and neurons.parquet.")
@click.option("--top", default=30, show_default=True, help="Neurons listed in the page and the JSON.")
@click.option("--histograms", default=8, show_default=True,
              help="Top neurons whose per-label value distributions are drawn (read from the store; 0: none).")
@click.option("--split", default=None, help="Split of the per-label neuron statistics [default: the fit's train split].")
@click.option("--force", is_flag=True, help="Replace an existing, non-empty --out directory.")
@JSON_OPTION
def report(store, classifier, out, top, histograms, split, force, as_json) -> None:
    """What a classifier learned and where: probe curves, the η/L_temp grid, its neurons (HTML + JSON)."""
    from stcstore.report import ReportConfig, report as run

    cfg = ReportConfig(store=store, classifier=classifier, out=out, top=top, histograms=histograms, split=split,
                       force=force)
    emit(run(cfg), as_json, lambda r: r.to_text())


@cli.command()
@click.option("--out", default="stcstore-demo", show_default=True, type=click.Path(file_okay=False),
              help="Store directory for the demo (re-running it resumes and does nothing new).")
@click.option("--threads", type=int, default=None)
@JSON_OPTION
def demo(out, threads, as_json) -> None:
    """The whole pipeline on the embedded default data and model."""
    from stcstore.demo import run_demo

    result = run_demo(out, threads=threads)
    emit(result, as_json, lambda r: r.to_text())


def main(argv: list[str] | None = None) -> None:
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, standalone_mode=False)
    except StcError as exc:
        _fail(str(exc), 1, as_json)
    except click.exceptions.Abort:
        _fail("aborted", 1, as_json)
    except click.ClickException as exc:  # bad options: handled, nothing done
        _fail(exc.format_message(), 1, as_json)
    except KeyboardInterrupt:
        _fail("interrupted", 1, as_json)
    except Exception as exc:  # a bug: say so, with the traceback
        traceback.print_exc()
        _fail(f"unexpected error ({type(exc).__name__}): {exc}", 2, as_json)
    sys.exit(0)


def _fail(message: str, code: int, as_json: bool) -> None:
    click.echo(f"error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}))
    sys.exit(code)


if __name__ == "__main__":
    main()
