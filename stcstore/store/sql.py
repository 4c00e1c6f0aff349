"""DuckDB over a store: the views of sql/views/*.sql and the named queries of sql/queries/*.sql.

The store's files are registered as pyarrow datasets (so an empty store still has every view, with its
columns), and every view is plain SQL read from the package's sql/ directory. User values reach
DuckDB only as bound parameters.

A user's SQL is read-only by construction: only queries and work on the session's in-memory tables run
(ALLOWED_STATEMENTS), so nothing is written to any file, not even into DuckDB's own temp directory
(COPY ... TO current_setting('temp_directory')); spills are bounded by `max_temp_directory_size` and the
temp directories of sessions that died are swept. A statement time limit (`timeout`, the CLI's
`--timeout`) interrupts a runaway query.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from ..core import schemas
from ..core.errors import StcError
from .chunks import chunk_rows

if TYPE_CHECKING:
    from .store import Store
    import polars

_PARAM_RE = re.compile(r"^--\s*param\s+(\w+)\s+(.*?)\s*$", re.M)
TEMP_PREFIX = "stcstore-duckdb-"
# The statement kinds (duckdb StatementType names) a user's SQL may hold: queries (WITH, VALUES, DESCRIBE,
# SHOW, SUMMARIZE parse as SELECT; PIVOT as MULTI) and work on the session's own in-memory tables. Every
# other kind (COPY, EXPORT, ATTACH, LOAD/INSTALL, SET, PRAGMA, CALL, PREPARE/EXECUTE, ...) is refused before
# anything runs.
ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN", "MULTI", "CREATE", "INSERT", "UPDATE", "DELETE", "DROP", "ALTER")


def sweep_dead_sessions(base: str | Path | None = None) -> int:
    """Remove the temp directories of DuckDB sessions whose process no longer runs (the pid is in the name:
    stcstore-duckdb-PID-RAND); those of stcstore 0.2 (no pid) once a day old."""
    from ..core.atomic import pid_alive

    n = 0
    for d in Path(base or tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        parts = d.name[len(TEMP_PREFIX):].split("-", 1)
        try:
            dead = not pid_alive(int(parts[0])) if len(parts) == 2 else time.time() - d.stat().st_mtime > 86400
        except (ValueError, OSError):
            continue
        if dead and d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


def sql_dir() -> Path:
    return Path(str(resources.files("stcstore.sql")))


def named_queries() -> dict[str, Path]:
    return {p.stem: p for p in sorted((sql_dir() / "queries").glob("*.sql"))}


def _hive(root: Path, pattern: str, schema: pa.Schema, keys: list[str]) -> pads.Dataset:
    part_schema = pa.schema([(k, pa.string()) for k in keys])
    full = pa.schema(list(schema) + list(part_schema))
    files = sorted(str(p) for p in root.glob(pattern)) if root.exists() else []
    if not files:
        return pads.dataset(full.empty_table())
    return pads.dataset(files, schema=full, format="parquet", partition_base_dir=str(root),
                        partitioning=pads.partitioning(part_schema, flavor="hive"))




def _feature_sets_table(store: Store) -> pa.Table:
    rows = []
    base = store.root / "features"
    for d in sorted(base.glob("dataset=*")) if base.exists() else []:
        for fs in store.feature_sets(d.name.split("=", 1)[1]):
            m, model = fs.manifest, fs.manifest.model
            chunks = fs.chunks()
            n = sum(chunk_rows(c) for c in chunks)
            rows.append({
                "dataset": m.dataset, "feature_set": fs.id, "model": model.name,
                "model_type": model.model_type, "adapter": model.adapter,
                "weights_sha256": model.weights_sha256, "max_length": m.max_length,
                "dtype": m.dtype, "torch_dtype": m.torch_dtype, "n_layers": model.n_layers,
                "hidden_size": model.hidden_size, "ffn_size": model.ffn_size,
                "n_columns": len(m.columns), "chunks": len(chunks), "rows": n,
                "bytes": sum(p.stat().st_size for c in chunks for p in c.iterdir()),
                "stcstore_version": m.stcstore_version, "stats_only": m.stats_only,
            })
    return pa.Table.from_pylist(rows, schema=schemas.FEATURE_SETS)


class StoreSQL:
    """A read-only DuckDB session over one store: its views and in-memory tables only, no file access, locked
    settings. Spills go to a private temp dir, removed on close."""

    def __init__(self, store: "Store", memory_limit: str | None = None, max_temp: str | None = None) -> None:
        self.store = store
        self.store.require()
        self.store.check_fit_tables()
        sweep_dead_sessions()
        self._tmp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
        self.con = duckdb.connect(config={
            "temp_directory": self._tmp,
            "memory_limit": memory_limit or os.environ.get("STCSTORE_DUCKDB_MEMORY", "4GB"),
            "max_temp_directory_size": max_temp or os.environ.get("STCSTORE_DUCKDB_MAX_TEMP", "20GB"),
            "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        })
        root = self.store.root
        # Registered relations are pinned by the connection; keep references so they outlive this frame.
        self._relations = {
            "_texts": _hive(root / "ingest", "dataset=*/batch=*/texts.parquet", schemas.TEXTS, ["dataset", "batch"]),
            "_rejects": _hive(root / "ingest", "dataset=*/batch=*/rejects.parquet", schemas.REJECTS,
                              ["dataset", "batch"]),
            "_sources": _hive(root / "ingest", "dataset=*/batch=*/source.parquet", schemas.SOURCES,
                              ["dataset", "batch"]),
            "_stats": _hive(root / "features", "dataset=*/fs=*/chunk-*/stats.parquet", schemas.NEURON_STATS,
                            ["dataset", "fs"]),
            "_feature_sets": _feature_sets_table(self.store),
            "_probes": _hive(root / "fits", "dataset=*/fit=*/probes.parquet", schemas.PROBES, ["dataset", "fit"]),
            "_aggregates": _hive(root / "fits", "dataset=*/fit=*/aggregates.parquet", schemas.AGGREGATES,
                                 ["dataset", "fit"]),
            # `stcstore score --output STORE/predictions`
            "_predictions": _hive(root / "predictions", "run_date=*/part-*.parquet", schemas.PREDICTIONS,
                                  ["run_date"]),
        }
        for name, rel in self._relations.items():
            self.con.register(name, rel)
        for view in sorted((sql_dir() / "views").glob("*.sql")):
            self.con.execute(view.read_text())
        # From here on the session reads only what is registered above: no file can be read or written
        # (COPY, EXPORT, ATTACH of a file, read_*), no extension installed or loaded, no persistent secret,
        # and no setting changed back (lock_configuration). Spills still go to the private temp dir.
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "StoreSQL":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def check_read_only(self, sql: str) -> None:
        """Refuse SQL holding any statement that is not a query or in-memory work (COPY, EXPORT, ATTACH, SET,
        INSTALL, ...): nothing of it runs."""
        try:
            statements = self.con.extract_statements(sql)
        except duckdb.Error as exc:
            raise StcError(f"query failed: {exc}") from exc
        for i, st in enumerate(statements, 1):
            kind = st.type.name
            if kind not in ALLOWED_STATEMENTS:
                raise StcError(f"query refused: statement {i} is a {kind} statement; `stcstore sql` runs queries "
                               f"(SELECT, WITH, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE) and in-memory tables only, "
                               f"never a file write or a setting. To save a result, use --json or the Python API "
                               f"(Store.sql gives a polars DataFrame)")

    def _timed(self, timeout: float | None, work: Callable[[], Any]) -> Any:
        """Run `work` (DuckDB calls on this connection), interrupted after `timeout` seconds."""
        timer = threading.Timer(timeout, self.con.interrupt) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            return work()
        except duckdb.InterruptException:
            raise StcError(f"query stopped after the time limit of {timeout:g} s (--timeout); narrow it (a LIMIT, a "
                           f"WHERE on dataset, layer or split) or raise --timeout (0: no limit)") from None
        except duckdb.Error as exc:
            raise StcError(f"query failed: {exc}") from exc
        finally:
            if timer is not None:
                timer.cancel()

    def frame(self, sql: str, params: dict[str, Any] | None = None, timeout: float | None = None
              ) -> "polars.DataFrame":
        """The query's result as a polars DataFrame (through a DuckDB relation: `.pl()`)."""
        import polars as pl

        self.check_read_only(sql)

        def work() -> "polars.DataFrame":
            rel = self.con.sql(sql, params=params or None)
            return pl.DataFrame() if rel is None else rel.pl()

        return self._timed(timeout, work)

    def run(self, sql: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> "QueryResult":
        """Run read-only SQL (check_read_only) and fetch its rows, within `timeout` seconds (None: no limit)."""
        t0 = time.perf_counter()
        self.check_read_only(sql)

        def work() -> tuple[list[str], list[dict[str, Any]]]:
            cur = self.con.execute(sql, params or None)
            if cur.description is None:
                return [], []
            names = [d[0] for d in cur.description]
            return names, [dict(zip(names, r)) for r in cur.fetchall()]

        names, rows = self._timed(timeout, work)
        return QueryResult(names, rows, time.perf_counter() - t0)


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "row_count": len(self.rows),
                "seconds": round(self.seconds, 4)}

    def to_text(self, max_rows: int = 100) -> str:
        if not self.columns:
            return "(no result)"
        shown = self.rows[:max_rows]
        cells = [[_fmt(r[c]) for c in self.columns] for r in shown]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        more = f" (showing {max_rows})" if len(self.rows) > max_rows else ""
        lines.append(f"{len(self.rows)} rows{more}, {self.seconds * 1000:.0f} ms")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    s = "NULL" if v is None else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def query_list() -> dict[str, str]:
    """{named query: its first comment line}, for `stcstore sql --list`."""
    return {n: p.read_text().splitlines()[0].lstrip("- ") for n, p in named_queries().items()}


def param_pairs(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--param NAME=VALUE` values -> {NAME: VALUE}."""
    bound = {}
    for p in pairs:
        if "=" not in p:
            raise StcError(f"--param {p!r}: expected NAME=VALUE")
        k, v = p.split("=", 1)
        bound[k] = v
    return bound


def parse_param(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def named_query(name: str, given: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """SQL text and bound parameters of a named query; defaults come from its `-- param NAME DEFAULT` lines."""
    queries = named_queries()
    if name not in queries:
        raise StcError(f"no named query {name!r}; available: {', '.join(queries)}")
    sql = queries[name].read_text()
    declared = dict(_PARAM_RE.findall(sql))
    unknown = set(given) - set(declared)
    if unknown:
        raise StcError(f"query {name!r} has no parameter {sorted(unknown)[0]!r}; its parameters: "
                       f"{', '.join(declared) or 'none'}")
    params = {k: parse_param(given.get(k, v)) for k, v in declared.items()}
    return sql, params
