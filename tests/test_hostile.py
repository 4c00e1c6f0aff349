"""What a hostile or careless user cannot do (issue 23): no output option destroys a store or what a
command reads, `--force` replaces only an earlier output and atomically, killed runs leave nothing behind
for good, a classifier file cannot exhaust memory, read outside its directory or write a non-finite score,
SQL cannot write into DuckDB's temp directory or run forever, and extreme labels are refused by name."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from stcstore import load_classifier
from stcstore.core.atomic import commit_replacing, remove_dead_temps
from stcstore.core.errors import StcError
from stcstore.core.fingerprint import file_sha256

from .conftest import cli, write_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "v0_1_0"


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def work(tmp_path) -> Path:
    """A copy of 0.1.0's store and classifier, and an input file."""
    shutil.copytree(FIXTURE / "store", tmp_path / "st")
    shutil.copytree(FIXTURE / "classifier", tmp_path / "clf")
    shutil.copy(FIXTURE / "new-reviews.jsonl", tmp_path / "in.jsonl")
    return tmp_path


# ---------------------------------------------------------------------------------------------- 1. outputs
def test_no_output_option_can_touch_a_store_or_what_is_read(work):
    st, clf, inp = work / "st", work / "clf", work / "in.jsonl"
    chunk = next((st / "features").glob("dataset=*/fs=*/chunk-000001"))
    before, clf_before, in_before = _tree(st), _tree(clf), inp.read_bytes()
    fit = ["fit", "--store", st, "--dataset", "reviews", "--model", "0b1abacbcc483ed3"]
    cases = [
        (fit + ["--out", st, "--force"], "is the store"),
        (fit + ["--out", chunk], "lies inside the store"),
        (fit + ["--out", st / "fits" / "mine", "--force"], "lies inside the store"),
        (fit + ["--out", work, "--force"], "contains the store"),
        (["report", "--store", st, "--classifier", clf, "--out", st / "ingest", "--force"], "lies inside the store"),
        (["report", "--store", st, "--classifier", clf, "--out", clf, "--force"], "the classifier"),
        (["report", "--store", st, "--classifier", clf, "--out", work, "--force"], "contains the store"),
        (["score", "--classifier", clf, "--input", inp, "--output", inp, "--force"], "the input file"),
        (["score", "--classifier", clf, "--input", inp, "--output", clf / "p.parquet"], "the classifier"),
        (["score", "--classifier", clf, "--input", inp, "--output", clf], "the classifier"),
        (["score", "--classifier", clf, "--input", inp, "--output", st / "p.parquet", "--force"], "inside the store"),
        (["score", "--classifier", clf, "--input", inp, "--output", st / "ingest"], "inside the store"),
        (["score", "--classifier", clf, "--input", inp, "--output", work / "p.parquet", "--explain", "tokens",
          "--explain-out", st / "features" / "x"], "inside the store"),
        (["ingest", inp, "--store", st / "ingest" / "dataset=reviews" / "batch=000099", "--dataset", "x"],
         "lies inside the store"),
    ]
    os.symlink(st / "ingest", work / "link")  # a link cannot smuggle an output in
    cases.append((fit + ["--out", work / "link" / "clf2"], "lies inside the store"))
    for args, said in cases:
        r = cli(*args)
        assert r.returncode == 1 and said in r.stderr, (args, r.stderr)
    assert _tree(st) == before and _tree(clf) == clf_before and inp.read_bytes() == in_before
    # the one place inside a store for predictions is its predictions table
    r = cli("score", "--classifier", clf, "--input", inp, "--output", st / "predictions", "--explain", "tokens",
            "--model", FIXTURE / "model")
    assert r.returncode == 0, r.stderr
    assert cli("sql", "--store", st, "select count(*) from predictions").returncode == 0


def test_force_replaces_only_an_earlier_output_of_its_kind(work):
    c = load_classifier(work / "clf")
    notes = work / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("years of work")
    with pytest.raises(StcError, match="not a classifier directory"):
        c.save(notes, force=True)
    assert (notes / "thesis.tex").read_text() == "years of work"
    c.save(work / "clf2")
    c.save(work / "clf2", force=True)  # an earlier classifier is replaced
    assert load_classifier(work / "clf2").fingerprint == c.fingerprint
    rep = work / "rep"
    rep.mkdir()
    (rep / "data.csv").write_text("1,2")
    r = cli("report", "--store", work / "st", "--classifier", work / "clf", "--out", rep, "--force")
    assert r.returncode == 1 and "not a report directory" in r.stderr and (rep / "data.csv").exists()


# ---------------------------------------------------------------------------------------------- 2. atomic --force
KILL_AT = textwrap.dedent("""
    import os, shutil, signal, sys
    from pathlib import Path
    import stcstore.core.atomic as atomic
    final, new, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if mode == "after-exchange":
        shutil.rmtree = die  # killed once the new directory is in place, before the old one is deleted
    else:  # no atomic exchange on this system: killed between moving the old aside and renaming the new in
        atomic.exchange = lambda a, b: False
        real, calls = os.rename, []
        def rename(a, b):
            calls.append(a)
            if len(calls) == 2:
                die()
            real(a, b)
        os.rename = rename
    with atomic.staging(final, directory=True) as tmp:
        shutil.copytree(new, tmp, dirs_exist_ok=True)
        atomic.commit_replacing(tmp, final)
""")


