"""`--engine ray` against the local engine, on one local Ray cluster (num_cpus=2) shared by this module:
the same chunks and feature bytes, the same predictions, the same fit; a worker killed mid-run and a
driver killed mid-run still end with a complete, duplicate-free store. Skipped without `stcstore[ray]`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow.parquet as pq
import pytest

from stcstore import Store, load_classifier
from stcstore.features import ExtractConfig, extract
from stcstore.fit import FitConfig, fit
from stcstore.ingest import IngestConfig, ingest
from stcstore.score import ScoreConfig, score
from stcstore.store.query import run_query

from .conftest import FAST, cli, learnable_corpus, sigkill_when
from .conftest import run_cli as _run_cli

ray = pytest.importorskip("ray")
from stcstore.cluster import RayOptions, ray_extract, ray_fit, ray_score  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (starting one takes seconds)."""
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _stores(tmp: Path, n: int, names=("local", "ray")) -> list[Path]:
    src = learnable_corpus(tmp / "c.jsonl", n, ("0", "1"))
    for name in names:
        ingest(tmp / name, [src], IngestConfig("d", split_field="split"))
    return [tmp / name for name in names]


def _snapshot(st: Path) -> dict[str, bytes]:
    """Every file of the store's one feature set but its manifest (which records how it was made)."""
    fs = next((st / "features" / "dataset=d").glob("fs=*"))
    return {p.relative_to(fs.parent).as_posix(): p.read_bytes() for p in sorted(fs.rglob("*"))
            if p.is_file() and p.name not in ("featureset.json", "stats.parquet")}


def _stats(st: Path) -> list:
    fs = next((st / "features" / "dataset=d").glob("fs=*"))
    return [pq.read_table(p).to_pylist() for p in sorted(fs.glob("chunk-*/stats.parquet"))]


