"""Classifier directories are plain data, validated whole before any use: every tampered or malformed
variant is refused with a reason (exit 1), none runs code, none yields NaN probabilities."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stcstore import load_classifier
from stcstore.core.errors import StcError
from stcstore.core.fingerprint import file_sha256

from .conftest import cli

FIXTURE = Path(__file__).parent / "fixtures" / "v0_1_0" / "classifier"


def _write(d: Path, manifest, arrays: dict[str, object] | None = None) -> Path:
    """Write a classifier directory; arrays given here replace the fixture's and get matching checksums
    (a deliberate tamper, not a damaged file)."""
    shutil.copytree(FIXTURE, d)
    for name, arr in (arrays or {}).items():
        path = d / f"{name}.npy"
        if isinstance(arr, bytes):
            path.write_bytes(arr)
        elif isinstance(arr, dict):
            with open(path, "wb") as f:
                np.savez(f, **arr)
        else:
            np.save(path, arr, allow_pickle=True)
        if isinstance(manifest, dict):
            manifest["arrays"][name]["sha256"] = file_sha256(path)
    (d / "manifest.json").write_bytes(manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode())
    return d


def _m() -> dict:
    return json.loads((FIXTURE / "manifest.json").read_text())


def _variants():
    coef = np.load(FIXTURE / "coef.npy")
    v = {}
    v["binary manifest"] = (b"\x00\xff\xfe garbage", None)
    v["non-object manifest"] = (b"[1, 2, 3]", None)
    for key in ("groups", "classes", "model", "features", "arrays", "eta"):
        m = _m()
        del m[key]
        v[f"missing {key}"] = (m, None)
    for version in ("1", 1.5, 99, None, True, 0):
        m = _m()
        m["version"] = version
        v[f"version {version!r}"] = (m, None)
    for field, value in [("neurons", [99999]), ("neurons", [-1]), ("neurons", []), ("neurons", [1, 1]),
                         ("neurons", ["3"]), ("layer", -1), ("layer", 3), ("layer", "1"), ("kind", "attn"),
                         ("pooling", "sum")]:
        m = _m()
        m["groups"][0][field] = value
        v[f"group {field}={value!r}"] = (m, None)
    m = _m()
    m["classes"] = ["only"]
    v["single class"] = (m, None)
    m = _m()
    m["classes"] = ["a", "a"]
    v["duplicate classes"] = (m, None)
    m = _m()
    m["blocks_run"] = 0
    v["blocks_run inconsistent"] = (m, None)
    m = _m()
    m["arrays"]["coef"]["file"] = "../coef.npy"
    v["array path outside the directory"] = (m, None)
    m = _m()
    m["model"]["n_layers"] = "three"
    v["non-numeric n_layers"] = (m, None)
    v["npz in place of npy"] = (_m(), {"coef": {"coef": coef}})
    v["object array (pickle)"] = (_m(), {"coef": np.array([{"__reduce__": 1}], dtype=object)})
    v["NaN weight"] = (_m(), {"coef": np.where(np.arange(coef.size).reshape(coef.shape) == 0, np.nan, coef)})
    v["infinite weight"] = (_m(), {"coef": np.full_like(coef, np.inf)})
    v["zero scale"] = (_m(), {"scale": np.zeros_like(np.load(FIXTURE / "scale.npy"))})
    v["float32 array"] = (_m(), {"mean": np.load(FIXTURE / "mean.npy").astype(np.float32)})
    v["wrong shape"] = (_m(), {"intercept": np.zeros(5)})
    v["truncated npy"] = (_m(), {"coef": (FIXTURE / "coef.npy").read_bytes()[:60]})
    return v


VARIANTS = _variants()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_tampered_classifier_is_refused_with_a_reason(tmp_path, name):
    manifest, arrays = VARIANTS[name]
    d = _write(tmp_path / "clf", copy.deepcopy(manifest), arrays)
    with pytest.raises(StcError) as exc:
        load_classifier(d)
    assert str(d) in str(exc.value)
    r = cli("score", "--classifier", d, "--input", tmp_path / "none.jsonl", "--output", tmp_path / "o.parquet")
    assert r.returncode == 1, r.stderr


def test_the_untampered_fixture_loads():
    clf = load_classifier(FIXTURE)
    assert clf.coef_.shape == (1, 14) and list(clf.classes_) == ["negative", "positive"]


@settings(max_examples=int(os.environ.get("STC_PROPERTY_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.sampled_from(["model", "features", "groups", 0, "neurons", "layer", "kind", "classes",
                                      "eta", "l_temp", "arrays", "coef", "shape", "version", "blocks_run"]),
                     min_size=1, max_size=3),
       value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                          lambda k: st.lists(k, max_size=3) | st.dictionaries(st.text(max_size=4), k, max_size=2),
                          max_leaves=5))
def test_any_manifest_mutation_loads_cleanly_or_is_refused(tmp_path_factory, path, value):
    m = _m()
    node = m
    for key in path[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
    if isinstance(node, dict) and isinstance(path[-1], str):
        node[path[-1]] = value
    elif isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
        node[path[-1]] = value
    d = _write(tmp_path_factory.mktemp("m") / "clf", m)
    try:
        clf = load_classifier(d)
    except StcError:
        return
    X = np.random.default_rng(0).normal(size=(4, clf.coef_.shape[1]))
    assert np.isfinite(clf.predict_proba_features(X)).all()
