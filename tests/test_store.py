"""The Python read API of a store: polars DataFrames from `Store.sql` and `Store.table`."""

from __future__ import annotations

import polars as pl
import pytest

from stcstore import Store
from stcstore.core.errors import StcError
from stcstore.ingest import IngestConfig, ingest
from stcstore.store import TABLES

from .conftest import write_jsonl


@pytest.fixture
def two_datasets(tmp_path):
    st = tmp_path / "st"
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": f"a{i}", "text": f"text {i}", "label": i % 2} for i in range(5)]
                    + ["{broken"])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": f"b{i}", "text": f"other {i}"} for i in range(3)])
    ingest(st, [a], IngestConfig("a"))
    ingest(st, [b], IngestConfig("b"))
    return Store(st)


def test_sql_returns_polars_with_bound_params(two_datasets):
    df = two_datasets.sql("SELECT dataset, count(*) AS n FROM texts WHERE dataset = $d GROUP BY 1", {"d": "a"})
    assert isinstance(df, pl.DataFrame) and df.to_dicts() == [{"dataset": "a", "n": 5}]
    # a value is bound, never pasted into the SQL
    assert two_datasets.sql("SELECT count(*) AS n FROM texts WHERE id = $i", {"i": "a1' OR '1'='1"})["n"][0] == 0
    with pytest.raises(StcError, match="query failed"):
        two_datasets.sql("SELECT * FROM no_such_view")


def test_every_table_has_its_columns_even_when_empty(two_datasets):
    for name in TABLES:
        df = two_datasets.table(name)
        assert isinstance(df, pl.DataFrame) and df.width > 0, name
    assert two_datasets.table("predictions").height == 0 and "probabilities" in two_datasets.table("predictions").columns
    assert two_datasets.table("texts").height == 8
    assert two_datasets.table("texts", dataset="b")["id"].to_list() == ["b0", "b1", "b2"]
    assert two_datasets.table("rejects", dataset="a")["reason"].str.starts_with("malformed JSON").all()
    with pytest.raises(StcError, match="no table 'secrets'"):
        two_datasets.table("secrets")


def test_sql_on_a_directory_that_is_not_a_store(tmp_path):
    with pytest.raises(StcError, match="not an stcstore store"):
        Store(tmp_path).sql("SELECT 1")


def test_a_damaged_feature_set_manifest_is_refused_naming_file_and_field(tmp_path):
    import json

    from stcstore.features.synthetic import write_synthetic
    from stcstore.store.featureset import MANIFEST_NAME

    fs = write_synthetic(tmp_path / "st", "d", rows=40, layers=2, widths={"hidden": 4, "ffn": 8}, rows_per_chunk=20)
    st = Store(tmp_path / "st")
    # the typed view: defaults of older manifests live in one place, and the mapping reads as 0.2's dict did
    m = st.feature_sets("d")[0].manifest
    assert (m.dtype, m.max_length, m.stats_by_label, m.model.name) == ("float16", 64, True, "synthetic")
    assert m["fingerprint"]["dtype"] == "float16" and m.chunk_rows == 20
    raw = json.loads((fs.path / MANIFEST_NAME).read_text())
    for damage, field in [(lambda r: r.pop("columns"), "columns is missing"),
                          (lambda r: r["fingerprint"].update(max_length="64"), "fingerprint.max_length is str"),
                          (lambda r: r["columns"].append("ffn.avg.0"), "not a block name"),
                          (lambda r: r["widths"].pop("ffn"), "widths.ffn is missing")]:
        bad = json.loads(json.dumps(raw))
        damage(bad)
        (fs.path / MANIFEST_NAME).write_text(json.dumps(bad))
        with pytest.raises(StcError, match=rf"featureset\.json: .*{field}.*extract again"):
            st.feature_sets("d")
    raw["fingerprint"]["feature_format"] = 99
    (fs.path / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(StcError, match="feature format 99.*upgrade stcstore"):
        st.feature_set("d", "synthetic")
