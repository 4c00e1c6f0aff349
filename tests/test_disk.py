"""OS errors (a full disk) end as exit 1 with the path and what to do; no temp is left behind; the store
stays consistent and the same command resumes once space is back."""

from __future__ import annotations

import errno
import json

import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from stcstore import Store
from stcstore.features import ExtractConfig, extract

from .conftest import build_tiny, cli, learnable_corpus


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device", "/store/chunk")


def _temps(root):
    return [p for p in root.rglob(".tmp-*")]


def test_disk_full_during_ingest_exits_1_leaves_no_temp_and_resumes(tmp_path, monkeypatch):
    src = learnable_corpus(tmp_path / "c.jsonl", 50, ("0", "1"))
    st = tmp_path / "st"
    monkeypatch.setattr(pq.ParquetWriter, "write_table", _enospc)
    r = cli("ingest", src, "--store", st, "--dataset", "d", "--json")
    assert r.returncode == 1 and "disk is full" in r.stderr and str(st) in r.stderr, r.stderr
    assert json.loads(r.stdout)["exit_code"] == 1
    assert not _temps(st) and Store(st).texts("d").num_rows == 0
    monkeypatch.undo()
    r = cli("ingest", src, "--store", st, "--dataset", "d", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ingested"] == 50


def test_disk_full_during_extract_exits_1_and_the_rerun_completes(tmp_path, monkeypatch, bert_tokenizer):
    from stcstore.ingest import IngestConfig, ingest

    st = tmp_path / "st"
    ingest(st, [learnable_corpus(tmp_path / "c.jsonl", 60, ("0", "1"))], IngestConfig("d"))
    lm = build_tiny("bert", bert_tokenizer)
    calls = {"n": 0}
    real = ipc.new_file

    def second_chunk_fails(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            _enospc()
        return real(*a, **k)

    monkeypatch.setattr(ipc, "new_file", second_chunk_fails)
    with pytest.raises(OSError):
        extract(st, ExtractConfig("d", chunk_rows=20), lm=lm)
    assert not _temps(st)
    assert len(next(iter(Store(st).feature_sets("d"))).chunks()) == 1  # the committed chunk stays
    monkeypatch.undo()
    res = extract(st, ExtractConfig("d", chunk_rows=20), lm=lm)
    assert (res.texts_present_before, res.texts_extracted, res.chunks_total) == (20, 40, 3)


def test_extract_refuses_to_start_when_the_estimate_exceeds_free_space(tmp_path, monkeypatch, bert_tokenizer):
    import shutil
    from collections import namedtuple

    from stcstore.core.errors import StcError
    from stcstore.ingest import IngestConfig, ingest

    st = tmp_path / "st"
    ingest(st, [learnable_corpus(tmp_path / "c.jsonl", 30, ("0", "1"))], IngestConfig("d"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**6, 10**6 - 1000, 1000))
    lm = build_tiny("bert", bert_tokenizer)
    with pytest.raises(StcError, match="need about .* GiB but .* free.*--ignore-free-space"):
        extract(st, ExtractConfig("d"), lm=lm)
    res = extract(st, ExtractConfig("d", force=True), lm=lm)
    assert res.texts_extracted == 30 and any("starting anyway" in m for m in res.messages)


def test_extract_spells_its_disk_override_apart_from_replacing_an_output(tmp_path, monkeypatch, tiny_gpt2_dir):
    """`extract --ignore-free-space` starts despite the estimate; 0.2's `extract --force` (which elsewhere
    replaces an output) still works, with a note naming the new spelling."""
    import shutil
    from collections import namedtuple

    from stcstore.ingest import IngestConfig, ingest

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**6, 10**6 - 1000, 1000))
    for i, flag in enumerate([None, "--ignore-free-space", "--force"]):
        st = tmp_path / f"st{i}"
        ingest(st, [learnable_corpus(tmp_path / f"c{i}.jsonl", 10, ("0", "1"))], IngestConfig("d"))
        r = cli("extract", "--store", st, "--dataset", "d", "--model", str(tiny_gpt2_dir), "--layers", "0-1",
                *([flag] if flag else []))
        if flag is None:
            assert r.returncode == 1 and "--ignore-free-space to start anyway" in r.stderr
        else:
            assert r.returncode == 0, r.stderr
            assert ("is now `extract --ignore-free-space`" in r.stderr) == (flag == "--force")


def test_disk_full_during_score_exits_1_and_the_rerun_completes(tmp_path, monkeypatch, tiny_gpt2_dir):
    """A predictions table keeps the chunks committed before the disk filled; the rerun scores the rest."""
    from stcstore.fit import FitConfig, fit
    from stcstore.ingest import IngestConfig, ingest

    from .conftest import FAST

    st = tmp_path / "st"
    ingest(st, [learnable_corpus(tmp_path / "c.jsonl", 60, ("0", "1"))], IngestConfig("d", split_field="split"))
    extract(st, ExtractConfig("d", model=str(tiny_gpt2_dir), layers="0-1", poolings=("mean",)))
    fit(st, FitConfig("d", model=str(tiny_gpt2_dir), kinds=("hidden",), poolings=("mean",), **FAST),
        out=tmp_path / "c")
    args = ["score", "--classifier", tmp_path / "c", "--store", st, "--dataset", "d", "--output", tmp_path / "p",
            "--chunk-rows", "20", "--json"]
    real, calls = pq.write_table, {"n": 0}

    def third_fails(table, where, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            _enospc()
        return real(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", third_fails)
    r = cli(*args)
    assert r.returncode == 1 and "disk is full" in r.stderr, r.stderr
    assert not _temps(tmp_path / "p")
    assert len(list((tmp_path / "p").rglob("part-*.parquet"))) == 2
    monkeypatch.setattr(pq, "write_table", real)
    r = cli(*args)
    assert r.returncode == 0 and json.loads(r.stdout)["scored_texts"] == 20, r.stderr
