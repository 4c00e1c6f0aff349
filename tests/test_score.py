"""`stcstore score`: early exit, one pass for several classifiers, incremental runs and resume after
SIGKILL, agreement with stored features, rejects, token-level explanations."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stcstore import Store, load_classifier
from stcstore.classifier import Classifier, FeatureGroup
from stcstore.core.errors import StcError
from stcstore.core.names import blocks_to_run
from stcstore.fit import FitConfig, fit
from stcstore.ingest import IngestConfig, ingest
from stcstore.score import ScoreConfig, score

from .conftest import FAST, cli, learnable_corpus, sigkill_when, tiny_bert_store, write_jsonl
from .conftest import run_cli as _run_cli

NEW_TEXTS = ["a great superb film", "so dull and boring", "the film was a waste", "wonderful and moving story"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, bert_tokenizer):
    """A tiny-BERT store (3 blocks) and two classifiers fitted on it: hidden/mean and ffn/max."""
    tmp = tmp_path_factory.mktemp("score")
    st, lm = tiny_bert_store(tmp, bert_tokenizer)
    fit(st, FitConfig("d", model="tiny-bert", kinds=("hidden",), poolings=("mean",), **FAST), out=tmp / "sent")
    fit(st, FitConfig("d", model="tiny-bert", kinds=("ffn",), poolings=("max",), **FAST), out=tmp / "topic")
    return st, lm, tmp / "sent", tmp / "topic"


def _variant(base: Classifier, groups: list[FeatureGroup], path: Path, seed: int = 0, dtype: str | None = None
             ) -> Path:
    """A classifier on the same model with chosen neuron groups and random weights (for depth tests)."""
    m = base.manifest.to_dict()
    m.pop("arrays", None)
    if dtype:
        m["features"]["dtype"] = dtype
    m.update(groups=[asdict(g) for g in groups], kind=groups[0].kind, pooling=groups[0].pooling,
             l_temp=max(g.layer for g in groups),
             blocks_run=blocks_to_run([g.layer for g in groups if g.kind == "hidden"],
                                      [g.layer for g in groups if g.kind == "ffn"]))
    n = sum(len(g.neurons) for g in groups)
    rng = np.random.default_rng(seed)
    arrays = {"coef": rng.normal(size=(base.coef_.shape[0], n)), "intercept": np.zeros(base.coef_.shape[0]),
              "mean": np.zeros(n), "scale": np.ones(n)}
    Classifier(m, arrays).save(path)
    return path


def _preds(path: Path) -> dict[tuple[str, str], list[float]]:
    files = [path] if path.is_file() else sorted(path.glob("run_date=*/part-*.parquet"))
    out = {}
    for f in files:
        t = pq.read_table(f)
        for i, c, p in zip(*(t.column(k).to_pylist() for k in ("id", "classifier", "probabilities"))):
            assert (i, c) not in out, f"duplicate prediction for {i} from {c}"
            out[(i, c)] = p
    return out


def test_output_columns_and_labels(fitted, tmp_path):
    st, lm, sent, _ = fitted
    src = write_jsonl(tmp_path / "new.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(NEW_TEXTS)])
    res = score(ScoreConfig((str(sent),), str(tmp_path / "p.parquet"), input=str(src)), models={"tiny-bert": lm})
    t = pq.read_table(tmp_path / "p.parquet")
    assert t.column_names == ["id", "classifier", "classifier_fingerprint", "label", "probabilities", "scored_at",
                              "text_hash", "value"]
    assert t.column("value").null_count == 4  # only regression classifiers write a value
    clf = load_classifier(sent, model=lm)
    assert t.column("classifier").to_pylist() == ["sent"] * 4
    assert set(t.column("classifier_fingerprint").to_pylist()) == {clf.fingerprint}
    np.testing.assert_allclose(np.array(t.column("probabilities").to_pylist()), clf.predict_proba(NEW_TEXTS),
                               atol=1e-6)
    assert t.column("label").to_pylist() == list(clf.predict(NEW_TEXTS))
    assert res.scored_texts == 4 and res.rejected == 0


def test_early_exit_runs_only_the_blocks_to_run(fitted, tmp_path):
    st, lm, sent, _ = fitted
    base = load_classifier(sent)
    shallow = _variant(base, [FeatureGroup("hidden", "mean", 0, [1, 5]), FeatureGroup("hidden", "mean", 2, [3])],
                       tmp_path / "shallow")
    calls = [0] * len(lm.adapter.blocks)
    hooks = [b.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
             for i, b in enumerate(lm.adapter.blocks)]
    try:
        src = write_jsonl(tmp_path / "new.jsonl", [{"text": t} for t in NEW_TEXTS])
        res = score(ScoreConfig((str(shallow),), str(tmp_path / "p.parquet"), input=str(src), batch_size=2),
                    models={"tiny-bert": lm})
    finally:
        for h in hooks:
            h.remove()
    # h2 is the output of block 1: blocks 0 and 1 run (two batches each), block 2 never
    assert len(lm.adapter.blocks) == 3 and calls == [2, 2, 0]
    assert res.groups[0]["blocks_run"] == 2 and res.groups[0]["neurons"] == 3  # only the used neurons pooled


def test_two_classifiers_one_pass_equal_two_runs(fitted, tmp_path):
    st, lm, sent, topic = fitted
    calls = [0]
    hook = lm.adapter.blocks[0].register_forward_hook(lambda *_a: calls.__setitem__(0, calls[0] + 1))
    src = write_jsonl(tmp_path / "new.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(NEW_TEXTS * 5)][:20])
    try:
        both = score(ScoreConfig((str(sent), str(topic)), str(tmp_path / "both.parquet"), input=str(src),
                                 batch_size=64), models={"tiny-bert": lm})
        assert calls[0] == 1  # one forward batch for both classifiers
        for c in (sent, topic):
            score(ScoreConfig((str(c),), str(tmp_path / f"{c.name}.parquet"), input=str(src)), models={"tiny-bert": lm})
    finally:
        hook.remove()
    joint = _preds(tmp_path / "both.parquet")
    alone = {**_preds(tmp_path / "sent.parquet"), **_preds(tmp_path / "topic.parquet")}
    assert sorted(joint) == sorted(alone) and len(joint) == 40
    for k in joint:
        np.testing.assert_allclose(joint[k], alone[k], rtol=0, atol=1e-6)
    assert len(both.groups) == 1 and both.groups[0]["blocks_run"] == max(
        load_classifier(c).manifest["blocks_run"] for c in (sent, topic))


def test_store_path_agrees_with_stored_features_and_input_path(fitted, tmp_path):
    """Bound: probabilities within 2e-3 of the classifier applied to the stored float16 features (the only
    difference is float16 rounding of features recomputed in other batches); --input of the same texts
    gives the store run's probabilities to 1e-6."""
    st, lm, sent, topic = fitted
    res = score(ScoreConfig((str(sent), str(topic)), str(st / "predictions"), store=str(st), dataset="d"),
                models={"tiny-bert": lm})
    assert res.scored_texts == 200
    got = _preds(st / "predictions")
    # inside the store, predictions are a SQL view
    from stcstore.store.query import run_query

    rows = run_query(st, "select classifier, count(*) as n, min(confidence) >= 0.5 as ok from predictions "
                         "group by 1 order by 1").rows
    assert [(r["classifier"], r["n"], r["ok"]) for r in rows] == [("sent", 200, True), ("topic", 200, True)]
    shares = run_query(st, name="prediction_shares", params={"classifier": "sent"}).rows
    assert sum(r["texts"] for r in shares) == 200 and sum(r["share"] for r in shares) == pytest.approx(1, abs=1e-3)
    s = Store(st)
    for c in (sent, topic):
        clf = load_classifier(c)
        ids, X = clf.store_features(s, "d", None)
        want = clf.predict_proba_features(X)
        have = np.array([got[(i, c.name)] for i in ids])
        assert np.abs(have - want).max() < 2e-3
    texts = s.texts("d", columns=["id", "text"])
    src = write_jsonl(tmp_path / "same.jsonl", [{"id": i, "text": t} for i, t in
                                                 zip(*(texts.column(k).to_pylist() for k in ("id", "text")))])
    score(ScoreConfig((str(sent),), str(tmp_path / "same.parquet"), input=str(src)), models={"tiny-bert": lm})
    fresh = _preds(tmp_path / "same.parquet")
    for k, p in fresh.items():
        np.testing.assert_allclose(p, got[k], atol=1e-6)


