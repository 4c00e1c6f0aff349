"""Packed batches (`extract --pack`): several texts a row, no padding between them; every text is computed as
if alone, so its features equal the padded path's within float16 rounding, for encoders and decoders."""

from __future__ import annotations

import numpy as np
import pytest

from stcstore.core.errors import StcError
from stcstore.core.names import FeatureBlock
from stcstore.features.compute import FeatureComputer
from stcstore.features.packing import pack_rows

from .conftest import FAMILIES, TEXTS, build_tiny

BLOCKS = [FeatureBlock(k, p, l) for k, l in (("hidden", 0), ("hidden", 2), ("ffn", 1)) for p in ("mean", "max", "single")]


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_features_equal_the_padded_ones(family, bert_tokenizer):
    lm = build_tiny(family, bert_tokenizer)
    texts = TEXTS * 3 + ["a", "one two three four five six seven eight nine ten eleven twelve"]
    padded = FeatureComputer(lm, BLOCKS, 32, max_tokens=200).run(texts)
    packed = FeatureComputer(lm, BLOCKS, 32, max_tokens=200, pack=True).run(texts)
    for b in BLOCKS:
        a, p = padded.blocks[b], packed.blocks[b]
        step = np.spacing(np.abs(a).astype(np.float16)).astype(np.float32)
        assert (np.abs(a - p) <= 2 * step + 1e-6).all(), (family, b, float(np.abs(a - p).max()))


def test_rows_hold_whole_texts_within_the_budgets():
    lengths = [30, 5, 12, 30, 7, 3, 25, 1, 9]
    batches = list(pack_rows(lengths, capacity=32, max_tokens=64, max_texts=100))
    placed = sorted(i for rows in batches for row in rows for i in row)
    assert placed == list(range(len(lengths)))  # every text once
    for rows in batches:
        assert len(rows) * 32 <= 64 and all(sum(lengths[i] for i in row) <= 32 for row in rows)


def test_packing_is_refused_where_per_token_values_are_kept(bert_tokenizer):
    lm = build_tiny("bert", bert_tokenizer)
    with pytest.raises(StcError, match="--pack needs"):
        FeatureComputer(lm, BLOCKS, 32, pack=True, keep_tokens=True)


def test_extract_pack_stores_the_padded_features_within_float16_rounding(tmp_path, bert_tokenizer):
    from stcstore import Store
    from stcstore.features import ExtractConfig, extract
    from stcstore.ingest import IngestConfig, ingest

    from .conftest import learnable_corpus

    src = learnable_corpus(tmp_path / "c.jsonl", 80, ("0", "1"))
    lm = build_tiny("gpt2", bert_tokenizer)
    out = {}
    for pack in (False, True):
        st = tmp_path / f"st-{pack}"
        ingest(IngestConfig("d", split_field="split", store=str(st), sources=(str(src),)))
        r = extract(ExtractConfig("d", model="tiny-gpt2", chunk_rows=30, pack=pack, store=str(st)), lm=lm)
        out[pack] = (r.feature_set, Store(st).matrix("d", "tiny-gpt2", "ffn", "max", 1, None))
    assert out[False][0] == out[True][0]  # how the batches were cut is not part of the feature set
    (ids_a, a, _), (ids_b, b, _) = out[False][1], out[True][1]
    assert ids_a.tolist() == ids_b.tolist()
    step = np.spacing(np.abs(a).astype(np.float16)).astype(np.float32)
    assert (np.abs(a - b) <= 2 * step + 1e-6).all()