def _worker_pids(name: str) -> list[int]:
    """Processes whose title is Ray's actor title for `name` (ray::NAME or ray::NAME.method)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(f"ray::{name}"):
                pids.append(int(p.name))
    return pids


@contextlib.contextmanager
def _kill_a_worker(name: str, ready: Callable[[], bool]) -> Iterator[list[int]]:
    """While the body runs, SIGKILL one actor process of class `name` as soon as `ready()` holds (polled
    every 5 ms); yields the list of killed pids (empty if the body ended first)."""
    killed: list[int] = []
    done = threading.Event()

    def killer() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not killed and not done.is_set():
            if ready():
                pids = _worker_pids(name)
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.005)

    t = threading.Thread(target=killer)
    t.start()
    try:
        yield killed
    finally:
        done.set()
        t.join()


def test_extract_on_ray_equals_local_extract_byte_for_byte(tmp_path, tiny_gpt2_dir, cluster):
    """Same chunks (the driver plans them as a local run does), same ids in the same order, and the same
    feature bytes: each chunk goes through the same feature path with the same batches, and the actors
    use the same torch thread count as the local run (with another count, matrix products may round
    differently: features then agree to one float16 step, not bit for bit)."""
    local, remote = _stores(tmp_path, 300)
    cfg = ExtractConfig("d", model=str(tiny_gpt2_dir), chunk_rows=25, batch_size=8, threads=1)
    a = extract(local, cfg)
    b = ray_extract(remote, cfg, RayOptions(workers=2))
    assert (a.feature_set, a.chunks_written, a.texts_extracted) == (b.feature_set, 12, 300) == (b.feature_set,
                                                                                                 b.chunks_written, 300)
    assert any("Ray: 2 workers" in m for m in b.messages)
    sa, sb = _snapshot(local), _snapshot(remote)
    assert sorted(sa) == sorted(sb) and all(sa[k] == sb[k] for k in sa)
    assert _stats(local) == _stats(remote)  # per-chunk neuron statistics too
    assert not list(remote.rglob(".tmp-*"))
    again = ray_extract(remote, cfg, RayOptions(workers=2))  # resumable: nothing left to do
    assert again.texts_extracted == 0 and again.chunks_written == 0


def test_fit_and_score_on_ray_equal_local(tmp_path, tiny_gpt2_dir, cluster):
    local, remote = _stores(tmp_path, 300)
    ecfg = ExtractConfig("d", model=str(tiny_gpt2_dir), chunk_rows=50, batch_size=16, threads=1)
    extract(local, ecfg)
    extract(remote, ecfg)
    cfg = FitConfig("d", model=str(tiny_gpt2_dir), threads=1, **FAST)
    a = fit(local, cfg, out=tmp_path / "clf-local")
    b = ray_fit(remote, cfg, RayOptions(workers=2), out=tmp_path / "clf-ray")
    assert a.fit_id == b.fit_id and a.chosen == b.chosen
    for part in ("baseline", "best_probe", "stc"):
        assert getattr(a, part)["validation"] == getattr(b, part)["validation"]
        assert getattr(a, part)["test"] == getattr(b, part)["test"]
    ca, cb = load_classifier(tmp_path / "clf-local"), load_classifier(tmp_path / "clf-ray")
    np.testing.assert_array_equal(ca.coef_, cb.coef_)
    # the probes tables agree row for row (Ray ran them as tasks)
    q = ("select kind, pooling, layer, step, lam, n_nonzero, objective, val_accuracy, val_log_loss, chosen "
         "from probes order by kind, pooling, layer, step")
    pa_rows, pb_rows = run_query(local, q).rows, run_query(remote, q).rows
    assert len(pa_rows) > 20 and pa_rows == pb_rows

    sc = dict(classifiers=(str(tmp_path / "clf-local"),), store=str(local), dataset="d", chunk_rows=40, threads=1)
    ra = score(ScoreConfig(output=str(tmp_path / "pred-local"), **sc))
    rb = ray_score(ScoreConfig(output=str(tmp_path / "pred-ray"), **sc), RayOptions(workers=2))
    assert ra.scored_texts == rb.scored_texts == 300 and rb.files_written == 8
    assert [c.scored for c in ra.classifiers] == [c.scored for c in rb.classifiers]
    _assert_same_predictions(_preds(tmp_path / "pred-local"), _preds(tmp_path / "pred-ray"))
    assert rb.groups[0]["texts"] == 300 and rb.groups[0]["blocks_run"] == ra.groups[0]["blocks_run"]
    again = ray_score(ScoreConfig(output=str(tmp_path / "pred-ray"), **sc), RayOptions(workers=2))
    assert again.scored_texts == 0 and again.classifiers[0].already == 300  # incremental, as locally


def _assert_same_predictions(a: dict, b: dict, atol: float = 1e-4) -> None:
    """The same texts, labels and probabilities: to a tolerance, since the two runs compute in different
    processes, batches and possibly kernels (the last bits differ between CPUs and batch shapes); a label may
    differ only where its probability sits within the tolerance of a tie."""
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k][1], b[k][1], rtol=0, atol=atol)
        assert a[k][0] == b[k][0] or abs(max(a[k][1]) - sorted(a[k][1])[-2]) < 2 * atol, k


def _preds(path: Path) -> dict[str, tuple[str, list[float]]]:
    out = {}
    for f in sorted(path.glob("run_date=*/part-*.parquet")):
        t = pq.read_table(f)
        for i, label, p in zip(*(t.column(k).to_pylist() for k in ("id", "label", "probabilities"))):
            assert i not in out, f"duplicate prediction for {i}"
            out[i] = (label, p)
    return out


def test_a_worker_killed_mid_run_leaves_a_complete_store(tmp_path, tiny_gpt2_dir, cluster):
    """SIGKILL one extract actor after the first chunks are committed: Ray restarts it and retries its
    chunk; the store ends complete, without duplicates, and equal to an uninterrupted run."""
    ref, st = _stores(tmp_path, 600, ("ref", "st"))
    cfg = ExtractConfig("d", model=str(tiny_gpt2_dir), chunk_rows=10, batch_size=4, threads=1)
    extract(ref, cfg)
    fs_glob = st / "features" / "dataset=d"

    def ready() -> bool:
        fs = next(fs_glob.glob("fs=*"), None) if fs_glob.exists() else None
        return fs is not None and len(list(fs.glob("chunk-*"))) >= 3

    with _kill_a_worker("ExtractWorker", ready) as killed:
        r = ray_extract(st, cfg, RayOptions(workers=2))
    assert killed, "the run ended before a worker could be killed"
    assert r.texts_extracted == 600 and r.chunks_total == 60
    sa, sb = _snapshot(ref), _snapshot(st)
    assert sorted(sa) == sorted(sb) and all(sa[k] == sb[k] for k in sa)
    ids, _, _ = Store(st).matrix("d", str(tiny_gpt2_dir), "hidden", "mean", 0, None)
    assert len(ids) == 600 == len(set(ids.tolist()))
    assert not list(st.rglob(".tmp-*"))


def test_a_killed_driver_resumes_without_duplicates_or_holes(tmp_path, tiny_gpt2_dir):
    """SIGKILL the driver (`stcstore extract --engine ray`, its own local cluster) once chunks exist; the
    next run (on Ray again) does only the missing chunks and the store equals an uninterrupted one."""
    ref, st = _stores(tmp_path, 400, ("ref", "st"))
    args = ["--dataset", "d", "--model", str(tiny_gpt2_dir), "--chunk-rows", "10", "--batch-size", "4",
            "--threads", "1"]
    extract(ref, ExtractConfig("d", model=str(tiny_gpt2_dir), chunk_rows=10, batch_size=4, threads=1))
    ray_args = ["--engine", "ray", "--ray-address", "local", "--workers", "2"]

    def chunks() -> int:
        fs = next((st / "features" / "dataset=d").glob("fs=*"), None) if (st / "features").exists() else None
        return 0 if fs is None else len(list(fs.glob("chunk-*")))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    # its own session: the local cluster the driver starts is in its process group, removed after the kill
    driver = subprocess.Popen([sys.executable, "-m", "stcstore.cli.main", "extract", "--store", str(st), *args,
                               *ray_args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        assert sigkill_when(driver, lambda: chunks() >= 4, timeout=240)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # what is left of its cluster (Ray's agents outlive a killed driver)
        except ProcessLookupError:
            pass
    assert 4 <= chunks() < 40
    p = _run_cli(["extract", "--store", str(st), *args, *ray_args, "--json"])
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["texts_present_before"] >= 40 and summary["chunks_total"] == 40
    sa, sb = _snapshot(ref), _snapshot(st)
    assert sorted(sa) == sorted(sb) and all(sa[k] == sb[k] for k in sa)
    assert not list(st.rglob(".tmp-*"))


def test_ray_options_and_unsupported_outputs_are_clear(tmp_path):
    r = cli("extract", "--store", str(tmp_path), "--dataset", "d", "--workers", "2")
    assert r.returncode == 1 and "--workers only apply with --engine ray" in r.stderr
    with pytest.raises(Exception, match="a predictions directory"):
        ray_score(ScoreConfig(classifiers=(str(tmp_path),), output=str(tmp_path / "p.parquet"), input="x.jsonl"))
    r = cli("fit", "--store", str(tmp_path), "--dataset", "d", "--engine", "ray", "--gpus-per-worker", "-1")
    assert r.returncode == 1 and "--gpus-per-worker" in r.stderr


def test_a_score_worker_killed_mid_run_leaves_every_prediction_once(tmp_path, tiny_gpt2_dir, cluster):
    (st,) = _stores(tmp_path, 600, ("st",))
    extract(st, ExtractConfig("d", model=str(tiny_gpt2_dir), batch_size=32, threads=1))
    fit(st, FitConfig("d", model=str(tiny_gpt2_dir), kinds=("hidden",), poolings=("mean",), threads=1, **FAST),
        out=tmp_path / "clf")
    out = tmp_path / "pred"
    with _kill_a_worker("ScoreWorker", lambda: len(list(out.glob("run_date=*/part-*.parquet"))) >= 3) as killed:
        r = ray_score(ScoreConfig((str(tmp_path / "clf"),), str(out), store=str(st), dataset="d", chunk_rows=10,
                                  batch_size=4, threads=1), RayOptions(workers=2))
    assert killed, "the run ended before a worker could be killed"
    assert r.scored_texts == 600 and r.files_written == 60
    preds = _preds(out)  # asserts no duplicates
    assert len(preds) == 600 and not list(out.rglob(".tmp-*"))
    local = score(ScoreConfig((str(tmp_path / "clf"),), str(tmp_path / "local"), store=str(st), dataset="d",
                              chunk_rows=10, threads=1))
    assert local.scored_texts == 600
    _assert_same_predictions(_preds(tmp_path / "local"), preds)


def test_slp_probes_and_consolidation_head_on_ray_equal_local(tmp_path, tiny_gpt2_dir, cluster):
    """SLP probes are seeded networks: as Ray tasks (same threads) they train to the same weights, and the
    consolidation head built on them (on the driver) is the same head."""
    local, remote = _stores(tmp_path, 200)
    ecfg = ExtractConfig("d", model=str(tiny_gpt2_dir), batch_size=16, threads=1)
    extract(local, ecfg)
    extract(remote, ecfg)
    cfg = FitConfig("d", model=str(tiny_gpt2_dir), probe="slp", aggregator="consolidation", kinds=("hidden",),
                    poolings=("mean",), threads=1, **FAST)
    a, b = fit(local, cfg), ray_fit(remote, cfg, RayOptions(workers=2))
    assert a.fit_id == b.fit_id and a.chosen == b.chosen and a.best_probe == b.best_probe and a.stc == b.stc
    assert a.chosen["aggregator"] == "consolidation" and a.aggregators == b.aggregators
    assert a.best_probe["C"] is None  # an SLP has no regularisation strength (no NaN in `fit --json`)
    q = "select layer, step, val_accuracy, val_log_loss, chosen from probes where probe = 'slp' order by layer, step"
    assert run_query(local, q).rows == run_query(remote, q).rows
