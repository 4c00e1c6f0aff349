"""The CLI contract: --json is pure JSON on stdout, exit codes 0/1/2, read-only SQL, the demo. Commands run
in-process (`cli`); a subprocess only where the real process is the point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stcstore.core.errors import StcError
from stcstore.ingest import IngestConfig, ingest
from stcstore.store.sql import named_queries

from .conftest import cli, write_jsonl


@pytest.fixture
def small(tmp_path) -> Path:
    recs = [{"id": i, "text": t, "label": i % 2} for i, t in enumerate(
        ["good film", "bad film", "great acting", "awful plot", "fine", "boring"] * 3)]
    recs.append({"id": 99, "text": ""})
    return write_jsonl(tmp_path / "s.jsonl", recs)


def test_ingest_extract_sql_as_json(tmp_path, small):
    st = str(tmp_path / "st")
    r = cli("ingest", str(small), "--store", st, "--dataset", "s", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["ingested"], out["rejected"]) == (18, 1)
    r = cli("extract", "--store", st, "--dataset", "s", "--layers", "0-2", "--kinds", "ffn", "--poolings", "mean",
            "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["texts_extracted"] == 18 and out["blocks"] == 3 and out["estimated_bytes"] > 0
    assert "estimated store size" in r.stderr  # printed before the work starts, on stderr
    r = cli("sql", "--store", st, "--json",
            "select layer, count(*) as n from neuron_stats where kind='ffn' group by 1 order by 1")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert rows == [{"layer": l, "n": 1536 * 2} for l in range(3)]  # neurons x labels, one split
    r = cli("sql", "--store", st, "--query", "rejects_by_reason", "--json")
    assert json.loads(r.stdout)["rows"][0]["reason"] == "empty text"
    r = cli("sql", "--store", st, "--query", "top_neurons", "--param", "top=3")
    assert r.returncode == 0 and "effect_size" in r.stdout and "3 rows" in r.stdout
    r = cli("sql", "--store", st, "--query", "top_neurons", "--param", "dataset=s%", "--json")
    assert len(json.loads(r.stdout)["rows"]) > 0  # the dataset parameter is a LIKE pattern ...
    r = cli("sql", "--store", st, "--query", "top_neurons", "--param", "dataset=other", "--json")
    assert r.returncode == 1 and "has no dataset 'other' (it has: s)" in r.stderr  # ... and a typo is named
    # fit: the --json keys scripts rely on; no validation split here, so 20 % of train is carved
    clf = str(tmp_path / "clf")
    r = cli("fit", "--store", st, "--dataset", "s", "--out", clf, "--etas", "0.5", "--threads", "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("baseline", "best_probe", "stc"):
        assert set(out[key]["validation"]) >= {"accuracy", "macro_f1"} and set(out[key]["test"]) >= {"accuracy"}
    assert set(out["chosen"]) >= {"kind", "pooling", "eta", "l_temp", "n_neurons"}
    assert out["chosen"]["kind"] == "ffn" and out["carved_validation"] and out["seed"] == 0
    assert out["baseline"]["validation"]["accuracy"] is None  # h6.single was not extracted
    r = cli("fit", "--store", st, "--dataset", "s", "--out", clf, "--etas", "0.5")
    assert r.returncode == 1 and "--force" in r.stderr  # never overwrites a classifier silently
    r = cli("fit", "--store", st, "--dataset", "s", "--etas", "1.5")
    assert r.returncode == 1 and "η must be in (0, 1]" in r.stderr


def test_sql_is_read_only(tmp_path, small):
    st = tmp_path / "st"
    assert cli("ingest", str(small), "--store", str(st), "--dataset", "s").returncode == 0
    before = {p: p.stat().st_mtime_ns for p in st.rglob("*")}
    r = cli("sql", "--store", str(st), "create table t as select * from texts")
    assert r.returncode == 0  # lands in DuckDB's in-memory catalog, not the store
    assert cli("sql", "--store", str(st), "select count(*) from texts").returncode == 0
    assert {p: p.stat().st_mtime_ns for p in st.rglob("*")} == before  # nothing created or touched


@pytest.mark.parametrize("args,code,needle", [
    (["sql", "--store", "{tmp}", "select 1"], 1, "not an stcstore store"),
    (["extract", "--store", "{st}", "--dataset", "s", "--layers", "0-99"], 1, "out of range"),
    (["extract", "--store", "{st}", "--dataset", "s", "--kinds", "attn"], 1, "--kinds"),
    (["ingest", "{tmp}/missing.jsonl", "--store", "{st}", "--dataset", "s"], 1, "no such file"),
    (["ingest", "--store", "{st}"], 1, "Missing"),
    (["sql", "--store", "{st}", "--query", "nope"], 1, "no named query 'nope'"),
    (["sql", "--store", "{st}", "select * from nonexistent_table"], 1, "query failed"),
    (["extract", "--store", "{st}", "--dataset", "s", "--model", "{tmp}/no-such-model"], 1, "cannot load model"),
    (["fit", "--store", "{tmp}/stt", "--dataset", "s"], 1, "is not a directory. A store is created by `stcstore ingest"),
    # a mistyped dataset: every command names the datasets the store holds
    (["extract", "--store", "{st}", "--dataset", "ss"], 1, "has no dataset 'ss' (it has: s)"),
    (["fit", "--store", "{st}", "--dataset", "ss"], 1, "has no dataset 'ss' (it has: s)"),
    (["sql", "--store", "{st}", "--query", "top_neurons", "--param", "dataset=ss"], 1, "has no dataset 'ss' (it has: s)"),
    (["sql", "--store", "{st}", "select count(*) from texts where dataset = $dataset", "--param", "dataset=x"], 1,
     "has no dataset 'x'"),
])
def test_handled_failures_exit_1_with_a_clear_message(tmp_path, small, args, code, needle):
    st = tmp_path / "st"
    ingest(st, [small], IngestConfig("s"))
    r = cli(*[a.format(tmp=tmp_path, st=st) for a in args], "--json")
    assert r.returncode == code, r.stderr
    assert needle in r.stderr
    assert json.loads(r.stdout)["exit_code"] == code  # still pure JSON on stdout


def test_unexpected_errors_exit_2(monkeypatch, tmp_path):
    import stcstore.store.query

    def boom(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(stcstore.store.query, "run_query", boom)
    r = cli("sql", "--store", str(tmp_path), "select 1", "--json")
    assert r.returncode == 2
    assert "Traceback" in r.stderr and "a bug" in r.stderr
    assert json.loads(r.stdout) == {"error": "unexpected error (RuntimeError): a bug", "exit_code": 2}


def test_installed_script_exit_codes_and_json(tmp_path, small):
    """The console script itself (a real process): exit 0 with pure JSON, exit 1 with a JSON error."""
    script = Path(sys.executable).with_name("stcstore")
    st = tmp_path / "st"
    r = subprocess.run([str(script), "ingest", str(small), "--store", str(st), "--dataset", "s", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["ingested"] == 18, r.stderr
    r = subprocess.run([str(script), "sql", "--store", str(tmp_path), "select 1", "--json"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and json.loads(r.stdout)["exit_code"] == 1 and "not an stcstore store" in r.stderr


def test_named_queries_are_listed():
    assert {"top_neurons", "layer_effects", "layer_summary", "rejects_by_reason"} <= set(named_queries())
    r = cli("sql", "--store", ".", "--list")
    assert r.returncode == 0 and "top_neurons" in r.stdout


@pytest.mark.slow
def test_demo_runs_on_embedded_default(tmp_path):
    r = cli("demo", "--out", str(tmp_path / "demo"), "--json", "--threads", "2")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["texts"] == 6800 and out["extracted"] == 6800 and out["rejected"] == 0
    assert len(out["top_neurons"]) == 10 and out["top_neurons"][0]["effect_size"] > 0.5
    fitted = out["fit"]
    assert fitted["stc"]["validation"]["accuracy"] > 0.75 and fitted["baseline"]["validation"]["accuracy"] > 0.6
    assert (tmp_path / "demo" / "classifier" / "manifest.json").exists()
    assert (tmp_path / "demo" / "store" / "store.json").exists() and out["store"] == str(tmp_path / "demo" / "store")
    assert out["report_html"] == str(tmp_path / "demo" / "report" / "report.html")
    assert "<svg" in Path(out["report_html"]).read_text()
    again = json.loads(cli("demo", "--out", str(tmp_path / "demo"), "--json").stdout)
    assert again["extracted"] == 0 and again["texts"] == 6800  # re-run resumes: nothing new


def test_hub_name_loads_offline_from_the_hf_cache(tmp_path, tiny_gpt2_dir, small):
    """A hub id resolves through the Hugging Face cache layout (models--org--name/snapshots/<sha>), offline,
    and its revision lands in the feature set's fingerprint."""
    import shutil

    from stcstore.ingest import IngestConfig, ingest

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--stc--tiny-gpt2"
    shutil.copytree(tiny_gpt2_dir, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    st = tmp_path / "st"
    ingest(st, [small], IngestConfig("s"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "stcstore.cli.main", "extract", "--store", str(st), "--dataset", "s",
                        "--model", "stc/tiny-gpt2", "--layers", "0-1", "--json"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    fs = json.loads((next((st / "features" / "dataset=s").glob("fs=*")) / "featureset.json").read_text())
    assert fs["fingerprint"]["model"] == "stc/tiny-gpt2" and fs["fingerprint"]["revision"] == sha
    r = cli("sql", "--store", str(st), "--json", "select model, rows from feature_sets")
    assert json.loads(r.stdout)["rows"] == [{"model": "stc/tiny-gpt2", "rows": 18}]


def test_sql_file_with_params(tmp_path, small):
    from stcstore.ingest import IngestConfig, ingest

    st = tmp_path / "st"
    ingest(st, [small], IngestConfig("s"))
    q = tmp_path / "q.sql"
    q.write_text("select count(*) as n from texts where label = $label")
    r = cli("sql", "--store", str(st), "--file", str(q), "--param", "label=1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == [{"n": 9}]
    r = cli("sql", "--store", str(st), "--file", str(tmp_path / "nope.sql"))
    assert r.returncode == 1 and "cannot read --file" in r.stderr


@pytest.mark.parametrize("flag", ["--model-path", "--model"])
def test_score_model_path_and_its_old_spelling(monkeypatch, tmp_path, flag):
    """`score --model-path` (0.2: `--model`, which still works with a note) reaches the score config."""
    import stcstore.score

    seen = {}

    def capture(cfg):
        seen["model"] = cfg.model
        raise StcError("stop here")

    monkeypatch.setattr(stcstore.score, "score", capture)
    r = cli("score", "--classifier", str(tmp_path / "c"), "--input", str(tmp_path / "in.jsonl"),
            "--output", str(tmp_path / "p.parquet"), flag, "/models/minilm")
    assert r.returncode == 1 and "stop here" in r.stderr and seen == {"model": "/models/minilm"}
    assert ("note: `score --model` is now `score --model-path`" in r.stderr) == (flag == "--model")