def test_incremental_second_run_is_a_noop_and_new_texts_only(fitted, tmp_path):
    st, lm, sent, topic = fitted
    out = tmp_path / "preds"
    first = score(ScoreConfig((str(sent),), str(out), store=str(st), dataset="d", chunk_rows=64),
                  models={"tiny-bert": lm})
    assert first.scored_texts == 200 and first.files_written == 4
    again = score(ScoreConfig((str(sent),), str(out), store=str(st), dataset="d"), models={"tiny-bert": lm})
    assert again.scored_texts == 0 and again.files_written == 0
    assert any("nothing to score" in m for m in again.messages)
    assert again.classifiers[0].already == 200
    # a new classifier scores everything; the old one nothing
    both = score(ScoreConfig((str(sent), str(topic)), str(out), store=str(st), dataset="d"),
                 models={"tiny-bert": lm})
    assert [c.scored for c in both.classifiers] == [0, 200]
    # new texts arrive: only they are scored
    ingest(st, [write_jsonl(tmp_path / "more.jsonl", [{"id": "x1", "text": "superb", "split": "unlabeled"},
                                                      {"id": "x2", "text": "so boring", "split": "unlabeled"}])],
           IngestConfig("d", split_field="split"))
    try:
        last = score(ScoreConfig((str(sent), str(topic)), str(out), store=str(st), dataset="d"),
                     models={"tiny-bert": lm})
        assert [c.scored for c in last.classifiers] == [2, 2] and last.scored_texts == 2
        preds = _preds(out)  # asserts no duplicates
        assert len(preds) == 2 * 202
        assert all(p.parent.name.startswith("run_date=") for p in out.glob("run_date=*/part-*.parquet"))
    finally:  # the module's store is shared: take the two texts out again
        for b in (st / "ingest" / "dataset=d").glob("batch=*"):
            if "more.jsonl" in pq.read_table(b / "source.parquet").column("source").to_pylist()[0]:
                import shutil

                shutil.rmtree(b)


