"""Classifiers grouped by model: each group shares one forward pass through the feature path, stopping
after the deepest block any member needs and pooling only the union of their neurons."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..classifier.classifier import Classifier, load_classifier, neuron_columns
from ..core.console import eprint
from ..core.errors import StcError
from ..core.names import BATCH_SIZE, IDENTITY_KEYS, MAX_TOKENS
from ..features.compute import FeatureComputer, Features
from ..models.loading import LoadedModel


class GroupScorer:
    """Classifiers that share one model: one forward pass, then each classifier's linear layer."""

    def __init__(self, lm: LoadedModel, classifiers: list[Classifier], batch_size: int = BATCH_SIZE,
                 max_tokens: int = MAX_TOKENS, device: str = "cpu", keep_tokens: bool = False) -> None:
        self.lm, self.classifiers = lm, classifiers
        features = {(c.manifest.features.max_length, c.manifest.features.dtype) for c in classifiers}
        if len(features) != 1:
            raise StcError("classifiers in one forward pass must share max_length and stored dtype")
        max_length, dtype = features.pop()
        for c in classifiers:
            c.attach(lm)
        self.columns = neuron_columns(classifiers)
        blocks = {b for c in classifiers for b in c.blocks}
        self.computer = FeatureComputer(lm, blocks, max_length, dtype, batch_size=batch_size, max_tokens=max_tokens,
                                        device=device, columns=self.columns, keep_tokens=keep_tokens)

    @property
    def n_neurons(self) -> int:
        return sum(len(v) for v in self.columns.values())

    def run(self, texts: list[str]) -> tuple[list[np.ndarray], Features]:
        """texts -> ([n, K] linear scores per classifier (K = 1 for two classes), the Features (with token
        values if kept))."""
        feats = self.computer.run(texts)
        scores = [c.scores_features(c.features_from_blocks(feats.blocks, self.columns))
                  for c in self.classifiers]
        return scores, feats

    def token_scores(self, c: Classifier, tokens: dict[tuple[str, int], np.ndarray]) -> np.ndarray:
        """One text's per-token linear scores [T, K] under classifier c (K = 1 for two classes). For a
        mean-pooled classifier their mean over tokens is the text's score, up to float16 storage rounding."""
        return c.scores_features(c.token_features(tokens, self.columns))


def pass_key(c: Classifier) -> dict[str, Any]:
    """Classifiers with equal keys can share a forward pass: same model identity, max length and dtypes."""
    m, f = c.manifest.model, c.manifest.features
    return {**{k: m[k] for k in IDENTITY_KEYS if k in m}, "max_length": f.max_length, "dtype": f.dtype,
            "torch_dtype": f.torch_dtype}


def load_classifiers(paths: tuple[str, ...]) -> list[Classifier]:
    """Load every --classifier; two of one name are refused (predictions are labelled by directory name)."""
    clfs = [load_classifier(p) for p in paths]
    names: dict[str, Classifier] = {}
    for c in clfs:
        other = names.get(c.name)
        if other is not None:
            same = other.fingerprint == c.fingerprint
            raise StcError(f"two classifiers named {c.name!r} ({other.path}, {c.path})"
                           + (": the same classifier twice" if same else "; predictions are labelled by "
                              "directory name, so rename one of the directories"))
        names[c.name] = c
    return clfs


@dataclass
class Group:
    """Classifiers sharing one pass (indices into the run's classifiers); the model loads on first need."""

    members: list[int]
    scorer: GroupScorer | None = None
    info: dict[str, Any] = field(default_factory=dict)


def make_groups(clfs: list[Classifier]) -> list[Group]:
    by_key: dict[str, list[int]] = {}
    for k, c in enumerate(clfs):
        by_key.setdefault(repr(sorted(pass_key(c).items())), []).append(k)
    return [Group(members) for members in by_key.values()]


class Models:
    """Models for the groups of one run: given ones ({recorded model name: LoadedModel}), or loaded once per
    (weights, compute dtype) even when several groups (other max_length or stored dtype) use them."""

    def __init__(self, given: dict[str, LoadedModel], model: str | None, device: str, gguf_file: str | None) -> None:
        self.given, self.model, self.device, self.gguf_file = given, model, device, gguf_file
        self.loaded: dict[tuple[str, str], LoadedModel] = {}
        self.seconds = 0.0  # loading models and setting up hooks (not counted as scoring time)

    def scorer(self, g: Group, clfs: list[Classifier], batch_size: int, max_tokens: int,
               keep_tokens: bool) -> GroupScorer:
        if g.scorer is not None:
            return g.scorer
        t0 = time.perf_counter()
        first = clfs[g.members[0]]
        lm = self.given.get(first.manifest.model.name)
        if lm is None:
            key = (str(first.manifest.model.weights_sha256), first.manifest.features.torch_dtype)
            if key not in self.loaded:
                self.loaded[key] = first.load_model(self.model, self.device, self.gguf_file)
            lm = self.loaded[key]
        g.scorer = GroupScorer(lm, [clfs[k] for k in g.members], batch_size, max_tokens, self.device,
                               keep_tokens=keep_tokens)
        g.info = {"model": first.manifest.model.name,
                  "classifiers": [c.name for c in g.scorer.classifiers],
                  "blocks_run": g.scorer.computer.n_blocks_run, "n_layers": lm.adapter.n_layers,
                  "neurons": g.scorer.n_neurons, "texts": 0}
        eprint(f"scoring with {', '.join(g.info['classifiers'])}: blocks 0..{g.info['blocks_run'] - 1} of "
               f"{g.info['n_layers']}, {g.info['neurons']} neurons pooled")
        self.seconds += time.perf_counter() - t0
        return g.scorer
