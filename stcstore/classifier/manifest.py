"""Validation of a classifier manifest and its arrays, before any use: every field a classifier reads is
checked for type and range, against the model it records and against the arrays. A file that fails is
refused with the field and the reason (exit 1); nothing in it is ever executed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.errors import StcError
from ..core.names import (IDENTITY_KEYS, KINDS, LEGACY_OPTIONAL, LOCATION_KEYS, MAX_LABEL_NAME, POOLINGS,
                          STORED_DTYPES, TORCH_DTYPES, blocks_to_run)
from ..core.records import BadField, field_of
from .heads import HEAD_ARRAYS, HEADS, sub_networks

CLASSIFIER_FORMAT = "stcstore-classifier"
# 2: a consolidation head ("head" in the manifest, its own arrays). 3: an ensemble head (`fit --selection
# ensemble`). Linear classifiers are still written as version 1, which stcstore 0.1 and 0.2 read; a newer
# classifier tells them to upgrade.
CLASSIFIER_VERSION = 3
ARRAYS = ("coef", "intercept", "mean", "scale")  # a linear classifier's arrays, in file order
# Bounds that no real classifier comes near, so that a file cannot make loading or scoring exhaust memory:
# model sizes (no transformer is larger), classes, the bytes of manifest.json and of all arrays together.
MAX_LAYERS, MAX_HIDDEN, MAX_FFN = 4096, 1 << 17, 1 << 20
MAX_CLASSES = 10_000
MAX_MANIFEST_BYTES = 128 << 20
MAX_ARRAY_BYTES = 2 << 30
# Scores are computed in float32. A classifier is refused unless every feature vector with values in
# ±FEATURE_RANGE (float16's range, the stored default) gives scores within ±SCORE_LIMIT: finite with room
# to spare. Features beyond that range are checked when scored (a non-finite score is an error).
FEATURE_RANGE = 65504.0
SCORE_LIMIT = 1e30
MAX_MEMBERS = len(KINDS) * len(POOLINGS) + len(POOLINGS)  # each kind/pooling, and the mixed kinds per pooling


def head_type(m: dict[str, Any]) -> str:
    """"linear" (no "head" in the manifest, as in every classifier before 0.3) or "consolidation"."""
    head = m.get("head")
    return head.get("type", "?") if isinstance(head, dict) else "linear"


def array_names(m: dict[str, Any]) -> tuple[str, ...]:
    """The arrays a classifier of this manifest keeps, in file order."""
    return ARRAYS if head_type(m) == "linear" else ("mean", "scale", *HEAD_ARRAYS[head_type(m)])
# the fields of a model fingerprint that define what it computes (core.names; classifiers written by 0.1.0
# lack config_sha256), and those a classifier records of where it came from
MODEL_CHECK_KEYS = IDENTITY_KEYS
MODEL_RECORD_KEYS = (*LOCATION_KEYS, *IDENTITY_KEYS)


def _int(d: Any, key: str, where: str, lo: int, hi: int | None = None) -> int:
    v = field_of(d, key, int, where)
    if v < lo or (hi is not None and v > hi):
        raise BadField(f"{where}{key} is {v}, outside {lo}..{'' if hi is None else hi}")
    return v


def check_header(m: Any) -> None:
    """The format and version: refuse what is not a classifier, or of a format this version cannot read."""
    if not isinstance(m, dict) or m.get("format") != CLASSIFIER_FORMAT:
        raise StcError("manifest.json is not an stcstore classifier manifest (a JSON object with format "
                       f"{CLASSIFIER_FORMAT!r})")
    version = m.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= CLASSIFIER_VERSION:
        raise StcError(f"classifier format {version!r}; this stcstore reads format {CLASSIFIER_VERSION} and older: "
                       f"upgrade stcstore (or the file is damaged)")


def check_manifest(m: dict[str, Any]) -> None:
    """Every field a Classifier reads, before any use. Raises StcError naming the field."""
    try:
        _check(m)
    except BadField as exc:
        raise StcError(f"manifest.json: {exc}") from None


def _check(m: dict[str, Any]) -> None:
    model = field_of(m, "model", dict, "")
    for k in MODEL_CHECK_KEYS:
        if k not in model and k not in LEGACY_OPTIONAL:
            raise BadField(f"model.{k} is missing")
    n_layers = _int(model, "n_layers", "model.", 1, MAX_LAYERS)
    width = {"hidden": _int(model, "hidden_size", "model.", 1, MAX_HIDDEN),
             "ffn": _int(model, "ffn_size", "model.", 1, MAX_FFN)}
    feats = field_of(m, "features", dict, "")
    _int(feats, "max_length", "features.", 2)
    if feats.get("dtype") not in STORED_DTYPES or feats.get("torch_dtype") not in TORCH_DTYPES:
        raise BadField(f"features.dtype / torch_dtype must be one of {STORED_DTYPES} / {TORCH_DTYPES}")
    field_of(feats, "feature_set", str, "features.")
    eta = field_of(m, "eta", (int, float), "")
    if not 0 < eta <= 1:
        raise BadField(f"eta is {eta}, outside (0, 1]")
    _int(m, "l_temp", "", 0, n_layers)
    classes = field_of(m, "classes", list, "")
    task = m.get("task", "classification")  # absent before 0.3: classification
    if task not in ("classification", "regression"):
        raise BadField(f"task is {task!r}, not classification or regression")
    if task == "regression" and classes:
        raise BadField("a regression classifier has no classes, but classes is not empty")
    if len(classes) > MAX_CLASSES:
        raise BadField(f"classes holds {len(classes)} classes; at most {MAX_CLASSES} are read")
    if task == "classification" and (len(classes) < 2 or len({str(c) for c in classes}) != len(classes) or
                                     not all(isinstance(c, str) for c in classes)):
        raise BadField(f"classes must be at least two distinct strings, got {str(classes)[:60]}")
    names = m.get("label_names", {})  # display names (0.3; absent: none)
    if not isinstance(names, dict) or not all(k in classes and isinstance(v, str) and 0 < len(v) <= MAX_LABEL_NAME
                                              for k, v in names.items()):
        raise BadField(f"label_names must map classes to names of 1 to {MAX_LABEL_NAME} characters")
    groups = field_of(m, "groups", list, "")
    if not groups:
        raise BadField("groups is empty: a classifier reads at least one neuron")
    for i, g in enumerate(groups):
        where = f"groups[{i}]."
        kind, pooling = field_of(g, "kind", str, where), field_of(g, "pooling", str, where)
        if kind not in KINDS or pooling not in POOLINGS:
            raise BadField(f"{where}kind/pooling {kind!r}/{pooling!r} is not one of {KINDS} / {POOLINGS}")
        layer = _int(g, "layer", where, 0, n_layers if kind == "hidden" else n_layers - 1)
        neurons = field_of(g, "neurons", list, where)
        if not neurons or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < width[kind]
                                  for n in neurons) or len(set(neurons)) != len(neurons):
            raise BadField(f"{where}neurons must be distinct indices in 0..{width[kind] - 1} of {kind} layer {layer}")
    run = blocks_to_run([g["layer"] for g in groups if g["kind"] == "hidden"],
                        [g["layer"] for g in groups if g["kind"] == "ffn"])
    if m.get("blocks_run") != run:
        raise BadField(f"blocks_run is {m.get('blocks_run')!r}, but its groups need {run}")
    for key in ("metrics", "fit"):
        if key in m and not isinstance(m[key], dict):
            raise BadField(f"{key} is not an object")
    _check_head(m, groups, width)
    specs = field_of(m, "arrays", dict, "")
    for name in array_names(m):
        spec = field_of(specs, name, dict, "arrays.")
        f = field_of(spec, "file", str, f"arrays.{name}.")
        if f != f"{name}.npy":
            raise BadField(f"arrays.{name}.file is {f!r}; it must be {name}.npy in the classifier directory")
        field_of(spec, "sha256", str, f"arrays.{name}.")
        field_of(spec, "shape", list, f"arrays.{name}.")
    shapes = expected_shapes(m)
    for name, shape in shapes.items():
        if m["arrays"][name]["shape"] != list(shape):
            raise BadField(f"arrays.{name}.shape is {str(m['arrays'][name]['shape'])[:40]}; the groups, classes and head "
                       f"need {list(shape)}")
    total = 8 * sum(math.prod(shape) for shape in shapes.values())
    if total > MAX_ARRAY_BYTES:
        raise BadField(f"the arrays would take {total / 2**30:,.1f} GiB; at most {MAX_ARRAY_BYTES / 2**30:.0f} GiB are read "
                   f"(stcstore's classifiers keep few neurons: MBs)")


def _members(m: dict[str, Any], groups: list[Any]) -> list[list[Any]]:
    """The groups of each member (one member unless the head is an ensemble)."""
    if head_type(m) != "ensemble":
        return [groups]
    out, g = [], 0
    for mem in m["head"]["members"]:
        out.append(groups[g:g + mem["groups"]])
        g += mem["groups"]
    return out


def _check_head(m: dict[str, Any], groups: list[Any], width: dict[str, int]) -> None:
    if "head" in m:
        _check_head_fields(m, groups, width)
    for i, member in enumerate(_members(m, groups)):
        blocks = [(g["kind"], g["pooling"], g["layer"]) for g in member]
        if len(set(blocks)) != len(blocks):
            raise BadField(f"groups{f' of head.members[{i}]' if 'head' in m else ''} repeat a (kind, pooling, layer) "
                       f"block; each block is read once")


def _check_head_fields(m: dict[str, Any], groups: list[Any], width: dict[str, int]) -> None:
    n_groups = len(groups)
    head = field_of(m, "head", dict, "")
    kind = field_of(head, "type", str, "head.")
    if kind not in HEADS:
        raise BadField(f"head.type is {kind!r}, not one of {HEADS}")
    if kind == "consolidation":
        if m.get("version") != 2:
            raise BadField("a consolidation head needs classifier format 2")
        units = field_of(head, "hidden_units", list, "head.")
        if len(units) != n_groups or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in units):
            raise BadField(f"head.hidden_units must be one positive integer per group ({n_groups})")
        for i, (u, g) in enumerate(zip(units, groups)):  # an SLP probe has round(√width) hidden units
            most = _sqrt_units(width[g["kind"]])
            if u > most:
                raise BadField(f"head.hidden_units[{i}] is {u}; a probe of a {g['kind']} layer ({width[g['kind']]} "
                           f"neurons) has at most {most}")
        _int(head, "units", "head.", 1, _sqrt_units(sum(units)))
    if kind == "ensemble":
        if m.get("version") != 3:
            raise BadField("an ensemble head needs classifier format 3")
        members = field_of(head, "members", list, "head.")
        if not members or len(members) > MAX_MEMBERS:
            raise BadField(f"head.members holds {len(members)} members; an ensemble has 1 to {MAX_MEMBERS}")
        for i, mem in enumerate(members):
            where = f"head.members[{i}]."
            _int(mem, "groups", where, 1)
            eta = field_of(mem, "eta", (int, float), where)
            if not 0 < eta <= 1:
                raise BadField(f"{where}eta is {eta}, outside (0, 1]")
        if sum(mem["groups"] for mem in members) != n_groups:
            raise BadField(f"head.members hold {sum(mem['groups'] for mem in members)} groups, but groups has {n_groups}")


def _sqrt_units(d: int) -> int:
    """The most hidden units a network on d inputs has: round(√d) (fit.slp), with one to spare."""
    return max(1, round(math.sqrt(d))) + 1


def expected_shapes(m: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shape of every array, from the manifest's groups, classes and head."""
    n = sum(len(g["neurons"]) for g in m["groups"])
    k = 1 if len(m["classes"]) in (0, 2) else len(m["classes"])  # 0 classes: a regression target, one value
    if head_type(m) == "linear":
        return {"coef": (k, n), "intercept": (k,), "mean": (n,), "scale": (n,)}
    if head_type(m) == "ensemble":
        return {"mean": (n,), "scale": (n,), "coef": (k, n), "intercept": (len(m["head"]["members"]), k)}
    units, sizes = m["head"]["hidden_units"], [len(g["neurons"]) for g in m["groups"]]
    h, u = sum(units), m["head"]["units"]
    return {"mean": (n,), "scale": (n,), "sub_weight": (sum(a * b for a, b in zip(units, sizes)),),
            "sub_bias": (h,), "hidden_mean": (h,), "hidden_scale": (h,), "coef1": (u, h), "intercept1": (u,),
            "coef": (k, u), "intercept": (k,)}


