"""`stcstore sql` and `Store.sql` cannot change the store: every statement kind that can write, read other
files or change the session's settings is refused (exit 1), and every file of the store is unchanged."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from stcstore import Store
from stcstore.core.errors import StcError

from .conftest import cli

FIXTURE = Path(__file__).parent / "fixtures" / "v0_1_0" / "store"


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    st = tmp_path_factory.mktemp("ro") / "store"
    shutil.copytree(FIXTURE, st)
    return st


def _statements(st: Path) -> list[str]:
    batch = st / "ingest" / "dataset=reviews" / "batch=000000" / "texts.parquet"
    return [
        f"COPY (SELECT 1 AS id) TO '{st}/store.json' (FORMAT json)",
        f"COPY (SELECT * FROM texts LIMIT 1) TO '{batch}' (FORMAT parquet)",
        f"COPY texts TO '{st}/injected.csv'",
        f"EXPORT DATABASE '{st}/export'",
        f"ATTACH '{st}/x.duckdb' AS x",
        f"ATTACH '{st}/x.duckdb' AS x (READ_ONLY)",
        "INSTALL httpfs",
        "LOAD httpfs",
        "FORCE INSTALL json",
        "SET enable_external_access = true",
        "RESET enable_external_access",
        "SET lock_configuration = false",
        f"SET temp_directory = '{st}/spill'",
        "SET memory_limit = '100GB'",
        f"SET profiling_output = '{st}/profile.json'",
        "PRAGMA enable_profiling",
        "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')",
        "CREATE PERSISTENT SECRET p (TYPE s3, KEY_ID 'k', SECRET 's')",
        f"SELECT * FROM read_parquet('{batch}')",
        f"SELECT * FROM read_text('{st}/store.json')",
        f"SELECT * FROM '{st}/store.json'",
        "SELECT * FROM read_csv('/etc/passwd')",
    ]


def test_no_statement_can_write_read_files_or_unlock(store):
    before = _snapshot(store)
    refused = 0
    for stmt in _statements(store):
        with pytest.raises(StcError, match="query (failed|refused)"):
            Store(store).sql(stmt)
        r = cli("sql", "--store", store, stmt, "--json")
        assert r.returncode == 1, (stmt, r.stdout, r.stderr)
        refused += 1
    assert refused == len(_statements(store)) >= 20
    assert _snapshot(store) == before  # not one file created, changed or removed


def test_in_memory_work_is_still_allowed_and_vanishes(store):
    before = _snapshot(store)
    df = Store(store).sql("CREATE TABLE t AS SELECT id FROM texts; SELECT count(*) AS n FROM t")
    assert df["n"][0] == 300
    # a large sort spills to the session's private temp directory, not the store
    big = Store(store).sql("SELECT count(*) AS n FROM (SELECT i FROM range(3000000) t(i) ORDER BY random())")
    assert big["n"][0] == 3_000_000
    assert _snapshot(store) == before