@pytest.mark.parametrize("mode", ["after-exchange", "between-renames"])
def test_a_killed_replacement_leaves_the_old_or_the_new_and_is_cleaned_up(tmp_path, mode):
    final, new = tmp_path / "out", tmp_path / "new"
    final.mkdir()
    (final / "which").write_text("old")
    new.mkdir()
    (new / "which").write_text("new")
    p = subprocess.run([sys.executable, "-c", KILL_AT, str(final), str(new), mode], capture_output=True)
    assert p.returncode == -9, p.stderr
    left = sorted(x.name.split("-")[0] + "-" + x.name.split("-")[1] for x in tmp_path.glob(".*"))
    if mode == "after-exchange":
        assert (final / "which").read_text() == "new" and left == [".tmp-out"]
    else:
        assert not final.exists() and left == [".old-out", ".tmp-out"]
    assert remove_dead_temps(final) == len(left)  # the next run recovers
    assert (final / "which").read_text() == ("new" if mode == "after-exchange" else "old")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["new", "out"]


def test_commit_replacing_keeps_a_directory_in_place_at_every_step(tmp_path, monkeypatch):
    """Every filesystem step of a replacement, watched: `final` is never missing (atomic exchange; 0.2
    renamed the old one aside first)."""
    import stcstore.core.atomic as atomic

    final = tmp_path / "out"
    final.mkdir()
    tmp = tmp_path / ".tmp-out-1-x"
    tmp.mkdir()
    (tmp / "f").write_text("new")
    seen = []
    real_rename, real_rmtree = os.rename, shutil.rmtree

    def rename(a, b):
        real_rename(a, b)
        seen.append(final.exists())

    monkeypatch.setattr(atomic.os, "rename", rename)
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda p, **k: (seen.append(final.exists()), real_rmtree(p, **k)))
    monkeypatch.setattr(Path, "rename", lambda self, target: rename(self, target))
    assert commit_replacing(tmp, final) and seen and all(seen) and (final / "f").read_text() == "new"


# ---------------------------------------------------------------------------------------------- 3. litter
def test_every_temp_of_a_dead_writer_is_swept(work):
    st, clf = work / "st", work / "clf"
    dead = _dead_pid()
    spill = st / "fits" / ".tmp-spill-abc123"  # a killed fit's refit spill
    spill.mkdir(parents=True)
    (spill / "part.npy").write_bytes(b"x" * 100)
    partial = work / f".tmp-out-{dead}-deadbeef"  # a killed fit's partial classifier beside --out
    partial.mkdir()
    (partial / "coef.npy").write_bytes(b"partial")
    duck = Path(tempfile.gettempdir()) / f"stcstore-duckdb-{dead}-zz9"  # a killed SQL session's spill dir
    duck.mkdir()
    (duck / "big.csv").write_bytes(b"x" * 100)
    r = cli("fit", "--store", st, "--dataset", "reviews", "--model", "0b1abacbcc483ed3", "--out", work / "out", "--etas", "0.8")
    assert r.returncode == 0, r.stderr
    assert not spill.exists() and not partial.exists() and (work / "out" / "manifest.json").exists()
    assert cli("sql", "--store", st, "select 1").returncode == 0
    assert not duck.exists()
    # a report and a score output sweep theirs too
    for name in (f".tmp-rep-{dead}-0a0a0a0a", f".tmp-p.parquet-{dead}-0b0b0b0b",
                 f".tmp-p.explain.jsonl-{dead}-0c0c0c0c"):
        (work / name).write_bytes(b"partial")
    assert cli("report", "--store", st, "--classifier", clf, "--out", work / "rep").returncode == 0
    r = cli("score", "--classifier", clf, "--input", work / "in.jsonl", "--output", work / "p.parquet",
            "--explain", "tokens", "--model", FIXTURE / "model")
    assert r.returncode == 0, r.stderr
    assert not [p.name for p in work.glob(".tmp-*")]


