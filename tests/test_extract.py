"""Extraction into the store: chunking invariance, resume after SIGKILL, fingerprints, the lock, stats."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stcstore import Store
from stcstore.core.atomic import store_lock
from stcstore.core.errors import FingerprintMismatchError, StcError, StoreLockedError
from stcstore.features import ExtractConfig, extract, parse_layers
from stcstore.ingest import IngestConfig, ingest
from stcstore.store.query import run_query

from .conftest import TEXTS, build_tiny, sigkill_when, write_jsonl
from .conftest import run_cli as _run_cli


def _corpus(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = " ".join(TEXTS).split()
    recs = []
    for i in range(n):
        k = rng.choice([1, 2, 3, 5, 8, 13, 21, 40])  # a realistic mix of short and long texts
        split = ("train", "train", "train", "validation", "test")[i % 5]
        recs.append({"id": f"r{i}", "text": " ".join(rng.choice(words) for _ in range(k)),
                     "label": str(i % 3), "split": split})
    return write_jsonl(path, recs)


@pytest.fixture
def tiny_store(tmp_path, bert_tokenizer):
    src = _corpus(tmp_path / "c.jsonl", 90)
    st = tmp_path / "st"
    ingest(st, [src], IngestConfig("d", split_field="split"))
    return st


def test_chunk_size_and_batching_do_not_change_features(tmp_path, bert_tokenizer):
    src = _corpus(tmp_path / "c.jsonl", 90)
    lm = build_tiny("gpt2", bert_tokenizer)
    results = []
    for i, (chunk_rows, batch, tokens) in enumerate([(1000, 64, 8192), (7, 3, 40), (13, 16, 100000)]):
        st = tmp_path / f"st{i}"
        ingest(st, [src], IngestConfig("d", split_field="split"))
        r = extract(st, ExtractConfig("d", chunk_rows=chunk_rows, batch_size=batch, max_tokens=tokens), lm=lm)
        assert r.chunks_written == -(-90 // chunk_rows)
        results.append([Store(st).matrix("d", "tiny-gpt2", k, p, l, s)
                        for k, p, l in [("hidden", "mean", 3), ("ffn", "max", 1), ("hidden", "single", 0)]
                        for s in ("train", "test", None)])
    for other in results[1:]:
        for (ids_a, xa, ya), (ids_b, xb, yb) in zip(results[0], other):
            assert ids_a.tolist() == ids_b.tolist() and ya.tolist() == yb.tolist()
            # float32 compute noise from other padding, then float16 storage: within 1-2 float16 ulps
            np.testing.assert_allclose(xa, xb, rtol=2e-3, atol=2e-3)


def test_rows_come_in_ingest_order_with_labels(tiny_store, bert_tokenizer):
    lm = build_tiny("bert", bert_tokenizer)
    extract(tiny_store, ExtractConfig("d", chunk_rows=8), lm=lm)
    ids, X, y = Store(tiny_store).matrix("d", "tiny-bert", "ffn", "mean", 2, "validation")
    texts = Store(tiny_store).texts("d").to_pylist()
    expected = [t for t in texts if t["split"] == "validation"]
    assert ids.tolist() == [t["id"] for t in expected] and y.tolist() == [t["label"] for t in expected]
    assert X.shape == (len(expected), 64) and X.dtype == np.float32
    # columns() gathers the same values as slicing full matrices
    ids2, C, y2 = Store(tiny_store).columns("d", "tiny-bert", "ffn", "mean", {2: [5, 0, 63], 0: [1]}, "validation")
    _, X0, _ = Store(tiny_store).matrix("d", "tiny-bert", "ffn", "mean", 0, "validation")
    assert ids2.tolist() == ids.tolist() and y2.tolist() == y.tolist()
    np.testing.assert_array_equal(C, np.column_stack([X0[:, 1], X[:, 5], X[:, 0], X[:, 63]]))


def test_second_run_is_a_noop_and_new_texts_are_appended(tiny_store, tmp_path, bert_tokenizer):
    lm = build_tiny("bert", bert_tokenizer)
    first = extract(tiny_store, ExtractConfig("d", chunk_rows=40), lm=lm)
    assert (first.texts_extracted, first.chunks_written) == (90, 3)
    again = extract(tiny_store, ExtractConfig("d", chunk_rows=40), lm=lm)
    assert again.texts_extracted == 0 and again.chunks_written == 0
    assert "nothing to do" in again.messages[0]
    more = write_jsonl(tmp_path / "more.jsonl", [{"id": "late", "text": "a late text", "label": "1"}])
    ingest(tiny_store, [more], IngestConfig("d", split="test"))
    third = extract(tiny_store, ExtractConfig("d", chunk_rows=40), lm=lm)
    assert (third.texts_extracted, third.chunks_total) == (1, 4)
    ids, _, _ = Store(tiny_store).matrix("d", "tiny-bert", "hidden", "max", 1, None)
    assert len(ids) == 91 == len(set(ids.tolist())) and ids[-1] == "late"


def _snapshot(fs_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(fs_dir).as_posix(): p.read_bytes() for p in sorted(fs_dir.rglob("*")) if p.is_file()
            and p.name != "featureset.json"}


@pytest.mark.parametrize("mode", ["values", "stats-only", "int8"])
def test_sigkill_at_any_moment_then_resume_equals_uninterrupted(tmp_path, tiny_gpt2_dir, mode):
    src = _corpus(tmp_path / "c.jsonl", 400, seed=3)
    stats_only = mode == "stats-only"
    args = ["--dataset", "d", "--model", str(tiny_gpt2_dir), "--chunk-rows", "10", "--threads", "1",
            "--batch-size", "4"] + {"values": [], "stats-only": ["--stats-only"], "int8": ["--dtype", "int8"]}[mode]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    for st in (ref, killed):
        ingest(st, [src], IngestConfig("d", split_field="split"))
    p = _run_cli(["extract", "--store", str(ref), *args])
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()

    fs_dir = next((killed / "features" / "dataset=d").glob("fs=*"), None)
    kills = 0
    # kill (1) after some chunks exist, (2) while a chunk is being written, (3) right at start
    def ready(trigger: str) -> bool:
        fs_dir = next((killed / "features" / "dataset=d").glob("fs=*"), None)
        return trigger == "start" or (fs_dir is not None and (
            (trigger == "chunks" and len(list(fs_dir.glob("chunk-*"))) >= 5) or
            (trigger == "tmp" and any(fs_dir.glob(".tmp-chunk-*")))))

    for trigger in ("chunks", "tmp", "start"):
        kills += sigkill_when(_run_cli(["extract", "--store", str(killed), *args]), lambda: ready(trigger))
    fs_dir = next((killed / "features" / "dataset=d").glob("fs=*"), None)
    assert kills >= 2
    # the killed store never shows half a chunk: every visible chunk directory is complete
    if fs_dir is not None:
        for chunk in fs_dir.glob("chunk-*"):
            assert sorted(x.name for x in chunk.iterdir()) == sorted(["features.arrow", "stats.parquet"] + (
                ["int8.arrow"] if mode == "int8" else []))
    p = _run_cli(["extract", "--store", str(killed), *args, "--json"])
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    summary = json.loads(out)  # pure JSON on stdout
    assert summary["texts_total"] == 400 and summary["chunks_total"] == 40
    ref_fs = next((ref / "features" / "dataset=d").glob("fs=*"))
    fs_dir = next((killed / "features" / "dataset=d").glob("fs=*"))
    assert ref_fs.name == fs_dir.name
    assert not list(fs_dir.glob(".tmp-*"))
    a, b = _snapshot(ref_fs), _snapshot(fs_dir)
    assert sorted(a) == sorted(b)  # same chunks, no holes, no extras
    assert all(a[k] == b[k] for k in a if k.endswith(("features.arrow", "int8.arrow")))  # byte-identical features
    if stats_only:  # the ids it resumed from, and the same statistics as the uninterrupted run
        ids = np.concatenate([Store(killed).chunk_meta(s)[i].column("id").to_numpy(zero_copy_only=False)
                              for s in Store(killed).feature_sets("d") for i in range(40)])
        q = "SELECT sum(count) AS total, sum(mean) AS means FROM neuron_stats"
        assert run_query(killed, sql=q).rows[0] == pytest.approx(run_query(ref, sql=q).rows[0], rel=1e-9)
    else:
        ids, _, _ = Store(killed).matrix("d", str(tiny_gpt2_dir), "hidden", "mean", 0, None)
    assert len(ids) == 400 == len(set(ids.tolist()))


def test_different_fingerprint_never_mixes_rows(tiny_store, bert_tokenizer):
    lm = build_tiny("bert", bert_tokenizer)
    a = extract(tiny_store, ExtractConfig("d", max_length=8), lm=lm)
    b = extract(tiny_store, ExtractConfig("d", max_length=16), lm=lm)
    assert a.feature_set != b.feature_set and b.new_feature_set and b.texts_extracted == 90
    with pytest.raises(StcError, match="2 feature sets"):
        Store(tiny_store).matrix("d", "tiny-bert", "hidden", "mean", 1, "train")
    ids, X8, _ = Store(tiny_store).matrix("d", a.feature_set[:8], "hidden", "mean", 1, "train")
    _, X16, _ = Store(tiny_store).matrix("d", b.feature_set, "hidden", "mean", 1, "train")
    assert len(ids) == 54 and not np.allclose(X8, X16)  # truncation changed the values: two sets, not one
    # other weights under the same name: a new feature set, never appended to the old one
    other = build_tiny("bert", bert_tokenizer)
    with __import__("torch").no_grad():
        other.model.embeddings.word_embeddings.weight.mul_(2)
    from stcstore.models.loading import state_dict_sha256
    other.weights_sha256 = state_dict_sha256(other.model)
    c = extract(tiny_store, ExtractConfig("d", max_length=8), lm=other)
    assert c.feature_set not in (a.feature_set, b.feature_set)
    # a manifest that does not match its directory's fingerprint is refused
    manifest = next(p for p in (tiny_store / "features" / "dataset=d").glob("fs=*/featureset.json")
                    if a.feature_set in str(p))
    m = json.loads(manifest.read_text())
    m["fingerprint"]["max_length"] = 999
    manifest.write_text(json.dumps(m))
    with pytest.raises(FingerprintMismatchError, match="refusing to mix rows"):
        extract(tiny_store, ExtractConfig("d", max_length=8), lm=lm)


def test_lock_stops_a_second_writer(tiny_store, bert_tokenizer):
    lm = build_tiny("bert", bert_tokenizer)
    with store_lock(tiny_store, "test holder"):
        with pytest.raises(StoreLockedError, match="locked by pid .* \\(test holder\\)"):
            extract(tiny_store, ExtractConfig("d"), lm=lm)
        with pytest.raises(StoreLockedError):
            ingest(tiny_store, [tiny_store / "nothing.jsonl"], IngestConfig("d"))
        # readers never need the lock
        assert run_query(tiny_store, "select count(*) as n from texts").rows[0]["n"] == 90
    extract(tiny_store, ExtractConfig("d", layers="0-1"), lm=lm)  # released afterwards


def test_lock_held_by_another_process_via_cli(tiny_store):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from stcstore.core.atomic import store_lock\n"
        f"with store_lock(__import__('pathlib').Path({str(tiny_store)!r}), 'holder'):\n"
        "    print('locked', flush=True); time.sleep(30)")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        p = _run_cli(["ingest", str(tiny_store / "x.jsonl"), "--store", str(tiny_store), "--dataset", "d", "--json"])
        out, err = p.communicate(timeout=60)
        assert p.returncode == 1
        assert "locked by pid" in err.decode() and json.loads(out)["exit_code"] == 1
    finally:
        holder.kill()


def test_layers_limit_depth_and_columns(tiny_store, bert_tokenizer):
    lm = build_tiny("llama", bert_tokenizer)
    r = extract(tiny_store, ExtractConfig("d", layers=":1", kinds=("hidden", "ffn"), poolings=("mean",)), lm=lm)
    fs = Store(tiny_store).feature_set("d", r.feature_set)
    assert [b.column for b in fs.blocks] == ["ffn.mean.0", "ffn.mean.1", "hidden.mean.0", "hidden.mean.1"]
    assert parse_layers("all", 3) == ([0, 1, 2, 3], [0, 1, 2])
    assert parse_layers("1,3", 3) == ([1, 3], [1])
    with pytest.raises(StcError, match="layer 4 is out of range"):
        parse_layers("0-4", 3)
    with pytest.raises(StcError, match="--layers"):
        parse_layers("x", 3)
    with pytest.raises(StcError, match="--kinds"):
        ExtractConfig("d", kinds=("attention",))


def test_neuron_stats_match_numpy(tiny_store, bert_tokenizer):
    lm = build_tiny("gpt2", bert_tokenizer)
    extract(tiny_store, ExtractConfig("d", chunk_rows=17), lm=lm)
    ids, X, y = Store(tiny_store).matrix("d", "tiny-gpt2", "ffn", "max", 2, "train")
    res = run_query(tiny_store, """
        select neuron, label, count, mean, std, min, max, frac_pos from neuron_stats
        where dataset = 'd' and kind = 'ffn' and pooling = 'max' and layer = 2 and split = 'train'
        order by label, neuron""")
    assert len(res.rows) == 64 * 3
    for row in res.rows:
        col = X[y == row["label"], row["neuron"]].astype(np.float64)
        assert row["count"] == len(col)
        assert row["mean"] == pytest.approx(col.mean(), rel=1e-6, abs=1e-7)
        assert row["std"] == pytest.approx(col.std(ddof=1), rel=1e-4, abs=1e-6)
        assert row["min"] == pytest.approx(col.min()) and row["max"] == pytest.approx(col.max())
        assert row["frac_pos"] == pytest.approx((col > 0).mean())


def test_store_read_errors_are_clear(tiny_store, tmp_path):
    with pytest.raises(StcError, match="no features yet"):
        Store(tiny_store).matrix("d", "default", "ffn", "mean", 0, "train")
    with pytest.raises(StcError, match="not an stcstore store"):
        extract(tmp_path / "nowhere", ExtractConfig("d"))
    with pytest.raises(StcError, match="has no dataset 'other' \\(it has: d\\)"):  # the datasets it has, named
        extract(tiny_store, ExtractConfig("other"))


def test_truncation_is_counted_exactly(tmp_path, bert_tokenizer):
    src = write_jsonl(tmp_path / "t.jsonl", [
        {"id": "long", "text": "one two three four five six seven eight nine ten eleven"},
        {"id": "exact", "text": "one two three four five six"},  # [CLS] + 6 + [SEP] = 8 tokens: fits
        {"id": "short", "text": "one"},
    ])
    ingest(tmp_path / "st", [src], IngestConfig("d"))
    r = extract(tmp_path / "st", ExtractConfig("d", max_length=8), lm=build_tiny("bert", bert_tokenizer))
    assert r.truncated == 1 and "1 texts were longer than --max-length 8" in r.messages[-1]


def test_model_configuration_is_part_of_the_fingerprint(tmp_path, tiny_gpt2_dir, tiny_store):
    """Editing config.json (here the activation) changes what the model computes: a new feature set, never
    more rows in the old one, and a classifier of the old model refuses the edited one."""
    import shutil

    from stcstore.fit import FitConfig, fit
    from stcstore.fit.probe import PathConfig
    from stcstore.score import ScoreConfig, score

    model = tmp_path / "model"
    shutil.copytree(tiny_gpt2_dir, model)
    extract(tiny_store, ExtractConfig("d", model=str(model), layers="0-2"))
    fit(tiny_store, FitConfig("d", model=str(model), kinds=("hidden",), poolings=("mean",), etas=(0.5,),
                              path=PathConfig(n_lambdas=4)), out=tmp_path / "c")
    cfg = json.loads((model / "config.json").read_text())
    cfg["activation_function"] = "relu"
    (model / "config.json").write_text(json.dumps(cfg))
    r = extract(tiny_store, ExtractConfig("d", model=str(model), layers="0-2"))
    assert r.new_feature_set and r.texts_extracted == 90
    assert len(Store(tiny_store).feature_sets("d")) == 2
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "a text"}])
    with pytest.raises(FingerprintMismatchError, match="config_sha256"):
        score(ScoreConfig((str(tmp_path / "c"),), str(tmp_path / "p.parquet"), input=str(src), model=str(model)))


def test_a_no_op_extract_does_not_load_the_model(tmp_path, tiny_gpt2_dir, monkeypatch):
    """Extract again with the same options over unchanged model files: nothing to do, said before the model is
    loaded. New texts, other options or a changed model file: the model is loaded as before."""
    import shutil

    import stcstore.features.stage as stage

    model = tmp_path / "model"
    shutil.copytree(tiny_gpt2_dir, model)
    st = tmp_path / "st"
    recs = [{"id": str(i), "text": f"text number {i}", "label": i % 2} for i in range(12)]
    ingest(st, [write_jsonl(tmp_path / "a.jsonl", recs)], IngestConfig("d"))
    cfg = ExtractConfig("d", model=str(model), layers="0-1", poolings=("mean",))
    first = extract(st, cfg)
    loads = []
    real = stage.load_model
    monkeypatch.setattr(stage, "load_model", lambda *a, **k: loads.append(1) or real(*a, **k))
    again = extract(st, cfg)
    assert loads == [] and again.texts_extracted == 0 and again.feature_set == first.feature_set
    assert again.messages[0].endswith("the model was not loaded)")
    extract(st, ExtractConfig("d", model=str(model), layers="0-1", poolings=("mean", "max")))  # other options
    assert loads == [1]
    weights = next(p for p in model.iterdir() if p.suffix == ".safetensors")
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # touched: not trusted
    assert extract(st, cfg).texts_extracted == 0 and loads == [1, 1]
    assert extract(st, cfg).texts_extracted == 0 and loads == [1, 1]  # the same weights: the stamp is renewed
    ingest(st, [write_jsonl(tmp_path / "b.jsonl", [{"id": "new", "text": "one more", "label": 1}])], IngestConfig("d"))
    assert extract(st, cfg).texts_extracted == 1 and loads == [1, 1, 1]


def test_stats_only_records_the_statistics_of_a_full_extraction_and_no_values(tmp_path, bert_tokenizer):
    """`extract --stats-only`: the same neuron statistics as a full extraction of the same texts (same chunks,
    same batches), ids for resuming, no values; fit and the read API refuse it with what it can do."""
    src = _corpus(tmp_path / "c.jsonl", 90)
    st = tmp_path / "st"
    ingest(IngestConfig("d", split_field="split", store=str(st), sources=(str(src),)))
    lm = build_tiny("bert", bert_tokenizer)
    full = extract(ExtractConfig("d", model="tiny-bert", chunk_rows=40, store=str(st)), lm=lm)
    so = extract(ExtractConfig("d", model="tiny-bert", chunk_rows=40, stats_only=True, store=str(st)), lm=lm)
    assert so.feature_set != full.feature_set and so.texts_extracted == 90 and so.chunks_written == 3
    assert so.store_bytes < full.store_bytes
    assert any("statistics only" in m for m in so.messages)
    key = "kind, pooling, layer, neuron, split, label"
    q = f"SELECT {key}, count, mean, std, min, max, frac_pos FROM neuron_stats WHERE feature_set = $fs ORDER BY {key}"
    a = run_query(st, sql=q, params={"fs": full.feature_set}).rows
    b = run_query(st, sql=q, params={"fs": so.feature_set}).rows
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b):
        exact = ("kind", "pooling", "layer", "neuron", "split", "label", "count", "frac_pos", "min", "max")
        assert [ra[k] for k in exact] == [rb[k] for k in exact]
        assert (ra["mean"], ra["std"]) == pytest.approx((rb["mean"], rb["std"]), rel=1e-9, abs=1e-12)
    gaps = run_query(st, sql="SELECT count(*) AS n FROM neuron_label_gaps WHERE feature_set = $fs",
                     params={"fs": so.feature_set}).rows
    assert gaps[0]["n"] > 0
    sets = {r["feature_set"]: r for r in run_query(st, sql="SELECT * FROM feature_sets").rows}
    assert sets[so.feature_set]["stats_only"] is True and sets[full.feature_set]["stats_only"] is False
    # a chunk holds the rows' ids and statistics, no values
    fs = next(s for s in Store(st).feature_sets("d") if s.id == so.feature_set)
    from stcstore.store.chunks import open_chunk
    assert open_chunk(fs.chunks()[0]).schema.names == ["id", "split", "label"]
    with pytest.raises(StcError, match="statistics only.*need values"):
        Store(st).gather_split(fs, [("hidden.mean.1", None)], "train")
    # a later run is a no-op; new texts are added without duplicates
    assert extract(ExtractConfig("d", model="tiny-bert", stats_only=True, store=str(st)), lm=lm).texts_extracted == 0
    more = write_jsonl(tmp_path / "more.jsonl", [{"id": "late", "text": "a late text", "label": "1"}])
    ingest(IngestConfig("d", split="test", store=str(st), sources=(str(more),)))
    assert extract(ExtractConfig("d", model="tiny-bert", stats_only=True, store=str(st)), lm=lm).texts_extracted == 1
    # with the full set there, fit and the read API pick it; with the stats-only set alone, they refuse
    assert Store(st).feature_set("d", "tiny-bert").id == full.feature_set
    import shutil
    shutil.rmtree(Store(st).features_dir("d") / f"fs={full.feature_set}")
    with pytest.raises(StcError, match="holds neuron statistics only.*without --stats-only"):
        Store(st).matrix("d", "tiny-bert", "hidden", "mean", 1, "train")
    from stcstore.fit import FitConfig, fit
    with pytest.raises(StcError, match="holds neuron statistics only"):
        fit(FitConfig("d", model="tiny-bert", store=str(st)))


def test_int8_codes_decode_within_half_a_step_and_fit_score_and_report_read_them(tmp_path, bert_tokenizer):
    """`extract --dtype int8`: per-neuron affine codes, scales per chunk; every reader decodes them (the read
    API, fit, a classifier's stored features); values within half a step of the float16 ones."""
    from stcstore.classifier.classifier import load_classifier
    from stcstore.fit import FitConfig, fit

    from .conftest import FAST, learnable_corpus

    src = learnable_corpus(tmp_path / "c.jsonl", 150, ("0", "1"))
    st = tmp_path / "st"
    ingest(IngestConfig("d", split_field="split", store=str(st), sources=(str(src),)))
    lm = build_tiny("bert", bert_tokenizer)
    f16 = extract(ExtractConfig("d", model="tiny-bert", chunk_rows=60, store=str(st)), lm=lm)
    i8 = extract(ExtractConfig("d", model="tiny-bert", chunk_rows=60, dtype="int8", store=str(st)), lm=lm)
    assert i8.feature_set != f16.feature_set and i8.chunks_written == 3
    store = Store(st)
    a_fs, b_fs = (store.feature_set("d", x) for x in (f16.feature_set, i8.feature_set))
    chunk = b_fs.chunks()[0]
    from stcstore.store.chunks import INT8_SCALES, open_chunk
    assert (chunk / INT8_SCALES).exists() and str(open_chunk(chunk).schema.field("hidden.max.2").type.value_type) == "int8"
    for col in ("hidden.max.2", "ffn.mean.1", "hidden.single.0"):
        ids_a, a, ya = store.gather_split(a_fs, [(col, None)], None)
        ids_b, b, yb = store.gather_split(b_fs, [(col, None)], None)
        assert ids_a.tolist() == ids_b.tolist() and ya.tolist() == yb.tolist() and b.dtype == np.float32
        half_step = (a.max(0) - a.min(0)) / 255 / 2  # a chunk's step is at most the whole column's
        assert (np.abs(a - b) <= half_step * 1.001 + 1e-6).all(), col
    # picked neurons of a few rows decode as the whole block does
    _, part, _ = store.columns("d", i8.feature_set, "ffn", "max", {1: [3, 0, 7]}, "test")
    _, whole, _ = store.matrix("d", i8.feature_set, "ffn", "max", 1, "test")
    np.testing.assert_array_equal(part, whole[:, [3, 0, 7]])
    with pytest.raises(StcError, match="read them as float32"):
        store.gather(b_fs, [("ffn.max.1", None)], store.split_plan(b_fs, "test"), dtype=np.float16)
    # fit on the codes; the classifier scores stored features (decoded) and texts (float16 values, as extracted)
    res = fit(FitConfig("d", model=i8.feature_set, kinds=("ffn",), poolings=("mean",), workers=1,
                        store=str(st), out=str(tmp_path / "clf"), **FAST))
    assert res.stc["validation"]["accuracy"] > 0.7
    clf = load_classifier(tmp_path / "clf")
    clf.attach(lm)
    assert clf.manifest.features.dtype == "int8"
    ids, X = clf.store_features(store, "d", "test")
    texts = {r["id"]: r["text"] for r in store.texts("d").to_pylist()}
    stored = clf.predict_proba_features(X)
    live = clf.predict_proba([texts[i] for i in ids])
    assert np.abs(stored - live).max() < 0.05  # codes within half a step of the values scored live


def test_int8_codes_cover_the_range_and_refuse_nan():
    from stcstore.features.chunking import encode_int8
    from stcstore.store.chunks import decode_int8

    x = np.array([[0.0, 5.0, -3.0], [1.0, 5.0, 65504.0], [0.5, 5.0, -65504.0]], dtype=np.float16)
    codes, scales = encode_int8(x)
    assert codes.dtype == np.int8 and codes[:2, 0].tolist() == [-128, 127] and codes[2, 0] in (-1, 0)
    assert (codes[:, 1] == -128).all()
    back = decode_int8(codes, scales)
    assert back[:, 1].tolist() == [5.0, 5.0, 5.0]  # a constant neuron decodes exactly
    assert np.abs(back - x.astype(np.float32)).max(axis=0).tolist() <= (scales[1] / 2 * 1.0001 + 1e-6).tolist()
    with pytest.raises(StcError, match="cannot hold NaN.*--dtype float16"):
        encode_int8(np.array([[1.0, np.nan], [2.0, 3.0]], dtype=np.float16))
    # the chunk's statistics give each neuron's range (what the writer passes): the same codes and scales
    import torch

    from stcstore.core.names import FeatureBlock
    from stcstore.features.neuron_stats import NeuronStats

    stats = NeuronStats([FeatureBlock("hidden", "mean", 0)], [3], [("train", "0"), ("train", "1")])
    stats.add(torch.from_numpy(x).float(), torch.tensor([0, 1, 1]))
    lo, hi = stats.ranges()["hidden.mean.0"]
    known = encode_int8(x, lo, hi)
    assert np.array_equal(known[0], codes) and np.array_equal(known[1], scales)
    stats.add(torch.tensor([[0.0, float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(StcError, match="NaN for 1 neurons"):
        encode_int8(np.vstack([x, [[0, np.nan, 0]]]).astype(np.float16), *stats.ranges()["hidden.mean.0"])
