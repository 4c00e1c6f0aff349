"""Parity with Hugging Face's own hidden states and with a manual FFN computation, for every family."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stcstore.core.errors import StcError
from stcstore.core.names import blocks_to_run
from stcstore.features.hooks import PooledForward
from stcstore.models import resolve_adapter, wrap_model

from .conftest import FAMILIES, TEXTS, build_tiny, pad


def _manual_ffn(family: str, block: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The d_ff activation computed by hand from the FFN's input h [T, D]."""
    if family in ("bert", "roberta"):
        inter = block.intermediate
        return inter.intermediate_act_fn(inter.dense(h))
    if family == "distilbert":
        return block.ffn.activation(block.ffn.lin1(h))
    if family == "gpt2":
        return block.mlp.act(block.mlp.c_fc(h))
    if family == "gpt_neox":
        return block.mlp.act(block.mlp.dense_h_to_4h(h))
    mlp = block.mlp  # gated: act(gate) * up
    return mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h)


def _ffn_input_module(family: str, block: nn.Module) -> nn.Module:
    if family in ("bert", "roberta"):
        return block.intermediate
    if family == "distilbert":
        return block.ffn
    return block.mlp


def _single(text: str, lm, capturer: PooledForward):
    ids = lm.tokenizer(text, return_token_type_ids=False)["input_ids"]
    input_ids, mask = pad(lm, [ids], "right")
    return ids, input_ids, capturer.run(input_ids, mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_match_output_hidden_states(family, bert_tokenizer):
    lm = build_tiny(family, bert_tokenizer)
    L = lm.adapter.n_layers
    cap = PooledForward(lm.adapter, list(range(L + 1)), [], ("mean", "max", "single"))
    for text in TEXTS[:4]:
        _, input_ids, out = _single(text, lm, cap)
        ref = lm.model(input_ids=input_ids, output_hidden_states=True).hidden_states
        assert len(ref) == L + 1
        for layer in range(L + 1):
            ours = {k: v[0] for k, v in out[("hidden", layer)].items()}
            expected = ref[layer][0]
            if layer == L and lm.adapter.final_norm() is not None:
                # our h_L is the residual stream before the final norm; HF's last entry is after it
                raw = out_tokens_last(lm, input_ids)[0]
                torch.testing.assert_close(lm.adapter.final_norm()(raw), expected, atol=1e-5, rtol=1e-4)
                expected = raw
            torch.testing.assert_close(ours["mean"], expected.mean(0), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(ours["max"], expected.max(0).values, atol=1e-5, rtol=1e-4)
            pos = 0 if lm.adapter.spec.encoder else expected.shape[0] - 1
            torch.testing.assert_close(ours["single"], expected[pos], atol=1e-5, rtol=1e-4)


def out_tokens_last(lm, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token output of the last block (before any final norm), via a plain forward hook."""
    got = {}
    h = lm.adapter.blocks[-1].register_forward_hook(
        lambda m, a, o: got.__setitem__("x", o[0] if isinstance(o, tuple) else o))
    try:
        with torch.inference_mode():
            lm.model(input_ids=input_ids)
    finally:
        h.remove()
    return got["x"]


@pytest.mark.parametrize("family", FAMILIES)
def test_ffn_activations_match_manual_computation(family, bert_tokenizer):
    lm = build_tiny(family, bert_tokenizer)
    L = lm.adapter.n_layers
    assert lm.adapter.ffn_size == (48 if family in ("llama", "mistral", "qwen2", "gemma") else 64)
    cap = PooledForward(lm.adapter, [], list(range(L)), ("mean", "max", "single"))
    for text in TEXTS[:3]:
        _, input_ids, out = _single(text, lm, cap)
        inputs: dict[int, torch.Tensor] = {}
        handles = [
            _ffn_input_module(family, blk).register_forward_hook(
                lambda m, a, o, l=l: inputs.__setitem__(l, a[0][0]))
            for l, blk in enumerate(lm.adapter.blocks)
        ]
        try:
            with torch.inference_mode():
                lm.model(input_ids=input_ids)
        finally:
            for h in handles:
                h.remove()
        for layer in range(L):
            manual = _manual_ffn(family, lm.adapter.blocks[layer], inputs[layer])
            ours = {k: v[0] for k, v in out[("ffn", layer)].items()}
            torch.testing.assert_close(ours["mean"], manual.mean(0), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(ours["max"], manual.max(0).values, atol=1e-5, rtol=1e-4)


def test_minilm_is_bert_with_documented_shapes(minilm):
    a = minilm.adapter
    assert (a.spec.family, a.n_layers, a.hidden_size, a.ffn_size, a.spec.encoder) == ("bert", 6, 384, 1536, True)
    cap = PooledForward(a, list(range(7)), list(range(6)), ("mean",))
    ids = minilm.tokenizer(TEXTS[0])["input_ids"]
    input_ids, mask = pad(minilm, [ids], "right")
    out = cap.run(input_ids, mask)
    ref = minilm.model(input_ids=input_ids, output_hidden_states=True).hidden_states
    for layer in range(7):  # BERT has no final norm: every h matches HF exactly, the last one included
        torch.testing.assert_close(out[("hidden", layer)]["mean"][0], ref[layer][0].mean(0), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_forward_stops_after_the_deepest_needed_block(family, bert_tokenizer):
    lm = build_tiny(family, bert_tokenizer)
    calls = [0] * lm.adapter.n_layers
    handles = [b.register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, b in enumerate(lm.adapter.blocks)]
    try:
        ids = lm.tokenizer(TEXTS[1])["input_ids"]
        input_ids, mask = pad(lm, [ids], "right")
        PooledForward(lm.adapter, [0, 1], [], ("mean",)).run(input_ids, mask)  # h1 = output of block 0
        assert calls == [1, 0, 0]
        PooledForward(lm.adapter, [], [1], ("mean",)).run(input_ids, mask)  # a1 lives inside block 1
        assert calls == [2, 1, 0]
        PooledForward(lm.adapter, [0], [], ("mean",)).run(input_ids, mask)  # h0 = embeddings: no block runs to its end
        assert calls == [3, 1, 0]
    finally:
        for h in handles:
            h.remove()
    assert blocks_to_run([3], []) == 3 and blocks_to_run([], [2]) == 3 and blocks_to_run([0], []) == 0


def test_structural_fallback_and_clear_failure(bert_tokenizer):
    lm = build_tiny("llama", bert_tokenizer)
    lm.model.config.model_type = "my-llama-fork"  # no adapter registered under this name
    adapter = resolve_adapter(lm.model)
    assert adapter.spec.family.startswith("generic:") and adapter.ffn_out_path == "mlp.down_proj"
    assert adapter.n_layers == 3

    class NoBlocks(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"model_type": "weird", "num_hidden_layers": 2})()
            self.proj = nn.Linear(2, 2)

    with pytest.raises(StcError, match="no adapter for model type 'weird'"):
        resolve_adapter(NoBlocks())


def test_roberta_pad_mismatch_is_refused(bert_tokenizer):
    from transformers import AutoModel

    from .conftest import tiny_config

    cfg = tiny_config("roberta")
    cfg.pad_token_id = 1  # the BERT vocab pads with 0: positions would be computed wrongly
    with pytest.raises(StcError, match="pad_token_id"):
        wrap_model(AutoModel.from_config(cfg), bert_tokenizer, "bad-roberta")


def test_encoder_families_are_the_adapters_that_pool_single_on_the_first_token():
    """fit's embedding baseline reads ENCODER_FAMILIES (fit may not import models); it must name exactly the
    adapter families that are encoders."""
    from stcstore.core.names import ENCODER_FAMILIES
    from stcstore.models.adapters import ADAPTERS

    assert set(ENCODER_FAMILIES) == {s.family for s in ADAPTERS.values() if s.encoder}
    assert not {s.family for s in ADAPTERS.values() if s.encoder} & {s.family for s in ADAPTERS.values() if not s.encoder}
