"""Every stage is called one way, `stage(cfg, **resources) -> Result`, its inputs and outputs in the config;
0.2's shapes (`ingest(store, sources, cfg)`, `extract(store, cfg)`, `fit(store, cfg, out=, force=)`,
`drop(store, dataset, yes)`) still work and do the same thing."""

from __future__ import annotations

import inspect
import json

import pytest

from stcstore.classifier.classifier import load_classifier
from stcstore.cluster import ray_extract, ray_fit, ray_score
from stcstore.core.errors import StcError
from stcstore.features import ExtractConfig, extract
from stcstore.fit import FitConfig, fit
from stcstore.ingest import IngestConfig, ingest
from stcstore.report import ReportConfig, report
from stcstore.score import ScoreConfig, score
from stcstore.store.drop import DropConfig, drop

from .conftest import FAST, build_tiny, learnable_corpus

STAGES = [(ingest, IngestConfig), (extract, ExtractConfig), (fit, FitConfig), (score, ScoreConfig),
          (report, ReportConfig), (drop, DropConfig), (ray_extract, ExtractConfig), (ray_fit, FitConfig),
          (ray_score, ScoreConfig)]


@pytest.mark.parametrize("stage, config", STAGES, ids=lambda x: getattr(x, "__name__", ""))
def test_every_stage_takes_its_config_first_and_the_rest_by_keyword(stage, config):
    params = list(inspect.signature(stage).parameters.values())
    assert params[0].name == "cfg" and config.__name__ in str(params[0].annotation)
    # whatever follows is a resource passed by keyword (or 0.2's positional shape, kept working)
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty
               for p in params[1:]), stage.__name__
    if "store" in {f.name for f in config.__dataclass_fields__.values()}:
        assert config.__dataclass_fields__["store"].default is None or config is ReportConfig


def test_the_new_and_the_old_shapes_do_the_same(tmp_path, bert_tokenizer):
    src = learnable_corpus(tmp_path / "c.jsonl", 60, ("0", "1"))
    new, old = tmp_path / "new", tmp_path / "old"
    lm = build_tiny("bert", bert_tokenizer)
    a = ingest(IngestConfig("d", split_field="split", store=str(new), sources=(str(src),)))
    b = ingest(old, [src], IngestConfig("d", split_field="split"))
    assert a.totals() == b.totals() and a.totals()["ingested"] == 60
    # the store and sources are not part of the ingest options: the same file is "already ingested" either way
    again = ingest(old, [src], IngestConfig("d", split_field="split", store=str(new)))
    assert again.files[0].skipped
    ea = extract(ExtractConfig("d", model="tiny-bert", batch_size=16, store=str(new)), lm=lm)
    eb = extract(old, ExtractConfig("d", model="tiny-bert", batch_size=16), lm=lm)
    assert ea.feature_set == eb.feature_set and ea.texts_extracted == eb.texts_extracted == 60
    fa = fit(FitConfig("d", model="tiny-bert", kinds=("hidden",), poolings=("mean",), workers=1, store=str(new),
                       out=str(tmp_path / "clf-new"), **FAST))
    fb = fit(old, FitConfig("d", model="tiny-bert", kinds=("hidden",), poolings=("mean",), workers=1, **FAST),
             out=tmp_path / "clf-old")
    # where a fit reads and writes is not part of what it is: the same fit id and the same classifier
    assert fa.fit_id == fb.fit_id
    ca, cb = load_classifier(tmp_path / "clf-new"), load_classifier(tmp_path / "clf-old")
    assert ca.fingerprint == cb.fingerprint
    assert "store" not in json.loads((tmp_path / "clf-new" / "manifest.json").read_text())["fit"]["config"]
    with pytest.raises(StcError, match="exists"):  # force is the config's too
        fit(FitConfig("d", model="tiny-bert", kinds=("hidden",), poolings=("mean",), workers=1, store=str(new),
                      out=str(tmp_path / "clf-old"), **FAST))
    with pytest.raises(StcError, match="would delete"):
        drop(DropConfig("d", store=str(new)))
    assert drop(old, "d", yes=True).texts == 60
    assert drop(DropConfig("d", store=str(new), yes=True)).texts == 60


def test_a_config_without_its_store_is_refused_by_name(tmp_path):
    with pytest.raises(StcError, match="extract: give the store"):
        extract(ExtractConfig("d"))
    with pytest.raises(TypeError, match="expected a FitConfig"):
        fit(str(tmp_path), "d")