def test_sigkill_then_resume_has_no_duplicates_or_holes(tmp_path, tiny_gpt2_dir):
    st = tmp_path / "st"
    ingest(st, [learnable_corpus(tmp_path / "c.jsonl", 300, ("0", "1"))], IngestConfig("d", split_field="split"))
    from stcstore.features import ExtractConfig, extract

    extract(st, ExtractConfig("d", model=str(tiny_gpt2_dir), batch_size=32))
    fit(st, FitConfig("d", model=str(tiny_gpt2_dir), kinds=("hidden",), poolings=("mean",), **FAST),
        out=tmp_path / "clf")
    args = ["score", "--classifier", str(tmp_path / "clf"), "--store", str(st), "--dataset", "d",
            "--chunk-rows", "10", "--batch-size", "4", "--threads", "1"]
    ref = _run_cli([*args, "--output", str(tmp_path / "ref")])
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()
    out = tmp_path / "killed"
    kills = 0
    for trigger in (3, 12):
        kills += sigkill_when(_run_cli([*args, "--output", str(out)]),
                              lambda: len(list(out.glob("run_date=*/part-*.parquet"))) >= trigger)
    assert kills >= 1
    p = _run_cli([*args, "--output", str(out), "--json"])
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    summary = json.loads(stdout)
    assert 0 < summary["scored_texts"] < 300 and summary["classifiers"][0]["already"] == 300 - summary["scored_texts"]
    assert not list(out.rglob(".tmp-*"))
    a, b = _preds(tmp_path / "ref"), _preds(out)  # _preds asserts no duplicates
    assert sorted(a) == sorted(b) and len(a) == 300  # no holes
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)
    p = _run_cli([*args, "--output", str(out), "--json"])
    stdout, _ = p.communicate(timeout=300)
    assert json.loads(stdout)["scored_texts"] == 0


