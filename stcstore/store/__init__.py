"""The store on disk and how it is read: layout and Python read API (store.py), feature chunks (chunks.py),
and the read-only DuckDB session behind `stcstore sql`, `Store.sql` and `Store.table` (sql.py)."""

from .store import TABLES, FeatureSet, Store, neuron_picks

__all__ = ["TABLES", "FeatureSet", "Store", "neuron_picks"]