def check_arrays(m: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Shapes against the manifest's groups, classes and head, and every value finite (scales positive)."""
    n = sum(len(g["neurons"]) for g in m["groups"])
    for name, shape in expected_shapes(m).items():
        a = arrays[name]
        if a.shape != shape:
            raise StcError(f"{name}.npy has shape {a.shape}; the manifest's {n} neurons, {len(m['classes'])} "
                           f"classes and {head_type(m)} head need {shape}")
        if not np.isfinite(a).all():
            raise StcError(f"{name}.npy holds NaN or infinite values; the classifier is damaged")
    for name in ("scale", "hidden_scale"):
        if name in arrays and not (arrays[name] > 0).all():
            raise StcError(f"{name}.npy holds values <= 0; standardisation would divide by them")
    bound = score_bound(m, arrays)
    if not bound <= SCORE_LIMIT:
        raise StcError(f"the arrays can give scores of {bound:.3g} for features within ±{FEATURE_RANGE:g} (at most "
                       f"{SCORE_LIMIT:g}: float32 scores must stay finite); the classifier is damaged or was edited")


def score_bound(m: dict[str, Any], arrays: dict[str, np.ndarray]) -> float:
    """The largest |score| any feature vector within ±FEATURE_RANGE can give (interval arithmetic through
    the standardisation and the head; inf when it overflows)."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = (FEATURE_RANGE + np.abs(arrays["mean"])) / arrays["scale"]  # |standardised feature| at most
        if head_type(m) == "consolidation":
            W, b = arrays["sub_weight"], arrays["sub_bias"]
            parts = [np.abs(W[ws].reshape(h, n)) @ z[cols] + np.abs(b[bs]) for cols, ws, bs, h, n in
                     sub_networks(m["head"]["hidden_units"], [len(g["neurons"]) for g in m["groups"]])]
            hidden = (np.concatenate(parts) + np.abs(arrays["hidden_mean"])) / arrays["hidden_scale"]
            z = np.abs(arrays["coef1"]) @ hidden + np.abs(arrays["intercept1"])
        out = np.abs(arrays["coef"]) @ z + np.abs(arrays["intercept"]).max(axis=0)
        top = float(np.max(out)) if out.size else 0.0
    return top if math.isfinite(top) else math.inf
