"""`fit --workers N`: the per-layer probes in a pool of worker processes, each on one thread. The result
must not depend on N: the same probes, fit id, choice and classifier as one worker."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from stcstore import Store, load_classifier
from stcstore.fit import FitConfig, fit
from stcstore.fit.parallel import Workers, available_cpus

from .conftest import FAST, cli, tiny_bert_store


@pytest.fixture(scope="module")
def store(tmp_path_factory, bert_tokenizer):
    return tiny_bert_store(tmp_path_factory.mktemp("par"), bert_tokenizer, classes=("0", "1", "2"))[0]


def _probes(st, fit_id: str) -> list[dict]:
    """The probes table of a fit (every path point), without timings."""
    t = pq.read_table(st / "fits" / "dataset=d" / f"fit={fit_id}" / "probes.parquet")
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in t.to_pylist()]
    return sorted(rows, key=lambda r: (r["kind"], r["pooling"], r["layer"], r["step"]))


@pytest.mark.parametrize("probe", ["lr", "slp"])
def test_any_number_of_workers_gives_the_same_fit(store, tmp_path, probe):
    res, tables = {}, {}
    for w in (1, 2, 3):
        res[w] = fit(store, FitConfig("d", model="tiny-bert", probe=probe, workers=w, threads=2, **FAST),
                     out=tmp_path / f"w{w}")
        tables[w] = _probes(store, res[w].fit_id)
    one = res[1]
    for w in (2, 3):
        assert res[w].fit_id == one.fit_id and res[w].chosen == one.chosen
        assert res[w].stc == one.stc and res[w].best_probe == one.best_probe
        a, b = load_classifier(tmp_path / "w1"), load_classifier(tmp_path / f"w{w}")
        assert a.fingerprint == b.fingerprint
        for name in a.arrays:
            assert np.array_equal(a.arrays[name], b.arrays[name])
        assert tables[w] == tables[1]  # every path point of every probe


def test_workers_option(store, tmp_path):
    assert available_cpus() >= 1
    r = cli("fit", "--store", store, "--dataset", "d", "--model", "tiny-bert", "--workers", "0")
    assert r.returncode == 1 and "--workers" in r.stderr
    r = cli("extract", "--store", store, "--dataset", "d", "--model", "tiny-bert", "--workers", "2")
    assert r.returncode == 1 and "--workers only apply with --engine ray" in r.stderr
    r = cli("fit", "--store", store, "--dataset", "d", "--feature-set", "tiny-bert", "--workers", "2", "--etas", "0.8",
            "--out", tmp_path / "c", "--json")
    assert r.returncode == 0, r.stderr
    assert Store(store).root.exists() and "is now" not in r.stderr
    # 0.2's spelling of --feature-set still works, with a note
    r = cli("fit", "--store", store, "--dataset", "d", "--model", "tiny-bert", "--etas", "0.8", "--json")
    assert r.returncode == 0 and "note: `fit --model` is now `fit --feature-set`" in r.stderr
    assert json.loads(r.stdout)["chosen"]["eta"] == 0.8


def _task(i: int, seconds: float) -> tuple[int, int]:
    time.sleep(seconds)
    if i < 0:
        raise ValueError(f"task {i} failed")
    return i, os.getpid()


def test_workers_map_shares_one_queue_between_this_process_and_the_pool():
    """Results come in task order; this process takes tasks too (from the back of the queue) and the pool's
    worker the rest; an error in either is raised here."""
    tasks = [(i, 0.3 if i % 3 == 0 else 0.05) for i in range(12)]
    out = list(Workers(2).map(_task, tasks))
    assert [i for i, _ in out] == list(range(12))
    pids = {pid for _, pid in out}
    assert os.getpid() in pids and len(pids) == 2
    assert out[0][1] != os.getpid() and out[-1][1] == os.getpid()  # the pool starts at the front, this process at the back
    assert list(Workers(1).map(_task, tasks[:3])) == [(0, os.getpid()), (1, os.getpid()), (2, os.getpid())]
    with pytest.raises(ValueError, match="task -1 failed"):
        list(Workers(2).map(_task, [(0, 0.0), (1, 0.2), (-1, 0.0)]))  # the last one runs here
    with pytest.raises(ValueError, match="task -1 failed"):
        list(Workers(2).map(_task, [(-1, 0.0), (1, 0.5), (2, 0.5)]))  # the first one runs in the pool


def test_costly_tasks_are_taken_first_at_both_ends_of_the_queue():
    """With a cost per task, the pool (front) and this process (back) each start on the costliest tasks and
    the cheap ones are taken last; results still come in task order."""
    from stcstore.fit.parallel import both_ends

    assert both_ends([1, 5, 3, 4, 2]) == [1, 2, 0, 4, 3]  # front: 5, 3, 1 ... back: 4, 2
    assert both_ends([]) == [] and both_ends([7]) == [0]
    assert sorted(both_ends(list(range(9)))) == list(range(9))
    cost = [1, 1, 1, 1, 9, 8]  # the two costly tasks last in task order
    out = list(Workers(2).map(_task, [(i, 0.4 if cost[i] > 1 else 0.05) for i in range(6)], cost=cost))
    assert [i for i, _ in out] == list(range(6))
    assert out[4][1] != os.getpid() and out[5][1] == os.getpid()  # one costly task at each end


def test_an_early_started_pool_is_stopped_without_waiting_for_it(tmp_path, monkeypatch):
    """`fit` starts its pool processes before it imports torch (core.pool); a failing command stops them
    at once, not once their imports are done, and the next fit gets a fresh pool that works."""
    import psutil

    from stcstore.core.pool import local_pool, start_workers, stop_workers

    (tmp_path / "slow_import_for_the_pool_test.py").write_text("import time\ntime.sleep(120)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    local_pool(1).shutdown(wait=True, kill_workers=True)  # no pool of an earlier test: this one starts its own
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    start_workers(2, modules=("slow_import_for_the_pool_test",))
    pool = local_pool(1)
    workers = []
    for _ in range(300):  # the worker is up (and then busy importing for two minutes)
        workers = [p for p in psutil.Process().children(recursive=True)
                   if p.pid not in before and "LokyProcess" in " ".join(p.cmdline())]  # not loky's resource tracker
        if workers:
            break
        time.sleep(0.1)
    assert workers
    t0 = time.perf_counter()
    stop_workers()
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive and time.perf_counter() - t0 < 60  # killed, not waited for
    fresh = local_pool(1)
    assert fresh is not pool and fresh.submit(os.getpid).result(timeout=60) != os.getpid()


def test_blas_one_thread_limits_blas_and_restores_it():
    from threadpoolctl import threadpool_info

    from stcstore.core.threads import blas_one_thread

    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    if not blas:
        pytest.skip("no BLAS library loaded")
    before = [i["num_threads"] for i in blas]
    with blas_one_thread():
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


def test_default_workers_by_device():
    from stcstore.core.pool import DEVICE_WORKERS, default_workers

    assert default_workers("cpu") == available_cpus()
    assert default_workers("cuda:0") == max(1, min(available_cpus(), DEVICE_WORKERS))


def _aggregates(st, fit_id: str) -> list[dict]:
    t = pq.read_table(st / "fits" / "dataset=d" / f"fit={fit_id}" / "aggregates.parquet")
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in t.to_pylist()),
                  key=lambda r: (r["kind"], r["pooling"], r["eta"], r["l_temp"]))


def test_one_groups_depths_run_side_by_side_with_the_same_result(store, tmp_path, monkeypatch):
    """A fit of one kind/pooling (a GPT2-XL store of FFN max features) runs its depths' chains of aggregates
    (fit.grid) on every worker, the group's matrices shared through files the workers map: the same
    aggregates, choice and classifier as one process."""
    import stcstore.fit.search as search

    shared = []
    share = search.Grid.share

    def spy(self, folder):
        shared.append(folder)
        share(self, folder)

    monkeypatch.setattr(search.Grid, "share", spy)
    cfg = dict(model="tiny-bert", kinds=("ffn",), poolings=("max",), etas=(0.1, 0.3, 0.8),
               path=FAST["path"], threads=2)
    one = fit(store, FitConfig("d", workers=1, **cfg), out=tmp_path / "w1")
    table = _aggregates(store, one.fit_id)  # (the identical fit below replaces it)
    assert not shared and len(table) == 3 * 3
    two = fit(store, FitConfig("d", workers=2, **cfg), out=tmp_path / "w2")
    assert len(shared) == 1 and not shared[0].exists()  # the chains ran in the pool; the files are gone
    assert two.fit_id == one.fit_id and two.chosen == one.chosen and two.stc == one.stc
    assert _aggregates(store, two.fit_id) == table
    a, b = load_classifier(tmp_path / "w1"), load_classifier(tmp_path / "w2")
    assert a.fingerprint == b.fingerprint