def test_bad_input_rows_go_to_rejects_and_the_run_completes(fitted, tmp_path):
    st, lm, sent, _ = fitted
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "a", "text": "a great film"}, {"id": "b", "text": "   "}, "{not json", {"id": "c"},
        {"id": "d", "text": 5}, {"id": "a", "text": "a great film"}, {"id": "a", "text": "other text"},
        {"text": "no id, fine"}, '{"id": "\\ud800", "text": "a lone surrogate in the id"}'])
    res = score(ScoreConfig((str(sent),), str(tmp_path / "p.parquet"), input=str(src)), models={"tiny-bert": lm})
    assert res.scored_texts == 2 and res.duplicates == 1 and res.rejected == 6
    rej = pq.read_table(tmp_path / "p.rejects.parquet")
    reasons = dict(zip(rej.column("line").to_pylist(), rej.column("reason").to_pylist()))
    assert reasons[2] == "empty text" and reasons[3].startswith("malformed JSON")
    assert "missing" in reasons[4] and "not a string" in reasons[5] and "different text" in reasons[7]
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 2
    # ingest accepts and refuses exactly the same rows, for the same reasons (one validator)
    ing = ingest(tmp_path / "st2", [src], IngestConfig("x")).files[0]
    assert (ing.ingested, ing.duplicates, ing.rejected) == (2, 1, 6)
    assert reasons[9] == "invalid unicode in id (lone surrogate)"
    ing_rej = Store(tmp_path / "st2").rejects("x")
    ing_reasons = dict(zip(ing_rej.column("line").to_pylist(), ing_rej.column("reason").to_pylist()))
    assert {k: v.replace("seen in this file", "exists") for k, v in reasons.items()} == ing_reasons
    # a temp file of a killed run (dead pid) is cleaned up, one of a live writer is left alone
    dead, live = tmp_path / ".tmp-q.parquet-999999999-abcd1234", tmp_path / f".tmp-q.parquet-{os.getpid()}-abcd1234"
    dead.write_text("half"), live.write_text("half")
    score(ScoreConfig((str(sent),), str(tmp_path / "q.parquet"), input=str(src)), models={"tiny-bert": lm})
    assert not dead.exists() and live.exists()
    # an existing output file is never overwritten without --force
    with pytest.raises(StcError, match="--force"):
        score(ScoreConfig((str(sent),), str(tmp_path / "p.parquet"), input=str(src)), models={"tiny-bert": lm})


def test_bad_options_are_clear(fitted, tmp_path):
    st, lm, sent, _ = fitted
    with pytest.raises(StcError, match="either --store"):
        ScoreConfig((str(sent),), "o", store=str(st), dataset="d", input="x.jsonl")
    with pytest.raises(StcError, match="either --store"):
        ScoreConfig((str(sent),), "o")
    with pytest.raises(StcError, match="no dataset 'nope'"):
        score(ScoreConfig((str(sent),), str(tmp_path / "o"), store=str(st), dataset="nope"))
    with pytest.raises(StcError, match="no manifest"):
        score(ScoreConfig((str(tmp_path),), str(tmp_path / "o"), store=str(st), dataset="d"))
    with pytest.raises(StcError, match="same classifier twice"):
        score(ScoreConfig((str(sent), str(sent)), str(tmp_path / "o"), store=str(st), dataset="d"))
    p = cli("score", "--classifier", sent, "--input", "x.jsonl", "--store", st, "--dataset", "d",
            "--output", tmp_path / "o")
    assert p.returncode == 1 and "either --store" in p.stderr


