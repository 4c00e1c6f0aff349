"""Typed views of the JSON records stcstore writes (a feature set's and a classifier's manifest, the model
fields they record), and the one field check their validation uses.

A record is a read-only mapping over its JSON (as 0.1/0.2's plain dicts were read) with typed properties
that stcstore reads instead (`tests/test_layout.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from .names import IDENTITY_KEYS, LEGACY_OPTIONAL, LOCATION_KEYS


class JsonRecord(Mapping):
    """A read-only mapping over a private copy of plain JSON values; `to_dict()` gives a mutable copy."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = json.loads(json.dumps(raw))

    def __getitem__(self, key: str) -> Any:
        return self._raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._raw))


class BadField(Exception):
    """A record's field is missing or of the wrong type (the caller says which file)."""


def field_of(d: Any, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    """d[key], which must exist and be of `kind` (a bool is not an int); `where` prefixes the field's path."""
    if not isinstance(d, dict) or key not in d:
        raise BadField(f"{where}{key} is missing")
    v = d[key]
    if isinstance(v, bool) and kind is not bool or not isinstance(v, kind):
        raise BadField(f"{where}{key} is {type(v).__name__} {str(v)[:40]!r}, not {getattr(kind, '__name__', kind)}")
    return v


class ModelRecord(JsonRecord):
    """The model fields recorded with features or a classifier: where the model came from (`LOCATION_KEYS`:
    recorded only) and what it computes (`IDENTITY_KEYS`: its identity)."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self._raw = dict(fields)  # a view of a manifest's own private copy: no second deep copy

    @property
    def name(self) -> str:
        """The model as the user named it (the hub id for the packaged default)."""
        return str(self._raw.get("model"))

    @property
    def source(self) -> str | None:
        """The local folder it was loaded from, where recorded."""
        return self._raw.get("model_source")

    @property
    def model_type(self) -> str | None:
        return self._raw.get("model_type")

    @property
    def adapter(self) -> str | None:
        """The adapter family (models.adapters): bert, llama, gpt2, ..."""
        return self._raw.get("adapter")

    @property
    def weights_sha256(self) -> str | None:
        return self._raw.get("weights_sha256")

    @property
    def n_layers(self) -> int | None:
        return self._raw.get("n_layers")

    @property
    def hidden_size(self) -> int | None:
        return self._raw.get("hidden_size")

    @property
    def ffn_size(self) -> int | None:
        return self._raw.get("ffn_size")

    def identity(self) -> dict[str, Any]:
        return {k: self._raw.get(k) for k in IDENTITY_KEYS}

    def location(self) -> dict[str, Any]:
        return {k: self._raw[k] for k in LOCATION_KEYS if k in self._raw}

    def identity_differences(self, other: Mapping[str, Any]) -> list[str]:
        """The identity keys whose values differ from `other`'s (a key this record lacks, as 0.1.0's lack
        config_sha256, is not compared)."""
        return [k for k in IDENTITY_KEYS if k in self._raw and self._raw.get(k) != other.get(k)]

    def same_values(self, other: Mapping[str, Any]) -> bool:
        """Both define the same stored values: equal on every key but the location ones (a key of
        `LEGACY_OPTIONAL` this record lacks is not compared), and this record holds every other identity key."""
        keys = (set(self._raw) | set(other)) - set(LOCATION_KEYS) - {k for k in LEGACY_OPTIONAL if k not in self._raw}
        return all(self._raw.get(k) == other.get(k) for k in keys) and all(
            k in self._raw for k in IDENTITY_KEYS if k not in LEGACY_OPTIONAL)
