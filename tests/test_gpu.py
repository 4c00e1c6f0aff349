"""On a CUDA device (skipped without one, as in CI): extract, fit (LR, SLP probes, the consolidation head) and
score on the GPU agree with the same steps on the CPU. Run them where a GPU is lent:

    python -m pytest -q tests/test_gpu.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stcstore.classifier.classifier import load_classifier
from stcstore.features import ExtractConfig, extract
from stcstore.fit import FitConfig, fit
from stcstore.ingest import IngestConfig, ingest
from stcstore.store.store import Store

from .conftest import FAST, build_tiny, learnable_corpus

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BLOCKS = [("hidden", "mean", 2), ("ffn", "max", 1), ("hidden", "single", 3), ("ffn", "mean", 0)]


@pytest.fixture(scope="module")
def stores(tmp_path_factory, bert_tokenizer):
    """The same corpus extracted by the same tiny BERT on the CPU and on the GPU."""
    tmp = tmp_path_factory.mktemp("gpu")
    src = learnable_corpus(tmp / "c.jsonl", 300, ("0", "1"))
    out = {}
    for device in ("cpu", "cuda"):
        st = tmp / f"st-{device}"
        ingest(st, [src], IngestConfig("d", split_field="split"))
        lm = build_tiny("bert", bert_tokenizer)
        extract(st, ExtractConfig("d", model="tiny-bert", batch_size=16, device=device), lm=lm)
        out[device] = st
    return tmp, out, build_tiny("bert", bert_tokenizer)


def test_features_extracted_on_the_gpu_equal_the_cpus(stores):
    _, st, _ = stores
    a, b = Store(st["cpu"]), Store(st["cuda"])
    for kind, pooling, layer in BLOCKS:
        ids_a, xa, _ = a.matrix("d", "tiny-bert", kind, pooling, layer, None)
        ids_b, xb, _ = b.matrix("d", "tiny-bert", kind, pooling, layer, None)
        assert ids_a.tolist() == ids_b.tolist()
        # float32 compute on both; stored as float16: at most one float16 step apart
        step = np.spacing(np.abs(xa).astype(np.float16)).astype(np.float32)
        assert (np.abs(xa - xb) <= step + 1e-6).all(), (kind, pooling, layer)


@pytest.mark.parametrize("kw", [{}, {"aggregator": "consolidation"}], ids=["lr", "consolidation"])
def test_fit_on_the_gpu(stores, kw):
    """The solver (and the SLP trainer) on the GPU: as good on validation as on the CPU, and the saved
    classifier reproduces the test score the fit reported."""
    tmp, st, _ = stores
    name = kw.get("aggregator", "lr")
    cpu = fit(st["cpu"], FitConfig("d", model="tiny-bert", **kw, **FAST))
    gpu = fit(st["cpu"], FitConfig("d", model="tiny-bert", device="cuda", **kw, **FAST), out=tmp / f"clf-{name}")
    assert gpu.fit_id == cpu.fit_id  # where it ran is not part of the result's identity
    assert gpu.stc["validation"]["accuracy"] >= cpu.stc["validation"]["accuracy"] - 0.04
    clf = load_classifier(tmp / f"clf-{name}")
    ids, X = clf.store_features(Store(st["cpu"]), "d", "test")
    y = Store(st["cpu"]).texts("d", columns=["id", "label"]).to_pydict()
    label = dict(zip(y["id"], y["label"]))
    acc = float(np.mean(clf.predict_features(X) == np.array([label[i] for i in ids])))
    assert acc == pytest.approx(gpu.stc["test"]["accuracy"], abs=1e-12)


def test_scoring_texts_on_the_gpu_equals_the_cpu(stores):
    tmp, st, lm = stores
    if not (tmp / "clf-lr").exists():
        fit(st["cpu"], FitConfig("d", model="tiny-bert", **FAST), out=tmp / "clf-lr")
    texts = Store(st["cpu"]).texts("d", columns=["text"]).column("text").to_pylist()[:64]
    on_cpu = load_classifier(tmp / "clf-lr", model=lm).predict_proba(texts)
    gpu_lm = build_tiny("bert", lm.tokenizer)
    gpu_lm.model.to("cuda")
    on_gpu = load_classifier(tmp / "clf-lr", model=gpu_lm, device="cuda").predict_proba(texts)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-3)
