"""A classifier's manifest as stcstore reads it: typed properties over the JSON that `manifest.check_manifest`
validated when the directory was read (`files.read_classifier_dir`), in this one place. It is also a
read-only mapping over that JSON, as 0.1/0.2's plain dict was read (`manifest["head"]["members"]`); call
`to_dict()` for a mutable copy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.records import JsonRecord, ModelRecord
from .manifest import MODEL_CHECK_KEYS, head_type


@dataclass(frozen=True)
class FeatureRef:
    """Where a classifier's features come from and how they are computed: the feature set it was fitted on
    and the extraction settings scoring must repeat."""

    feature_set: str
    dataset: str | None
    max_length: int
    dtype: str
    torch_dtype: str


class ClassifierManifest(JsonRecord):
    """A classifier's manifest: typed properties over the JSON (checked by `check_manifest` when read from
    disk), and a read-only mapping over it, as 0.1/0.2's plain dict was read (`manifest["head"]["members"]`).
    stcstore reads it through the properties only (`tests/test_layout.py`)."""

    @property
    def model(self) -> ModelRecord:
        return ModelRecord(self._raw["model"])

    @property
    def features(self) -> FeatureRef:
        f = self._raw["features"]
        return FeatureRef(f["feature_set"], f.get("dataset"), int(f["max_length"]), f["dtype"], f["torch_dtype"])

    @property
    def head_type(self) -> str:
        return head_type(self._raw)

    @property
    def head(self) -> dict[str, Any] | None:
        """The head's entry (None for a linear classifier)."""
        return self._raw.get("head")

    @property
    def members(self) -> list[dict[str, Any]]:
        """What each aggregate of an ensemble is (kind, pooling, eta, l_temp, groups); [] for other heads."""
        return list(self._raw["head"]["members"]) if self.head_type == "ensemble" else []

    @property
    def hidden_units(self) -> list[int]:
        """A consolidation head's sub-network widths, one per group; [] for other heads."""
        return [int(u) for u in self._raw["head"]["hidden_units"]] if self.head_type == "consolidation" else []

    @property
    def kind(self) -> str:
        return self._raw["kind"]

    @property
    def pooling(self) -> str:
        return self._raw["pooling"]

    @property
    def eta(self) -> float:
        return float(self._raw["eta"])

    @property
    def l_temp(self) -> int:
        return int(self._raw["l_temp"])

    @property
    def blocks_run(self) -> int:
        return int(self._raw.get("blocks_run") or 0)

    @property
    def groups(self) -> list[dict[str, Any]]:
        return list(self._raw["groups"])

    @property
    def classes(self) -> list[str]:
        return list(self._raw["classes"])

    @property
    def task(self) -> str:
        return self._raw.get("task", "classification")  # absent before 0.3: classification

    @property
    def label_names(self) -> dict[str, str]:
        return dict(self._raw.get("label_names", {}))

    @property
    def metrics(self) -> dict[str, Any] | None:
        """The fit's validation and test scores of this classifier and its alternatives (None when not
        written by `stcstore fit`)."""
        m = self._raw.get("metrics")
        return m if isinstance(m, dict) else None

    @property
    def fit(self) -> dict[str, Any] | None:
        f = self._raw.get("fit")
        return f if isinstance(f, dict) else None

    @property
    def fit_id(self) -> str | None:
        return (self.fit or {}).get("fit_id")

    @property
    def fit_config(self) -> dict[str, Any]:
        """The fit's options as recorded ({} when not written by `stcstore fit`)."""
        return dict((self.fit or {}).get("config") or {})

    @property
    def efficiency(self) -> dict[str, Any] | None:
        return self._raw.get("efficiency")

    def identity(self) -> dict[str, Any]:
        """What the classifier computes, besides its arrays (its fingerprint's manifest part)."""
        ident = {k: self._raw.get(k) for k in ("features", "kind", "pooling", "eta", "l_temp", "groups", "classes")}
        if self.task != "classification":
            ident["task"] = self.task
        if self.head_type != "linear":  # linear classifiers keep the fingerprint they always had
            ident["head"] = self._raw["head"]
        ident["model"] = {k: v for k, v in self._raw["model"].items() if k in MODEL_CHECK_KEYS}  # 0.1.0's keys too
        return ident