def test_token_explanations(fitted, tmp_path):
    """Mean pooling is linear: the mean of the per-token scores is the text's score (exactly with float32
    features, up to float16 rounding otherwise), so the page shows an exact breakdown. Max-pooled classifiers
    are explained too; a single-token classifier is not, and the run says so."""
    st, lm, sent, topic = fitted
    single = _variant(load_classifier(sent), [FeatureGroup("hidden", "single", 2, [0, 1])], tmp_path / "cls")
    exact = _variant(load_classifier(sent), [FeatureGroup("hidden", "mean", l, list(range(0, 32, 3)))
                                            for l in (1, 2, 3)], tmp_path / "exact", dtype="float32")
    src = write_jsonl(tmp_path / "new.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(NEW_TEXTS)])
    res = score(ScoreConfig((str(exact),), str(tmp_path / "e.parquet"), input=str(src), explain="tokens"),
                models={"tiny-bert": lm})
    for r in map(json.loads, open(res.explain_jsonl, encoding="utf-8")):
        assert np.mean([t["scores"][0] for t in r["tokens"]]) == pytest.approx(r["scores"][0], abs=1e-3)
    src = write_jsonl(tmp_path / "new.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(NEW_TEXTS)])
    res = score(ScoreConfig((str(sent), str(topic), str(single)), str(tmp_path / "p.parquet"), input=str(src),
                            explain="tokens"), models={"tiny-bert": lm})
    recs = [json.loads(line) for line in open(res.explain_jsonl, encoding="utf-8")]
    assert len(recs) == 8 and {r["classifier"] for r in recs} == {"sent", "topic"}
    assert any("no token explanation for cls" in m for m in res.messages)
    clf = load_classifier(sent, model=lm)
    for r in (r for r in recs if r["classifier"] == "sent"):
        # binary: one score per text and token, the log-odds of the second class
        assert np.mean([t["scores"][0] for t in r["tokens"]]) == pytest.approx(r["scores"][0], rel=1e-2, abs=2e-2)
        assert r["probabilities"][1] == pytest.approx(1 / (1 + np.exp(-r["scores"][0])), abs=1e-5)
        # tokens cover the text: [CLS] and [SEP] are special, the rest are spans of the text
        assert r["tokens"][0]["start"] == -1 and r["tokens"][-1]["start"] == -1
        assert " ".join(r["text"][t["start"]:t["end"]] for t in r["tokens"][1:-1]) == r["text"]
    probs = dict(zip((r["id"] for r in recs if r["classifier"] == "sent"),
                     (r["probabilities"] for r in recs if r["classifier"] == "sent")))
    np.testing.assert_allclose([probs[f"n{i}"] for i in range(4)], clf.predict_proba(NEW_TEXTS), atol=1e-5)
    html = Path(res.explain_html).read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and html.count('class="card"') == 8 and "superb" in html
    assert "<script" not in html  # self-contained and static


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_pooling_only_chosen_neurons_equals_full_width_pooling(family, bert_tokenizer):
    """With `columns`, the hooks select neurons before pooling: the values equal the full-width pooled
    features at those neurons, for every pooling, for encoders and (left-padded) decoders, gated or not;
    per-token values are the unpooled ones of real tokens only."""
    from stcstore.core.names import FeatureBlock
    from stcstore.features.compute import FeatureComputer

    from .conftest import build_tiny

    lm = build_tiny(family, bert_tokenizer)
    texts = ["a", "a much longer text than the first one, with commas", "two words", "short again"]
    blocks = [FeatureBlock(k, p, l) for k in ("hidden", "ffn") for p in ("mean", "max", "single") for l in (0, 2)]
    cols = {("hidden", 0): [3, 1, 30], ("hidden", 2): [0], ("ffn", 0): [5, 40], ("ffn", 2): [47, 2, 9]}
    full = FeatureComputer(lm, blocks, 64, "float32", batch_size=3).run(texts)
    part = FeatureComputer(lm, blocks, 64, "float32", batch_size=3, columns=cols, keep_tokens=True).run(texts)
    for b in blocks:
        np.testing.assert_allclose(part.blocks[b], full.blocks[b][:, cols[(b.kind, b.layer)]], rtol=1e-5, atol=1e-6)
    for i, ids in enumerate(part.token_ids):
        for (kind, layer), idx in cols.items():
            tok = part.tokens[i][(kind, layer)]
            assert tok.shape == (len(ids), len(idx))
            np.testing.assert_allclose(tok.mean(0), part.blocks[FeatureBlock(kind, "mean", layer)][i], rtol=1e-5,
                                       atol=1e-6)
            np.testing.assert_allclose(tok.max(0), part.blocks[FeatureBlock(kind, "max", layer)][i], rtol=1e-6)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_scoring_features_equal_stored_features_bit_for_bit(family, tmp_path, bert_tokenizer):
    """The one feature path: for the same texts in the same batches, the features a classifier computes
    for scoring (only its neurons pooled, early exit at its deepest block) are exactly the stored ones."""
    from stcstore.core.names import FeatureBlock
    from stcstore.features import ExtractConfig, FeatureComputer, extract

    from .conftest import build_tiny

    lm = build_tiny(family, bert_tokenizer)
    st = tmp_path / "st"
    ingest(st, [learnable_corpus(tmp_path / "c.jsonl", 90, ("0", "1"))], IngestConfig("d", split_field="split"))
    extract(st, ExtractConfig("d", batch_size=8, chunk_rows=30, max_length=64), lm=lm)
    store = Store(st)
    texts = store.texts("d", columns=["text"]).column("text").to_pylist()
    cols = {("hidden", 1): [3, 1, 30, 17], ("ffn", 0): [5, 40, 11], ("ffn", 1): [47, 2]}
    blocks = [FeatureBlock(k, p, l) for (k, l) in cols for p in ("mean", "max", "single")]
    computer = FeatureComputer(lm, blocks, 64, "float16", batch_size=8, columns=cols)
    assert computer.n_blocks_run == 2  # stops after block 1 of 3
    for c0 in range(0, 90, 30):  # extract's chunks: the same texts in the same length-bucketed batches
        got = computer.run(texts[c0:c0 + 30])
        for b in blocks:
            _, stored, _ = store.columns("d", lm.name, b.kind, b.pooling, {b.layer: cols[(b.kind, b.layer)]}, None)
            assert stored.dtype == got.blocks[b].dtype == np.float32
            np.testing.assert_array_equal(got.blocks[b], stored[c0:c0 + 30], err_msg=str(b))


def test_classifiers_of_different_models_get_one_pass_each(fitted, tmp_path, bert_tokenizer):
    from stcstore.core.names import IDENTITY_KEYS

    from .conftest import build_tiny

    st, lm, sent, _ = fitted
    other = build_tiny("gpt2", bert_tokenizer)
    sent_clf = load_classifier(sent)
    m = sent_clf.manifest.to_dict()
    m["model"].update({k: other.fingerprint_fields().get(k) for k in ("model", *IDENTITY_KEYS)})
    base = Classifier(m, sent_clf.arrays)
    gpt = _variant(base, [FeatureGroup("ffn", "max", 1, [2, 7])], tmp_path / "gpt")
    src = write_jsonl(tmp_path / "new.jsonl", [{"id": f"n{i}", "text": t} for i, t in enumerate(NEW_TEXTS)])
    models = {"tiny-bert": lm, "tiny-gpt2": other}
    res = score(ScoreConfig((str(sent), str(gpt)), str(tmp_path / "both.parquet"), input=str(src)), models=models)
    assert [g["classifiers"] for g in res.groups] == [["sent"], ["gpt"]]
    assert [g["blocks_run"] for g in res.groups] == [load_classifier(sent).manifest["blocks_run"], 2]
    joint = _preds(tmp_path / "both.parquet")
    np.testing.assert_allclose([joint[(f"n{i}", "gpt")] for i in range(4)],
                               load_classifier(gpt, model=other).predict_proba(NEW_TEXTS), atol=1e-6)
    # the fingerprint check still guards each group: a classifier never runs on another model
    with pytest.raises(StcError, match="weights_sha256"):
        score(ScoreConfig((str(gpt),), str(tmp_path / "x.parquet"), input=str(src)), models={"tiny-gpt2": lm})


def test_input_streams_in_chunks_and_a_broken_file_keeps_what_was_committed(fitted, tmp_path):
    import gzip

    st, lm, sent, _ = fitted
    lines = [json.dumps({"id": f"g{i}", "text": f"{NEW_TEXTS[i % 4]} number {i}"}) for i in range(400)]
    good = tmp_path / "day.jsonl.gz"
    good.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(good.read_bytes()[: len(good.read_bytes()) * 2 // 3])  # cut mid-stream
    out = tmp_path / "preds"
    with pytest.raises(StcError, match=r"(?s)unreadable after line \d+ .* \d+ texts before it are committed"):
        score(ScoreConfig((str(sent),), str(out), input=str(broken), chunk_rows=50), models={"tiny-bert": lm})
    first = _preds(out)
    assert 50 <= len(first) < 400 and len(first) % 50 == 0  # whole chunks only
    res = score(ScoreConfig((str(sent),), str(out), input=str(good), chunk_rows=50), models={"tiny-bert": lm})
    assert res.scored_texts == 400 - len(first) and res.classifiers[0].already == len(first)
    assert len(_preds(out)) == 400
    # a single-file output of a broken input leaves nothing behind
    with pytest.raises(StcError, match="unreadable"):
        score(ScoreConfig((str(sent),), str(tmp_path / "one.parquet"), input=str(broken), chunk_rows=50),
              models={"tiny-bert": lm})
    assert not list(tmp_path.glob("*one.parquet*"))


def test_input_truncation_special_only_texts_changed_texts_and_quiet_noop_runs(fitted, tmp_path):
    st, lm, sent, _ = fitted
    long = " ".join(["great"] * 400)
    rows = [{"id": "ok", "text": "a great film"}, {"id": "long", "text": long}, {"id": "zw", "text": "\u200b\u200b"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "preds"
    r = score(ScoreConfig((str(sent),), str(out), input=str(src)), models={"tiny-bert": lm})
    assert r.scored_texts == 3 and r.classifiers[0].scored == 2 and r.rejected == 1
    assert any("1 texts were longer than the max_length" in m for m in r.messages)
    rej = pq.read_table(r.rejects_path).to_pylist()
    assert [(x["id"], x["reason"]) for x in rej] == [("zw", "no tokens but special ones for model tiny-bert")]
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    # a second run with nothing new writes nothing: no prediction part, no empty rejects file
    r2 = score(ScoreConfig((str(sent),), str(out), input=str(write_jsonl(tmp_path / "ok.jsonl", rows[:2]))),
               models={"tiny-bert": lm})
    assert r2.scored_texts == 0 and r2.rejected == 0
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == files
    # a text that changed since its prediction keeps it, and the run says so
    changed = write_jsonl(tmp_path / "changed.jsonl", [{"id": "ok", "text": "a dreadful film"}])
    r3 = score(ScoreConfig((str(sent),), str(out), input=str(changed)), models={"tiny-bert": lm})
    assert r3.classifiers[0].changed == 1 and r3.scored_texts == 0
    assert any("1 texts changed since sent scored them" in m for m in r3.messages)
