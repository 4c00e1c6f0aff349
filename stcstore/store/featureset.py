"""A feature set and its manifest (`featureset.json`), typed and validated in this one place.

Every reader of a feature set's manifest goes through `FeatureSetManifest`: it is read once, checked field
by field (an error names the file and the field), and exposes what stcstore reads as typed properties. It
is also a read-only mapping over the JSON as written, so that code written against 0.1/0.2's plain dict
(`fs.manifest["fingerprint"]`) keeps working; stcstore itself uses the properties only
(`tests/test_layout.py` checks that).

Feature sets written by 0.1.0 and 0.2.0 lack some later fields (`config_sha256` in the fingerprint,
`stats_by_label`, `model_parameters`, `request`, `model_files`): their properties give the defaults those
versions meant.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.atomic import write_json_atomic
from ..core.errors import StcError
from ..core.names import KINDS, POOLINGS, FeatureBlock
from ..core.records import BadField, JsonRecord, ModelRecord, field_of

FEATURE_FORMAT_VERSION = 1  # of a feature set's stored values; bump when they would change for the same inputs
MANIFEST_NAME = "featureset.json"


class FeatureSetManifest(JsonRecord):
    """The manifest of one feature set: typed properties over the validated JSON (a read-only mapping)."""

    def __init__(self, raw: Mapping[str, Any], source: str = MANIFEST_NAME) -> None:
        try:
            self._check(raw)
        except BadField as exc:
            raise StcError(f"{source}: {exc}; the feature set's manifest is damaged or was edited by hand "
                           f"(move that feature set's folder away and extract again)") from None
        version = raw["fingerprint"]["feature_format"]
        if version > FEATURE_FORMAT_VERSION:
            raise StcError(f"{source} has feature format {version!r}; this stcstore reads format "
                           f"{FEATURE_FORMAT_VERSION} and older: upgrade stcstore")
        super().__init__(raw)  # a private copy: the manifest does not change under its readers

    @staticmethod
    def _check(raw: Any) -> None:
        if not isinstance(raw, Mapping):
            raise BadField("it is not a JSON object")
        field_of(raw, "id", str)
        field_of(raw, "dataset", str)
        fp = field_of(raw, "fingerprint", dict)
        field_of(fp, "feature_format", int, "fingerprint.")
        field_of(fp, "model", str, "fingerprint.")
        field_of(fp, "max_length", int, "fingerprint.")
        columns = field_of(raw, "columns", list)
        for c in columns:
            if not isinstance(c, str):
                raise BadField(f"columns holds {c!r}, not a block name")
            try:
                block = FeatureBlock.parse(c)
            except ValueError:
                block = None
            if block is None or block.kind not in KINDS or block.pooling not in POOLINGS or block.layer < 0:
                raise BadField(f"columns holds {c!r}, not a block name kind.pooling.layer")
        widths = field_of(raw, "widths", dict)
        for b in {FeatureBlock.parse(c).kind for c in columns}:
            field_of(widths, b, int, "widths.")
        if "chunk_rows" in raw:  # synthetic stores before 0.3 lack it
            field_of(raw, "chunk_rows", int)

    @classmethod
    def read(cls, path: Path) -> "FeatureSetManifest":
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StcError(f"{path} is not valid JSON ({exc}); the feature set's manifest is damaged") from None
        return cls(raw, str(path))

    def write(self, path: Path) -> None:
        write_json_atomic(path, self._raw)

    def updated(self, **fields: Any) -> "FeatureSetManifest":
        """A copy with these top-level fields set (validated again)."""
        return FeatureSetManifest({**self._raw, **fields})

    # ------------------------------------------------------------------ typed fields
    @property
    def id(self) -> str:
        return self._raw["id"]

    @property
    def dataset(self) -> str:
        return self._raw["dataset"]

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The fingerprint as written (a copy: its hash is the feature set's id)."""
        return json.loads(json.dumps(self._raw["fingerprint"]))

    @property
    def model(self) -> ModelRecord:
        return ModelRecord(self._raw["fingerprint"])

    @property
    def columns(self) -> list[str]:
        return list(self._raw["columns"])

    @property
    def blocks(self) -> list[FeatureBlock]:
        return [FeatureBlock.parse(c) for c in self._raw["columns"]]

    @property
    def widths(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._raw["widths"].items()}

    @property
    def chunk_rows(self) -> int | None:
        """Rows per chunk the extract planned (the last chunk of a run may hold fewer)."""
        return self._raw.get("chunk_rows")

    @property
    def max_length(self) -> int:
        return int(self._raw["fingerprint"]["max_length"])

    @property
    def dtype(self) -> str:
        """The stored values' dtype (0.1.0 stored float16 only)."""
        return str(self._raw["fingerprint"].get("dtype", "float16"))

    @property
    def value_dtype(self) -> str:
        """The dtype that holds the stored values exactly as read: the stored dtype, float32 for int8 codes."""
        return "float32" if self.dtype == "int8" else self.dtype

    @property
    def torch_dtype(self) -> str:
        return str(self._raw["fingerprint"].get("torch_dtype", "float32"))

    @property
    def n_layers(self) -> int:
        return int(self._raw["fingerprint"]["n_layers"])

    @property
    def feature_format(self) -> int:
        return int(self._raw["fingerprint"]["feature_format"])

    @property
    def stats_only(self) -> bool:
        """Written by `extract --stats-only`: its chunks hold the rows' ids and the neuron statistics, no values."""
        return bool(self._raw["fingerprint"].get("stats_only", False))

    @property
    def stats_by_label(self) -> bool:
        """Neuron statistics per (split, label); False for a regression target (0.1/0.2: always True)."""
        return bool(self._raw.get("stats_by_label", True))

    @property
    def model_parameters(self) -> dict[str, int] | None:
        """The model's parameter counts, recorded since 0.2 (fit's efficiency tables)."""
        return self._raw.get("model_parameters")

    @property
    def request(self) -> dict[str, Any] | None:
        """The extract options that made this set (a later no-op extract compares them)."""
        return self._raw.get("request")

    @property
    def model_files(self) -> Any:
        """The local model folder's file stamps (a later no-op extract need not load the model)."""
        return self._raw.get("model_files")

    @property
    def stcstore_version(self) -> str | None:
        return self._raw.get("stcstore_version")


