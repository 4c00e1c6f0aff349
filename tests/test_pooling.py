"""Pooling over real tokens only: batched with left or right padding equals each text run alone."""

from __future__ import annotations

import pytest
import torch

from stcstore.features.compute import length_batches
from stcstore.features.hooks import PooledForward
from stcstore.features.pooling import dense_span, pool, single_index

from .conftest import TEXTS, build_tiny, pad


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "gpt2", "gpt_neox", "llama", "gemma"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_padding_equals_unpadded(family, side, bert_tokenizer):
    lm = build_tiny(family, bert_tokenizer)
    L = lm.adapter.n_layers
    cap = PooledForward(lm.adapter, list(range(L + 1)), list(range(L)), ("mean", "max", "single"))
    seqs = [lm.tokenizer(t, return_token_type_ids=False)["input_ids"] for t in TEXTS]
    assert len({len(s) for s in seqs}) > 3  # the batch really has padding
    ids, mask = pad(lm, seqs, side)
    batched = cap.run(ids, mask)
    for i, s in enumerate(seqs):
        one_ids, one_mask = pad(lm, [s], side)
        alone = cap.run(one_ids, one_mask)
        for key, pooled in alone.items():
            for p, v in pooled.items():
                torch.testing.assert_close(batched[key][p][i], v[0], atol=2e-5, rtol=1e-4,
                                           msg=lambda m: f"{family} {side} {key} {p} row {i}: {m}")


def test_single_index_for_both_sides():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    left = right.flip(1)
    assert single_index(right, encoder=True).tolist() == [0, 0]
    assert single_index(right, encoder=False).tolist() == [2, 4]
    assert single_index(left, encoder=True).tolist() == [2, 0]
    assert single_index(left, encoder=False).tolist() == [4, 4]


def test_padding_values_never_leak():
    x = torch.tensor([[[1.0, -2.0], [3.0, -4.0], [float("nan"), float("inf")]]])  # [1, 3, 2], last is padding
    mask = torch.tensor([[True, True, False]])
    out = pool(x, mask, ("mean", "max", "single"), single_index(mask, encoder=False), mask.sum(1, keepdim=True).float())
    assert out["mean"].tolist() == [[2.0, -3.0]]
    assert out["max"].tolist() == [[3.0, -2.0]]
    assert out["single"].tolist() == [[3.0, -4.0]]


def test_length_batches_respect_budget_and_cover_every_row():
    lengths = [5, 50, 7, 49, 3, 100, 2, 8]
    batches = list(length_batches(lengths, max_rows=3, max_tokens=120))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 120
    assert batches[0] == [5]  # longest first, alone: 2 x 100 > 120


@pytest.mark.parametrize("side", ["left", "right"])
def test_dense_span_fast_path_equals_full_masking(side):
    torch.manual_seed(0)
    lengths = [7, 5, 7, 3]
    mask = torch.zeros(4, 7, dtype=torch.bool)
    for i, n in enumerate(lengths):
        if side == "right":
            mask[i, :n] = True
        else:
            mask[i, 7 - n:] = True
    x = torch.randn(4, 7, 6)
    x[~mask] = float("nan")  # padding garbage must not leak through either path
    span = dense_span(mask)
    assert span == ((0, 3) if side == "right" else (4, 7))
    idx = single_index(mask, encoder=False)
    n = mask.sum(1, keepdim=True).float()
    fast = pool(x, mask, ("mean", "max", "single"), idx, n, span)
    slow = pool(x, mask, ("mean", "max", "single"), idx, n, None)
    for p in fast:
        torch.testing.assert_close(fast[p], slow[p])
        assert torch.isfinite(fast[p]).all()
    holes = torch.tensor([[True, False, True]])
    assert dense_span(holes) is None  # not one contiguous span: the general path is used
    assert dense_span(torch.tensor([[True, False], [False, True]])) is None


@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), float("-inf"), 1e30])
def test_ragged_edge_never_leaks_padding_and_a_finite_batch_takes_the_fast_path(garbage, monkeypatch):
    """Right padding with a ragged edge (rows of 7, 5, 7, 3 tokens): whatever a model leaves at padded positions,
    max and mean read real tokens only; rows whose edge is all padding (-inf on the edge's max) are expected,
    not a reason for the slow, copying path."""
    torch.manual_seed(1)
    mask = torch.zeros(4, 7, dtype=torch.bool)
    for i, n in enumerate([7, 5, 7, 3]):
        mask[i, :n] = True
    x = torch.randn(4, 7, 6)
    expected = {"max": torch.stack([x[i, :n].amax(0) for i, n in enumerate([7, 5, 7, 3])]),
                "mean": torch.stack([x[i, :n].mean(0) for i, n in enumerate([7, 5, 7, 3])])}
    args = (single_index(mask, encoder=True), mask.sum(1, keepdim=True).float(), dense_span(mask))
    calls = []
    real_masked_fill = torch.Tensor.masked_fill
    monkeypatch.setattr(torch.Tensor, "masked_fill", lambda self, *a: calls.append(1) or real_masked_fill(self, *a))
    out = pool(x, mask, ("mean", "max"), args[0], args[1], args[2])
    assert not calls  # finite values: the fast path only
    for p in expected:
        torch.testing.assert_close(out[p], expected[p])
    x[~mask] = garbage
    out = pool(x, mask, ("mean", "max"), args[0], args[1], args[2])
    for p in expected:
        torch.testing.assert_close(out[p], expected[p])
