"""Property tests: whatever bytes a user feeds ingest, every row ends as exactly one text, reject or
duplicate, and the command ends with exit 0 or 1 (never a crash); dataset names are checked exactly."""

from __future__ import annotations

import json
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcstore.core.errors import StcError
from stcstore.core.names import check_name
from stcstore.ingest import IngestConfig

from .conftest import cli

SETTINGS = settings(max_examples=int(os.environ.get("STC_PROPERTY_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids,
                                                                                     max_size=3), max_leaves=8)
records = st.dictionaries(st.sampled_from(["id", "text", "label", "split", "other"]), json_values, max_size=5)
lines = st.one_of(records.map(lambda r: json.dumps(r).encode()), st.binary(max_size=40),
                  st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")))


def _accounted(tmp_path, path, fmt: str) -> None:
    r = cli("ingest", path, "--store", tmp_path / "st", "--dataset", "p", "--format", fmt, "--json")
    assert r.returncode in (0, 1), r.stderr
    if r.returncode == 0:
        out = json.loads(r.stdout)
        assert out["ingested"] + out["rejected"] + out["duplicates"] == out["rows_read"]


@SETTINGS
@given(rows=st.lists(lines, min_size=1, max_size=8), bom=st.booleans())
def test_any_jsonl_file_is_accounted_for(tmp_path_factory, rows, bom):
    tmp = tmp_path_factory.mktemp("pj")
    path = tmp / "in.jsonl"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(rows) + b"\n")
    _accounted(tmp, path, "jsonl")


@SETTINGS
@given(rows=st.lists(st.lists(st.text(max_size=12) | st.binary(max_size=6).map(lambda b: b.decode("latin-1")),
                              min_size=0, max_size=4), min_size=1, max_size=6), bom=st.booleans())
def test_any_csv_file_is_accounted_for(tmp_path_factory, rows, bom):
    tmp = tmp_path_factory.mktemp("pc")
    path = tmp / "in.csv"
    body = "id,text,label\n" + "\n".join(",".join(f'"{c}"' if i % 2 else c for i, c in enumerate(r)) for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8", "surrogatepass") + b"\n")
    _accounted(tmp, path, "csv")


@SETTINGS
@given(rows=st.lists(records, min_size=1, max_size=8))
def test_any_tweet_dump_is_accounted_for(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("pt")
    path = tmp / "in.jsonl"
    wrapped = [{"data": [r]} if i % 2 else {**r, "id_str": r.get("id")} for i, r in enumerate(rows)]
    path.write_text("\n".join(json.dumps(r) for r in wrapped) + "\n")
    _accounted(tmp, path, "tweets")


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=140))
def test_dataset_names_are_exactly_the_documented_pattern(name):
    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name) is not None
    try:
        check_name(name, "--dataset")
        assert ok
    except StcError:
        assert not ok
    if ok:
        assert IngestConfig(name).dataset == name
