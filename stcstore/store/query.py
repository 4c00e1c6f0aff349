"""`stcstore sql`: one query (text, a file or a named query) against a store, read-only (`sql.StoreSQL`)."""

from __future__ import annotations

import re
from pathlib import Path

from ..core.errors import StcError
from .sql import QueryResult, StoreSQL, named_query, parse_param
from .store import Store


def run_query(store: str | Path, sql: str | None = None, file: str | None = None, name: str | None = None,
              params: dict[str, str] | None = None, timeout: float | None = None) -> QueryResult:
    """Run exactly one of: SQL text, a .sql file, or a named query, against a store (read-only), stopped
    after `timeout` seconds (None or 0: no limit)."""
    if sum(x is not None for x in (sql, file, name)) != 1:
        raise StcError("give exactly one of QUERY, --file F or --query NAME")
    bound = {k: parse_param(v) for k, v in (params or {}).items()}
    if name is not None:
        sql, bound = named_query(name, params or {})
    elif file is not None:
        try:
            sql = Path(file).read_text()
        except OSError as exc:
            raise StcError(f"cannot read --file {file}: {exc}") from exc
    if timeout is not None and timeout < 0:
        raise StcError(f"--timeout {timeout:g}: give seconds (0: no limit)")
    st = Store(store)
    if isinstance(bound.get("dataset"), str) and (st.root / "store.json").exists():
        _check_dataset(st, bound["dataset"])
    with StoreSQL(st) as db:
        return db.run(sql or "", bound, timeout=timeout or None)



def _check_dataset(store: Store, value: str) -> None:
    """A `dataset` parameter that matches no dataset of the store, as the queries' `LIKE` does (`%` any text,
    `_` any character), is a mistyped name: refused, naming the datasets there are."""
    pattern = re.compile("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in value), re.S)
    have = set(store.datasets()) | {p.name.split("=", 1)[1] for p in (store.root / "features").glob("dataset=*")}
    if not any(pattern.fullmatch(d) for d in have):
        store.require_dataset(value)