@dataclass
class FeatureSet:
    """One feature set: the features of one dataset under one fingerprint."""

    path: Path
    manifest: FeatureSetManifest

    def __post_init__(self) -> None:
        if not isinstance(self.manifest, FeatureSetManifest):
            self.manifest = FeatureSetManifest(self.manifest, str(self.path / MANIFEST_NAME))

    @classmethod
    def read(cls, path: Path) -> "FeatureSet":
        return cls(path, FeatureSetManifest.read(path / MANIFEST_NAME))

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def model(self) -> str:
        return self.manifest.model.name

    @property
    def blocks(self) -> list[FeatureBlock]:
        return self.manifest.blocks

    def width(self, kind: str) -> int:
        return self.manifest.widths[kind]

    def chunks(self) -> list[Path]:
        return sorted(p for p in self.path.glob("chunk-*") if p.is_dir())

    def has(self, kind: str, pooling: str, layer: int) -> bool:
        """Whether the set holds the values of this block (a stats-only set holds none)."""
        return not self.manifest.stats_only and f"{kind}.{pooling}.{layer}" in self.manifest.columns

    def require_values(self) -> None:
        """Refuse to read values from a stats-only feature set, saying what it can do."""
        if self.manifest.stats_only:
            raise StcError(f"feature set {self.id[:12]} of dataset {self.manifest.dataset!r} holds neuron statistics "
                           f"only (`extract --stats-only`): the SQL views neuron_stats and neuron_label_gaps read it, "
                           f"but fit, score and stored-feature reads need values. Run `stcstore extract` without "
                           f"--stats-only for the texts you fit on")
