"""Ingest of every supported format, broken rows to rejects, idempotent re-ingest, whole-file errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stcstore import Store
from stcstore.core.errors import StcError
from stcstore.ingest import IngestConfig, ingest

from .conftest import write_jsonl

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _texts(store: Path, dataset: str) -> dict[str, dict]:
    return {r["id"]: r for r in Store(store).texts(dataset).to_pylist()}


def _rejects(store: Path, dataset: str) -> list[dict]:
    return Store(store).rejects(dataset).to_pylist()


def test_jsonl_with_broken_lines(tmp_path):
    src = tmp_path / "mixed.jsonl"
    good = {"id": "1", "text": "fine text", "label": "pos"}
    with open(src, "wb") as f:
        f.write(json.dumps(good).encode() + b"\n")
        f.write(b'{"id": "2", "text": "unterminated\n')  # malformed JSON
        f.write(b'{"id": "3", "label": "neg"}\n')  # no text
        f.write(b'{"id": "4", "text": "   "}\n')  # empty text
        f.write(b'{"id": "5", "text": "caf\xe9 latin-1"}\n')  # invalid UTF-8
        f.write(b"\n")  # blank lines are not rows
        f.write(b'["not", "an", "object"]\n')
        f.write(b'{"id": "1", "text": "another text, same id"}\n')  # same id, different text
        f.write(b'{"id": "1", "text": "fine text", "label": "pos"}\n')  # exact duplicate: not a reject
        f.write(b'{"id": 6, "text": "numeric id and label", "label": 1}\n')
        f.write(b'{"id": "7", "text": 42}\n')  # text is not a string
    r = ingest(tmp_path / "st", [src], IngestConfig("d"))
    t = r.totals()
    assert (t["rows_read"], t["ingested"], t["duplicates"], t["rejected"]) == (10, 2, 1, 7)
    texts = _texts(tmp_path / "st", "d")
    assert set(texts) == {"1", "6"}
    assert texts["1"]["text"] == "fine text" and texts["1"]["split"] == "train"
    assert texts["6"]["label"] == "1"
    rej = {r["line"]: r for r in _rejects(tmp_path / "st", "d")}
    assert rej[2]["reason"].startswith("malformed JSON")
    assert rej[3]["reason"].startswith("no text")
    assert rej[4]["reason"] == "empty text"
    assert rej[5]["reason"].startswith("invalid UTF-8") and "caf" in rej[5]["raw"]
    assert rej[7]["reason"].startswith("expected a JSON object")
    assert rej[8]["reason"] == "id already exists with a different text" and rej[8]["id"] == "1"
    assert "not a string" in rej[11]["reason"] and rej[11]["id"] == "7"
    assert all(r["source"] == str(src) for r in rej.values())


def test_reingest_adds_nothing_and_new_ids_continue_sequence(tmp_path, corpus):
    st = tmp_path / "st"
    first = ingest(st, [corpus], IngestConfig("d", split_field="split"))
    assert first.totals()["ingested"] == 60
    again = ingest(st, [corpus], IngestConfig("d", split_field="split"))
    assert again.files[0].skipped and again.totals()["ingested"] == 0
    # the same rows in another file: deduplicated by id, not rejected
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(corpus.read_bytes() + json.dumps({"id": "new", "text": "brand new"}).encode() + b"\n")
    third = ingest(st, [copy], IngestConfig("d", split_field="split"))
    assert (third.totals()["ingested"], third.totals()["duplicates"], third.totals()["rejected"]) == (1, 60, 0)
    table = Store(st).texts("d")
    assert table.num_rows == 61
    assert table.column("seq").to_pylist() == list(range(61))
    assert table.column("id").to_pylist()[-1] == "new"
    assert len(set(table.column("id").to_pylist())) == 61


def test_gzip_jsonl_and_split_option(tmp_path):
    src = tmp_path / "dump.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        for i in range(5):
            f.write(json.dumps({"id": i, "body": {"msg": f"text {i}"}}) + "\n")
    r = ingest(tmp_path / "st", [src], IngestConfig("g", text_field="body.msg", split="val"))
    assert r.files[0].format == "jsonl" and r.totals()["ingested"] == 5
    texts = _texts(tmp_path / "st", "g")
    assert {t["split"] for t in texts.values()} == {"validation"}  # alias normalised
    assert texts["3"]["text"] == "text 3" and texts["3"]["label"] is None


def test_twitter_v1_objects(tmp_path):
    tweets = [
        {"id": 1, "id_str": "1460000000000000001", "full_text": "compat full text &amp; more", "user": {}},
        {"id_str": "2", "text": "truncated…", "truncated": True,
         "extended_tweet": {"full_text": "the extended full text of tweet two"}},
        {"id_str": "3", "text": "RT @bob: original trunc…",
         "retweeted_status": {"id_str": "99", "full_text": "original complete text by bob"}},
        {"id_str": "4", "text": "plain v1 text < 140"},
        {"id_str": "5", "user": {"name": "no text here"}},
        "{broken json",
    ]
    src = write_jsonl(tmp_path / "tweets.jsonl", tweets)
    r = ingest(tmp_path / "st", [src], IngestConfig("tw"))
    assert r.files[0].format == "tweets"
    texts = _texts(tmp_path / "st", "tw")
    assert texts["1460000000000000001"]["text"] == "compat full text & more"  # id_str kept exactly, unescaped
    assert texts["2"]["text"] == "the extended full text of tweet two"
    assert texts["3"]["text"] == "original complete text by bob" and texts["3"]["is_retweet"] is True
    assert texts["4"]["is_retweet"] is False and texts["4"]["split"] == "unlabeled"
    assert sorted(r["reason"].split(":")[0] for r in _rejects(tmp_path / "st", "tw")) == ["malformed JSON", "no text"]


def test_twitter_v2_pages(tmp_path):
    page = {
        "data": [
            {"id": "10", "text": "short v2 text"},
            {"id": "11", "text": "long tweet trunc…", "note_tweet": {"text": "the whole long note tweet"}},
            {"id": "12", "text": "RT @x: orig…", "referenced_tweets": [{"type": "retweeted", "id": "50"}]},
            {"id": "13", "text": ""},
        ],
        "includes": {"tweets": [{"id": "50", "text": "the original retweeted text"}]},
        "meta": {"result_count": 4},
    }
    single = {"data": {"id": "14", "text": "single lookup"}}
    src = write_jsonl(tmp_path / "v2.jsonl", [page, single])
    r = ingest(tmp_path / "st", [src], IngestConfig("v2", format="tweets"))
    assert (r.totals()["rows_read"], r.totals()["ingested"], r.totals()["rejected"]) == (5, 4, 1)
    texts = _texts(tmp_path / "st", "v2")
    assert texts["11"]["text"] == "the whole long note tweet"
    assert texts["12"]["text"] == "the original retweeted text" and texts["12"]["is_retweet"]
    assert texts["14"]["text"] == "single lookup"
    assert [(r["id"], r["reason"], r["line"]) for r in _rejects(tmp_path / "st", "v2")] == [("13", "empty text", 1)]


def test_csv_with_bad_rows(tmp_path):
    src = tmp_path / "rows.csv"
    src.write_bytes(
        b"id,text,label\n"
        b"a,\"a quoted, comma text\",1\n"
        b"b,\"multi\nline text\",0\n"
        b"c,too,many,fields\n"
        b"d,bad \xff byte,1\n"
        b"e,,1\n"
        b"f,last good,0\n"
    )
    r = ingest(tmp_path / "st", [src], IngestConfig("c"))
    assert r.files[0].format == "csv"
    texts = _texts(tmp_path / "st", "c")
    assert set(texts) == {"a", "b", "f"}
    assert texts["b"]["text"] == "multi\nline text" and texts["b"]["line"] == 3
    rej = {r["line"]: r["reason"] for r in _rejects(tmp_path / "st", "c")}
    assert rej == {5: "4 fields, header has 3", 6: "invalid UTF-8 in column 'text'", 7: "empty text"}


@pytest.mark.skipif(not (SHARED / "tweeteval-irony").exists(), reason="shared datasets not present")
def test_parquet_from_shared_datasets(tmp_path):
    files = [SHARED / "tweeteval-irony" / f"{s}.parquet" for s in ("train", "validation", "test")]
    r = ingest(tmp_path / "st", files, IngestConfig("irony"))
    expected = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    assert r.totals()["ingested"] + r.totals()["rejected"] == expected
    splits = Store(tmp_path / "st").texts("irony", columns=["split"]).column("split").to_pylist()
    assert set(splits) == {"train", "validation", "test"}  # inferred from the file names


def test_unreadable_files_are_errors_that_leave_nothing(tmp_path, corpus):
    st = tmp_path / "st"
    bad_gz = tmp_path / "bad.jsonl.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00garbage that is not deflate")
    bad_pq = tmp_path / "bad.parquet"
    bad_pq.write_bytes(b"PAR1 not really")
    no_col = tmp_path / "nocol.csv"
    no_col.write_text("id,body\n1,hello\n")
    for path, match in [(bad_gz, "bad.jsonl.gz"), (bad_pq, "bad.parquet"), (no_col, "no column 'text'"),
                        (tmp_path / "missing.jsonl", "no such file")]:
        with pytest.raises(StcError, match=match):
            ingest(st, [path], IngestConfig("d"))
    assert Store(st).texts("d").num_rows == 0
    leftovers = [p for p in st.rglob("*") if p.name.startswith(".tmp-") or p.name.startswith("batch=")]
    assert leftovers == []
    # a good file before a bad one stays ingested, and the error says so
    with pytest.raises(StcError, match="already committed before this file"):
        ingest(st, [corpus, bad_gz], IngestConfig("d"))
    assert Store(st).texts("d").num_rows == 60


def test_wrong_text_field_for_json_is_an_error(tmp_path):
    src = write_jsonl(tmp_path / "x.jsonl", [{"id": 1, "body": "a"}, {"id": 2, "body": "b"}])
    with pytest.raises(StcError, match="no row has the text field 'text'"):
        ingest(tmp_path / "st", [src], IngestConfig("d"))


def test_bad_options_are_refused_before_any_io(tmp_path):
    with pytest.raises(StcError, match="--dataset"):
        IngestConfig("bad name/..")
    with pytest.raises(StcError, match="--format"):
        IngestConfig("d", format="xml")
    with pytest.raises(StcError, match="not both"):
        IngestConfig("d", split="train", split_field="s")
    assert not (tmp_path / "st").exists()


def test_conflicting_label_for_same_id_is_rejected(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "text": "same", "label": "pos"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": "x", "text": "same", "label": "neg"}])
    ingest(tmp_path / "st", [a], IngestConfig("d"))
    r = ingest(tmp_path / "st", [b], IngestConfig("d"))
    assert r.totals()["rejected"] == 1
    assert "label 'pos'" in _rejects(tmp_path / "st", "d")[0]["reason"]


def test_parquet_int_labels_become_strings(tmp_path):
    src = tmp_path / "train.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x y", "z"], "label": [0, 1]}), src)
    ingest(tmp_path / "st", [src], IngestConfig("p"))
    texts = _texts(tmp_path / "st", "p")
    assert texts["a"]["label"] == "0" and texts["b"]["split"] == "train"


def test_id_index_round_trips_and_tells_texts_apart():
    from stcstore.core.fingerprint import text_hash as content_hash
    from stcstore.ingest.idindex import IdIndex, text_key

    rows = [("1", content_hash("a"), "pos", "train"), ("2", content_hash("b"), None, "unlabeled"),
            ("\ud800odd", content_hash("c"), "neg", "test"), ("", content_hash("d"), "pos", "train")]
    rows += [(f"n{i}", content_hash(f"t{i}"), str(i % 3), "train") for i in range(1000)]
    idx = IdIndex(rows + [("2", content_hash("b"), "late", "unlabeled")])  # the last row of an id wins
    rows[1] = ("2", content_hash("b"), "late", "unlabeled")
    assert len(idx) == len(rows)
    added = [("m1", content_hash("e"), None, "test"), ("", content_hash("f"), "neg", "train")]
    for r in added:
        idx.add(*r)  # a run's own new ids (an add replaces what the store had)
    rows[3] = added[1]
    for rid, h, label, split in rows + added[:1]:
        assert idx.get(rid) == (text_key(h), label, split)
    assert idx.get("3") is None and idx.get("1 ") is None and idx.get("n1000") is None
    assert idx.get("1")[0] != text_key(content_hash("a "))
    assert IdIndex().get("x") is None


def test_known_ids_across_runs_keep_their_text_label_and_split(tmp_path):
    st = tmp_path / "st"
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "text": "one", "label": "pos"},
                                           {"id": "y", "text": "two"}])
    ingest(st, [a], IngestConfig("d"))
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": "x", "text": "one", "label": "pos"},   # duplicate
                                           {"id": "x", "text": "one!", "label": "pos"},  # other text
                                           {"id": "y", "text": "two"},                   # duplicate, no label
                                           {"id": "y", "text": "two", "label": "neg"},   # label where none was
                                           {"id": "z", "text": "three"}])
    r = ingest(st, [b], IngestConfig("d"))
    assert (r.totals()["ingested"], r.totals()["duplicates"], r.totals()["rejected"]) == (1, 2, 2)
    reasons = [x["reason"] for x in _rejects(st, "d")]
    assert reasons == ["id already exists with a different text", "id already exists with label None / split 'unlabeled'"]


def test_hostile_rows_are_rejected_with_a_reason_and_the_rest_ingested(tmp_path):
    """Rows that crashed 0.1.0 (lone surrogates in an id or label, JSON nested 100k deep) or were handled
    wrongly (a byte-order mark, a short CSV row, a giant field) each end as one reject or one text."""
    jl = tmp_path / "hostile.jsonl"
    with open(jl, "wb") as f:
        f.write(b"\xef\xbb\xbf" + json.dumps({"id": "1", "text": "first row after a BOM"}).encode() + b"\n")
        f.write(b'{"id": "\\ud800", "text": "lone surrogate in the id"}\n')
        f.write(b'{"id": "2", "text": "lone surrogate in the label", "label": "\\udc00"}\n')
        f.write(b'{"id": "2b", "text": "lone surrogate in the split", "split": "\\udc00"}\n')
        f.write(b"[" * 100_000 + b"\n")
        f.write(json.dumps({"id": "3", "text": "x" * 1_000_001}).encode() + b"\n")
        f.write(json.dumps({"id": "9" * 1001, "text": "a giant id"}).encode() + b"\n")
        f.write(json.dumps({"id": "4", "text": "fine"}).encode() + b"\n")
    r = ingest(tmp_path / "st", [jl], IngestConfig("j", split_field="split")).files[0]
    assert (r.rows_read, r.ingested, r.rejected) == (8, 2, 6)
    texts = Store(tmp_path / "st").texts("j").column("id").to_pylist()
    assert texts == ["1", "4"]  # the BOM did not cost the first row
    reasons = Store(tmp_path / "st").rejects("j").column("reason").to_pylist()
    assert reasons == ["invalid unicode in id (lone surrogate)", "invalid unicode in label (lone surrogate)",
                       "invalid unicode in split (lone surrogate)", "malformed JSON: nested too deeply",
                       "text too long: 1,000,001 characters (the limit is 1,000,000)",
                       "id too long: 1,001 characters (the limit is 1,000)"]
    csv_path = tmp_path / "hostile.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfid,text,label\n1,hello,a\n2,too few\n3," + b"y" * 200_000 + b",b\n4,ok,c\n")
    r = ingest(tmp_path / "st", [csv_path], IngestConfig("c")).files[0]
    assert (r.rows_read, r.ingested, r.rejected) == (4, 3, 1)
    t = Store(tmp_path / "st").texts("c")
    assert t.column("id").to_pylist() == ["1", "3", "4"]  # ids kept: the BOM did not rename the id column
    assert Store(tmp_path / "st").rejects("c").column("reason").to_pylist() == ["2 fields, header has 3"]


@pytest.mark.parametrize("name", ["abc\n", "abc ", "", ".hidden", "a/b", "a" * 129, "ä", "x\x00y"])
def test_bad_dataset_names_are_refused(tmp_path, corpus, name):
    with pytest.raises(StcError, match="not a valid name"):
        IngestConfig(name)


def test_a_split_field_is_read_without_being_asked_and_said(tmp_path):
    """A JSONL whose rows carry "split" (as datasets users write) keeps its splits; the result says where they
    came from. --split NAME still puts every row in one split."""
    recs = [{"id": str(i), "text": f"text {i}", "label": i % 2, "split": ("train", "validation", "test")[i % 3]}
            for i in range(30)] + [{"id": "x", "text": "no split here", "label": 0}]
    src = write_jsonl(tmp_path / "mixed.jsonl", recs)
    r = ingest(tmp_path / "st", [src], IngestConfig("d"))
    texts = _texts(tmp_path / "st", "d")
    assert [texts[str(i)]["split"] for i in range(3)] == ["train", "validation", "test"]
    assert texts["x"]["split"] == "train"  # no field, no split in the file name: train
    assert r.files[0].split_field_rows == 30 and "split: read from the 'split' field of 30 rows" in r.to_text()
    one = ingest(tmp_path / "st2", [src], IngestConfig("d", split="train"))
    assert {t["split"] for t in _texts(tmp_path / "st2", "d").values()} == {"train"}
    assert one.files[0].split_field_rows == 0 and "split: read" not in one.to_text()


def test_drop_and_replace_a_dataset(tmp_path):
    """`ingest --replace` starts a dataset over (the way out of a wrong first ingest); a replace whose file
    cannot be read changes nothing; `drop` removes a dataset only with --yes; other datasets are untouched."""
    from stcstore.store.drop import drop

    st = tmp_path / "st"
    first = write_jsonl(tmp_path / "a.jsonl", [{"id": str(i), "text": f"text {i}", "label": 0} for i in range(10)])
    ingest(st, [first], IngestConfig("d", split="train"))
    ingest(st, [first], IngestConfig("other"))
    fixed = write_jsonl(tmp_path / "b.jsonl", [{"id": str(i), "text": f"text {i}", "label": 0, "split": "validation"}
                                               for i in range(10)])
    clash = ingest(st, [fixed], IngestConfig("d"))  # same ids, other split: every row rejected
    assert clash.totals()["rejected"] == 10
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not parquet")
    with pytest.raises(StcError, match="nothing was replaced"):
        ingest(st, [fixed, broken], IngestConfig("d", replace=True))
    assert {t["split"] for t in _texts(st, "d").values()} == {"train"} and len(_texts(st, "d")) == 10
    r = ingest(st, [fixed], IngestConfig("d", replace=True))
    assert r.replaced == {"texts": 10, "feature_sets": 0, "fits": 0} and r.totals()["ingested"] == 10
    assert {t["split"] for t in _texts(st, "d").values()} == {"validation"} and Store(st).rejects("d").num_rows == 0
    with pytest.raises(StcError, match="would delete 10 texts.*--yes"):
        drop(st, "d")
    assert drop(st, "d", yes=True).texts == 10
    assert Store(st).datasets() == ["other"] and len(_texts(st, "other")) == 10
    assert not [p for p in (st / "ingest").iterdir() if p.name.startswith(".tmp-")]
    with pytest.raises(StcError, match="has no dataset 'd' \\(it has: other\\)"):
        drop(st, "d", yes=True)


def test_label_names_are_kept_beside_the_texts(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"id": str(i), "text": f"text {i}", "label": i % 2} for i in range(6)])
    r = ingest(tmp_path / "st", [src], IngestConfig("d", label_names=(("0", "negative"), ("1", "positive"))))
    assert r.label_names == {"0": "negative", "1": "positive"} and "label names: 0 = negative" in r.to_text()
    again = ingest(tmp_path / "st", [src], IngestConfig("d", label_names=(("1", "pos"),)))  # the file: skipped
    assert again.files[0].skipped and again.label_names == {"0": "negative", "1": "pos"}
    assert Store(tmp_path / "st").label_names("d") == {"0": "negative", "1": "pos"}
    assert {t["label"] for t in _texts(tmp_path / "st", "d").values()} == {"0", "1"}  # the texts keep their labels


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_a_label_name_field_names_the_labels(tmp_path, fmt):
    """Rows may carry their label's name (`label_name`, as datasets users expect): the first name of each label
    is kept, another name for it or an unusable one is noted (the row is ingested), --label-names wins."""
    rows = [{"id": str(i), "text": f"text {i}", "label": str(i % 2), "label_name": ["negative", "positive"][i % 2]}
            for i in range(6)]
    rows[4]["label_name"] = "neg"  # a second name for label 0
    rows[5]["label_name"] = "x" * 500  # not a name
    src = tmp_path / f"a.{fmt}"
    if fmt == "jsonl":
        write_jsonl(src, rows)
    elif fmt == "csv":
        src.write_text("id,text,label,label_name\n" + "".join(
            f"{r['id']},{r['text']},{r['label']},{r['label_name']}\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), src)
    r = ingest(tmp_path / "st", [src], IngestConfig("d"))
    assert r.totals()["ingested"] == 6 and r.label_names == {"0": "negative", "1": "positive"}
    text = r.to_text()
    assert "label '0' is also named 'neg'; kept 'negative'" in text and "not used" in text
    assert Store(tmp_path / "st").label_names("d") == {"0": "negative", "1": "positive"}
    assert {t["label"] for t in _texts(tmp_path / "st", "d").values()} == {"0", "1"}
    other = write_jsonl(tmp_path / "b.jsonl", [{"id": "9", "text": "t", "label": "1", "label_name": "good"}])
    r = ingest(tmp_path / "st", [other], IngestConfig("d", label_names=(("0", "bad"),)))
    assert r.label_names == {"0": "bad", "1": "good"}  # the rows rename 1, --label-names names 0
    r = ingest(tmp_path / "st", [write_jsonl(tmp_path / "c.jsonl", [{"id": "8", "text": "u", "label": "1",
                                                                    "label_name": "fine"}])],
               IngestConfig("d", label_name_field=""))  # the field not read
    assert r.label_names == {"0": "bad", "1": "good"}
