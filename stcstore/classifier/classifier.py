"""A fitted STC classifier: scikit-learn style scoring of texts or stored features, with early exit.

Saved as plain data (files.py): `manifest.json` + `.npy` arrays, never a pickle.

Directory layout (names are API)::

    CLASSIFIER/manifest.json    format, model fingerprint, feature groups (kind, pooling, layer, neuron
                                indices), classes, L_temp, η, metrics, fit options, array checksums
    CLASSIFIER/coef.npy         [K, n_features] float64 (K = 1 for two classes)
    CLASSIFIER/intercept.npy    [K] float64
    CLASSIFIER/mean.npy         [n_features] float64, train mean of each selected neuron
    CLASSIFIER/scale.npy        [n_features] float64, train standard deviation (1 for constant neurons)

A consolidation head (`fit --aggregator consolidation`, format 2, "head" in the manifest) keeps, instead
of coef/intercept alone, the arrays of heads.ConsolidationHead: sub_weight, sub_bias, hidden_mean,
hidden_scale, coef1, intercept1, coef [K, units], intercept [K].

Arrays are read with `numpy.load(allow_pickle=False)` and checked against the manifest's SHA-256, so
loading can never run code and a damaged file is refused. The feature vector is the concatenation of
the groups' neurons, in manifest order.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from ..core.version import __version__
from ..core.errors import FingerprintMismatchError, StcError
from ..core.fingerprint import fingerprint, sha256_hex
from ..core.names import FeatureBlock, blocks_to_run
from .files import read_classifier_dir, save_classifier
from .heads import ConsolidationHead, EnsembleHead, member_bounds
from .linear import decision, predict_index, probabilities
from .manifest import CLASSIFIER_FORMAT, MODEL_RECORD_KEYS, array_names, check_arrays
from .record import ClassifierManifest

if TYPE_CHECKING:
    from ..features.compute import FeatureComputer
    from ..models.loading import LoadedModel
    from ..store.store import FeatureSet, Store

@dataclass
class FeatureGroup:
    """Selected neurons of one (kind, pooling, layer) block, most important first."""

    kind: str
    pooling: str
    layer: int
    neurons: list[int]

    @property
    def block(self) -> FeatureBlock:
        return FeatureBlock(self.kind, self.pooling, self.layer)


def groups_blocks_run(groups: Iterable[FeatureGroup]) -> int:
    """Transformer blocks a forward pass runs to compute these groups (`blocks_to_run`)."""
    groups = list(groups)
    return blocks_to_run([g.layer for g in groups if g.kind == "hidden"], [g.layer for g in groups if g.kind == "ffn"])


class Classifier:
    """Scikit-learn style classifier on texts (or on stored features) with early exit at L_temp.

    classes_: [n_classes] label strings; coef_: [K, n_features]; intercept_: [K]."""

    def __init__(self, manifest: "ClassifierManifest | dict[str, Any]", arrays: dict[str, np.ndarray]) -> None:
        self.manifest = manifest = ClassifierManifest(manifest)
        self.groups = [FeatureGroup(g["kind"], g["pooling"], int(g["layer"]), [int(i) for i in g["neurons"]])
                       for g in manifest.groups]
        self.classes_ = np.asarray(manifest.classes, dtype=object)  # empty for a regression target
        self.label_names_: dict[str, str] = manifest.label_names  # display names (ingest --label-names)
        self.task = manifest.task
        self.arrays = {n: arrays[n] for n in array_names(manifest)}
        self.coef_ = arrays["coef"]  # a consolidation head: its output layer
        self.intercept_ = arrays["intercept"]
        self.mean_ = arrays["mean"]
        self.scale_ = arrays["scale"]
        check_arrays(manifest, arrays)  # shapes against groups, classes and head, finite values, positive scales
        self.head = manifest.head_type
        self._consolidation = ConsolidationHead(manifest.hidden_units,
                                                [len(g.neurons) for g in self.groups], self.arrays) \
            if self.head == "consolidation" else None
        self._ensemble = EnsembleHead(
            member_bounds([len(g.neurons) for g in self.groups], [int(mm["groups"]) for mm in manifest.members]),
            self.coef_, self.intercept_, self.task == "regression") if self.head == "ensemble" else None
        self._lm: LoadedModel | None = None
        self._computer: FeatureComputer | None = None
        self.path: Path | None = None
        self.device = "cpu"  # where a model this classifier loads itself goes

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fit(cls, *, fs: "FeatureSet", groups: list[FeatureGroup], classes: list[str], coef: np.ndarray,
                 intercept: np.ndarray, mean: np.ndarray, scale: np.ndarray, kind: str, pooling: str, eta: float,
                 l_temp: int, metrics: dict[str, Any], fit: dict[str, Any], task: str = "classification",
                 head: dict[str, Any] | None = None, head_arrays: dict[str, np.ndarray] | None = None,
                 label_names: dict[str, str] | None = None, efficiency: dict[str, Any] | None = None
                 ) -> "Classifier":
        """`head` / `head_arrays`: a consolidation head's manifest entry and arrays (coef and intercept are
        then its output layer); without them, the linear head. `label_names` and `efficiency` are recorded for
        display (not part of the classifier's fingerprint)."""
        fm = fs.manifest
        model = fm.model
        raw = {
            "format": CLASSIFIER_FORMAT, "version": 1 if head is None else (3 if head.get("type") == "ensemble" else 2), "stcstore_version": __version__,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {k: model[k] for k in MODEL_RECORD_KEYS if k in model},
            "features": {"feature_set": fs.id, "dataset": fm.dataset,
                         "max_length": fm.max_length, "dtype": fm.dtype, "torch_dtype": fm.torch_dtype,
                         "feature_format": fm.feature_format},
            "kind": kind, "pooling": pooling, "eta": eta, "l_temp": l_temp,
            "blocks_run": groups_blocks_run(groups),
            "groups": [asdict(g) for g in groups], "classes": list(classes),
            "metrics": metrics, "fit": fit,
        }
        if task != "classification":  # written only when it differs: classification manifests stay as before
            raw["task"] = task
        if head is not None:
            raw["head"] = head
        if label_names:
            raw["label_names"] = label_names
        if efficiency is not None:
            raw["efficiency"] = efficiency
        arrays = {"coef": coef, "intercept": intercept, "mean": mean, "scale": scale, **(head_arrays or {})}
        return cls(raw, {n: np.asarray(a, dtype=np.float64) for n, a in arrays.items()})

    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write the directory atomically (temp directory + rename). An existing non-empty directory is
        replaced only with force=True."""
        self.manifest = ClassifierManifest(save_classifier(self.manifest.to_dict(), self.arrays, Path(path), force))
        self.path = Path(path)
        return self.path

    # ------------------------------------------------------------------ model
    @property
    def blocks(self) -> list[FeatureBlock]:
        return [g.block for g in self.groups]

    @property
    def l_temp(self) -> int:
        return self.manifest.l_temp

    def check_model(self, lm: "LoadedModel") -> None:
        """Refuse a model that computes something else than the one the classifier was fitted on. (A key the
        classifier did not record, `config_sha256` in one written by 0.1.0, cannot be compared.)"""
        want = self.manifest.model
        have = lm.fingerprint_fields()
        diff = want.identity_differences(have)
        if diff:
            rows = "\n".join(f"  {k}: classifier {str(want.get(k))[:20]}  model {str(have.get(k))[:20]}" for k in diff)
            raise FingerprintMismatchError(
                f"classifier {self.path or ''} was fitted on model {want.name!r} but the model given "
                f"({have.get('model')!r}) differs in {', '.join(diff)}:\n{rows}\n"
                f"Score with the model the classifier was fitted on, or fit a new classifier for this model.")

    def attach(self, lm: "LoadedModel") -> "Classifier":
        """Use this (already loaded) model for text scoring, after checking its fingerprint."""
        self.check_model(lm)
        self._lm, self._computer = lm, None
        return self

    def load_model(self, name: str | None = None, device: str = "cpu", gguf_file: str | None = None
                   ) -> "LoadedModel":
        """Load the model this classifier was fitted on: `name` (a path or hub name), else the directory it
        was loaded from when that still exists, else its recorded name. Not checked: see `attach`."""
        from ..core.console import eprint
        from ..models.loading import load_model

        want = self.manifest.model
        source = want.source
        name = name or (source if source and Path(source).exists() else want.name)
        eprint(f"loading model {name} ...")
        return load_model(name, torch_dtype=self.manifest.features.torch_dtype, device=device,
                          gguf_file=gguf_file)

    def model(self) -> "LoadedModel":
        """The attached model; the fitted one is loaded (and checked) on first use."""
        if self._lm is None:
            self.attach(self.load_model(device=self.device))
        return self._lm  # type: ignore[return-value]

    @property
    def fingerprint(self) -> str:
        """What the classifier computes: model identity, feature settings, neurons, classes and the exact
        array contents (not its path, creation time or metrics). Predictions are keyed by it."""
        ident = self.manifest.identity()
        ident["arrays"] = {n: sha256_hex(np.ascontiguousarray(a).tobytes()) for n, a in self.arrays.items()}
        return fingerprint(ident)

    @property
    def name(self) -> str:
        """The directory name, or the manifest's dataset for an unsaved classifier."""
        return self.path.name if self.path is not None else str(self.manifest.features.dataset)

    def neuron_columns(self) -> dict[tuple[str, int], list[int]]:
        """{(kind, layer): sorted neuron indices this classifier reads} (union over its poolings)."""
        return neuron_columns([self])

    def positions(self, columns: dict[tuple[str, int], list[int]]) -> list[tuple[FeatureGroup, np.ndarray]]:
        """Where each group's neurons sit among `columns` (a superset of `neuron_columns()`)."""
        out = []
        for g in self.groups:
            where = {n: i for i, n in enumerate(columns[(g.kind, g.layer)])}
            out.append((g, np.asarray([where[n] for n in g.neurons], dtype=np.int64)))
        return out

    def computer(self) -> "FeatureComputer":
        """The feature path for this classifier alone: its blocks, pooling only its neurons."""
        from ..features.compute import FeatureComputer

        if self._computer is None:
            f = self.manifest.features
            lm = self.model()
            device = str(next(lm.model.parameters()).device)  # wherever the attached model lives
            self._computer = FeatureComputer(lm, self.blocks, f.max_length, f.dtype, device=device,
                                             columns=self.neuron_columns())
        return self._computer

    # ------------------------------------------------------------------ scoring
    def features_from_blocks(self, blocks: dict[FeatureBlock, np.ndarray],
                             columns: dict[tuple[str, int], list[int]] | None = None) -> np.ndarray:
        """{block: [n, width]} -> the classifier's feature matrix [n, n_features] float32. Without `columns`
        the blocks are full width; with them, block (kind, ., layer) holds the neurons columns[(kind, layer)]."""
        if columns is None:
            return np.concatenate([np.asarray(blocks[g.block], dtype=np.float32)[:, g.neurons] for g in self.groups],
                                  axis=1)
        return np.concatenate([np.asarray(blocks[g.block], dtype=np.float32)[:, pos]
                               for g, pos in self.positions(columns)], axis=1)

    def token_features(self, tokens: dict[tuple[str, int], np.ndarray],
                       columns: dict[tuple[str, int], list[int]]) -> np.ndarray:
        """One text's per-token values {(kind, layer): [T, len(columns)]} -> [T, n_features]: each token's
        own neuron values in place of the pooled ones (paper section 5.3, token-level classification)."""
        return np.concatenate([tokens[(g.kind, g.layer)][:, pos] for g, pos in self.positions(columns)], axis=1)

    def decision_function_features(self, X: np.ndarray) -> np.ndarray:
        """X: [n, n_features] raw (stored-dtype) feature values -> scores as scikit-learn gives them: [n] for
        two classes (the second class's log-odds) and a regression target (the value), [n, K] for K classes."""
        scores = self.scores_features(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def scores_features(self, X: np.ndarray) -> np.ndarray:
        """X: [n, n_features] raw (stored-dtype) feature values -> scores [n, K] (linear, or the head's; K = 1
        for two classes and a regression target), what every stcstore stage scores with."""
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite score is refused below
            Z = (np.asarray(X, dtype=np.float32) - self.mean_.astype(np.float32)) / self.scale_.astype(np.float32)
        if self._consolidation is not None:
            scores = self._consolidation.decision(Z)
        elif self._ensemble is not None:
            scores = self._ensemble.decision(Z)
        else:
            scores = decision(Z, self.coef_, self.intercept_)
        bad = ~np.isfinite(scores).all(axis=1)
        if bad.any():  # never written as a prediction
            rows = np.flatnonzero(bad)
            raise StcError(f"classifier {self.path or self.name} gave a score that is not finite for {len(rows)} of "
                           f"{len(scores)} rows (the first: row {int(rows[0])} of the batch, whose features range "
                           f"{_span(X[rows[0]])}); its arrays cannot score these features")
        return scores

    @property
    def n_features(self) -> int:
        return int(self.mean_.shape[0])

    def column_importance(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(importance [n_features], weights [K, n_features] or None) of each column: the linear weights'
        squared norm (and the weights; an ensemble's members' weights, each in its own columns), or for a
        consolidation head the squared L2 norm of each kept
        neuron's frozen first-layer weights (no per-class direction: the head is not linear)."""
        if self._consolidation is not None:
            return self._consolidation.input_importance() ** 2, None
        return (self.coef_ ** 2).sum(axis=0), self.coef_

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    def _no_proba(self) -> None:
        if self.is_regression:
            raise StcError(f"{self.name} predicts values (a regression target): it has no class probabilities; "
                           f"use predict")

    def predict_proba_features(self, X: np.ndarray) -> np.ndarray:
        self._no_proba()
        return probabilities(self.scores_features(X))

    def predict_features(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels (regression: values) of standardised-or-not feature rows, as `predict`."""
        return self._predicted(self.scores_features(X))

    def _predicted(self, scores: np.ndarray) -> np.ndarray:
        return scores[:, 0] if self.is_regression else self.classes_[predict_index(scores)]

    def features(self, texts: Iterable[str]) -> np.ndarray:
        """Texts -> [n, n_features]; the model runs only through block L_temp, pooling only these neurons."""
        return self.features_from_blocks(self.computer().run(list(texts)).blocks, self.neuron_columns())

    def decision_function(self, texts: Iterable[str]) -> np.ndarray:
        """Scores as scikit-learn gives them: [n] for two classes and a regression target, [n, K] for K classes."""
        return self.decision_function_features(self.features(texts))

    def predict_proba(self, texts: Iterable[str]) -> np.ndarray:
        """[n, n_classes] probabilities in `classes_` order (not for a regression target)."""
        self._no_proba()
        return probabilities(self.scores_features(self.features(texts)))

    def predict(self, texts: Iterable[str]) -> np.ndarray:
        """Predicted labels; for a regression target, predicted values (float64)."""
        return self._predicted(self.scores_features(self.features(texts)))

    def store_features(self, store: "Store", dataset: str, split: str | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(ids [n], X [n, n_features]) of texts already in a store, from the stored features."""
        from ..store.store import neuron_picks

        fs = store.feature_set(dataset, self.manifest.features.feature_set)
        picks = neuron_picks(fs, [(g.kind, g.pooling, g.layer, g.neurons) for g in self.groups])
        ids, X, _ = store.gather_split(fs, picks, split)
        return ids, X

    def __repr__(self) -> str:
        m = self.manifest
        head = "" if self.head == "linear" else f"{self.head} head, "
        return (f"Classifier({m.model.name}, {m.kind}.{m.pooling}, η {m.eta:g}, "
                f"L_temp {m.l_temp}, {self.n_features} neurons, {head}"
                + ("regression)" if self.is_regression else f"classes {list(self.classes_)})"))


def _span(x: np.ndarray) -> str:
    x = np.asarray(x, dtype=np.float64)
    return f"{x.min():.3g} .. {x.max():.3g}" if x.size else "(none)"


def neuron_columns(classifiers: Iterable[Classifier]) -> dict[tuple[str, int], list[int]]:
    """{(kind, layer): sorted neuron indices} any of the classifiers reads: what one shared pass pools."""
    cols: dict[tuple[str, int], set[int]] = {}
    for c in classifiers:
        for g in c.groups:
            cols.setdefault((g.kind, g.layer), set()).update(g.neurons)
    return {k: sorted(v) for k, v in sorted(cols.items())}


def load_classifier(path: str | Path, model: "str | LoadedModel | None" = None,
                    gguf_file: str | None = None, device: str = "cpu") -> Classifier:
    """Load a classifier directory (plain data, checked: `files.read_classifier_dir`). `model`: a LoadedModel
    or a model name/path to score texts with; it is checked against the classifier's model fingerprint now.
    Without it, the fitted model is loaded (and checked) on the first text prediction, on `device`; scoring
    stored features never loads a model."""
    manifest, arrays = read_classifier_dir(path)
    try:
        clf = Classifier(manifest, arrays)  # checks the arrays against the manifest
    except StcError as exc:
        raise StcError(f"classifier {Path(path)} refused: {exc}") from None
    clf.path = Path(path)
    clf.device = device
    if model is not None:
        clf.attach(clf.load_model(model, device=device, gguf_file=gguf_file) if isinstance(model, str) else model)
    return clf