# ---------------------------------------------------------------------------------------------- 5, 6, 10. classifier files
def _tamper(src: Path, dst: Path, edit=None, arrays: dict[str, np.ndarray] | None = None) -> Path:
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for name, a in (arrays or {}).items():
        np.save(dst / f"{name}.npy", a)
        m["arrays"][name].update(sha256=file_sha256(dst / f"{name}.npy"), shape=list(a.shape))
    if edit:
        edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_a_classifier_file_cannot_exhaust_memory(tmp_path):
    import resource

    src = FIXTURE / "classifier"

    def huge_head(m):  # consolidation head whose manifest claims 5.7 million units
        m.update(version=2, head={"type": "consolidation", "hidden_units": [6, 6], "units": 5_700_000})
    d = _tamper(src, tmp_path / "units", huge_head)
    with pytest.raises(StcError, match="head.units is 5700000, outside 1..4"):
        load_classifier(d)
    # a sparse 10 GB array file whose manifest agrees on its checksum is refused by its size, unread
    d = _tamper(src, tmp_path / "sparse")
    with open(d / "coef.npy", "r+b") as f:
        f.truncate(10 << 30)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(StcError, match="coef.npy is 10,737,418,240 bytes; its manifest allows at most"):
        load_classifier(d)
    assert time.perf_counter() - t0 < 5 and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100_000
    # a manifest that claims arrays beyond the bound is refused before any is read
    d = _tamper(src, tmp_path / "classes", lambda m: m.update(classes=[f"c{i}" for i in range(20_000)]))
    with pytest.raises(StcError, match="classes holds 20000 classes"):
        load_classifier(d)


def test_a_classifier_that_cannot_give_finite_scores_is_refused(tmp_path):
    src = FIXTURE / "classifier"
    mean = np.load(src / "mean.npy")
    d = _tamper(src, tmp_path / "absurd", arrays={"mean": mean * 1e308 + 1e307})
    with pytest.raises(StcError, match="can give scores of inf"):
        load_classifier(d)
    r = cli("score", "--classifier", d, "--input", FIXTURE / "new-reviews.jsonl", "--output", tmp_path / "p.parquet")
    assert r.returncode == 1 and "refused" in r.stderr and not (tmp_path / "p.parquet").exists()
    # features far beyond any model's range: a non-finite score is an error naming the classifier, never written
    clf = load_classifier(src)
    X = np.full((3, clf.n_features), 3e38, dtype=np.float32)
    with pytest.raises(StcError, match=f"classifier {src} gave a score that is not finite for 3 of 3 rows"):
        clf.predict_proba_features(X)


def test_classifier_files_must_be_regular_files_inside_it(tmp_path):
    outside = tmp_path / "elsewhere.npy"
    shutil.copy(FIXTURE / "classifier" / "coef.npy", outside)
    d = shutil.copytree(FIXTURE / "classifier", tmp_path / "clf")
    (d / "coef.npy").unlink()
    os.symlink(outside, d / "coef.npy")  # same bytes, same checksum: still refused
    with pytest.raises(StcError, match="coef.npy is a symbolic link"):
        load_classifier(d)
    d2 = shutil.copytree(FIXTURE / "classifier", tmp_path / "clf2")
    (d2 / "manifest.json").rename(tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", d2 / "manifest.json")
    with pytest.raises(StcError, match="manifest.json is a symbolic link"):
        load_classifier(d2)
    d3 = shutil.copytree(FIXTURE / "classifier", tmp_path / "clf3")
    (d3 / "scale.npy").unlink()
    os.mkfifo(d3 / "scale.npy")  # would block a reader forever
    with pytest.raises(StcError, match="scale.npy is not a regular file"):
        load_classifier(d3)


# ---------------------------------------------------------------------------------------------- 7, 8. SQL
def test_sql_cannot_write_into_duckdbs_temp_directory(work):
    before = {p.name for p in Path(tempfile.gettempdir()).glob("stcstore-duckdb-*")}
    for stmt in ["COPY (SELECT range FROM range(100000)) TO (current_setting('temp_directory') || '/big.csv')",
                 "PREPARE p AS COPY (SELECT 1) TO 'x.csv'", "CALL pragma_version()", "SELECT 1; SET threads = 1"]:
        r = cli("sql", "--store", work / "st", stmt)
        assert r.returncode == 1 and "query refused" in r.stderr, (stmt, r.stderr)
    assert {p.name for p in Path(tempfile.gettempdir()).glob("stcstore-duckdb-*")} == before


@pytest.mark.parametrize("stmt", ["WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) "
                                  "SELECT count(*) FROM t",
                                  "SELECT count(*) FROM range(1000000) a, range(1000000) b"])
def test_runaway_sql_stops_at_the_time_limit(work, stmt):
    t0 = time.perf_counter()
    r = cli("sql", "--store", work / "st", stmt, "--timeout", "1")
    assert r.returncode == 1 and "time limit of 1 s (--timeout)" in r.stderr
    assert time.perf_counter() - t0 < 20
    assert cli("sql", "--store", work / "st", "select count(*) from texts", "--timeout", "0").returncode == 0


# ---------------------------------------------------------------------------------------------- 9. one file rule
def test_score_and_ingest_give_one_verdict_on_a_file_without_the_text_field(work):
    f = write_jsonl(work / "notext.jsonl", [{"id": i, "body": f"text {i}"} for i in range(5)])
    ing = cli("ingest", f, "--store", work / "new", "--dataset", "d")
    sc = cli("score", "--classifier", work / "clf", "--input", f, "--output", work / "p.parquet")
    for r in (ing, sc):
        assert r.returncode == 1 and "no row has the text field 'text'; pass --text-field" in r.stderr, r.stderr
    assert not (work / "p.parquet").exists()
