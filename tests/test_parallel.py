"""`fit --workers N`: the per-layer probes in a pool of worker processes, each on one thread. The result
must not depend on N: the same probes, fit id, choice and classifier as one worker."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from stcstore import Store, load_classifier
from stcstore.fit import FitConfig, fit
from stcstore.fit.parallel import available_cpus

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
    r = cli("fit", "--store", store, "--dataset", "d", "--model", "tiny-bert", "--workers", "2", "--etas", "0.8",
            "--out", tmp_path / "c", "--json")
    assert r.returncode == 0, r.stderr
    assert Store(store).root.exists()
