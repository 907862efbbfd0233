"""``logits_to_keep``: only the window's rows go through the output layer during windowed decoding."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import textdiff
from textdiff.config import DenoiserConfig
from textdiff.generation import generate
from textdiff.models.configuration_textdiff import TextDiffConfig
from textdiff.models.external import ExternalDenoiser
from textdiff.models.modeling_textdiff import TextDiffModel

V, MASK = 12, 11


def tiny(attention="bidirectional", block_size=None):
    torch.manual_seed(0)
    cfg = TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=64,
                         attention=attention, block_size=block_size, initializer_range=0.5)
    return TextDiffModel(cfg).eval()


class FullRows(torch.nn.Module):
    """The same network behind a forward that does not know ``logits_to_keep`` (computes every row)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids, t=None, attention_mask=None, position_ids=None, cache=None, update_cache=False):
        return self.model(input_ids, t=t, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                          update_cache=update_cache)


def count_head_rows(model):
    rows = []
    model.lm_head.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0] * inp[0].shape[1]))
    return rows


def test_model_keeps_the_last_k_or_the_given_positions():
    model = tiny()
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        full = model(ids).logits
        # the same rows (a matmul over fewer rows may round its last bit differently)
        torch.testing.assert_close(model(ids, logits_to_keep=3).logits, full[:, -3:], rtol=1e-5, atol=1e-5)
        idx = torch.tensor([1, 4, 5])
        torch.testing.assert_close(model(ids, logits_to_keep=idx).logits, full[:, idx], rtol=1e-5, atol=1e-5)
        assert torch.equal(model(ids, logits_to_keep=0).logits, full)
        assert model(ids, logits_to_keep=3).hidden_states.shape[1] == 9


@pytest.mark.parametrize("use_cache", ["none", "prefix", "dual"])
def test_semi_ar_decoding_feeds_only_the_window_to_the_output_layer(use_cache):
    process = textdiff.build_process("masked", vocab_size=V, mask_id=MASK)
    model = tiny()
    kw = dict(max_new_tokens=12, steps=12, block_size=4, seed=[3, 4], use_cache=use_cache)
    rows = count_head_rows(model)
    out = generate(model, process, "ancestral", [[1, 2], [3]], **kw)
    ref = generate(FullRows(model), process, "ancestral", [[1, 2], [3]], **kw)
    assert torch.equal(out.sequences, ref.sequences)  # same logits at every row the sampler reads, same samples
    ours, full = rows[: out.model_calls], rows[out.model_calls:]
    assert len(full) == ref.model_calls and min(full) >= 2 * 4  # FullRows: every fed row, cut afterwards
    # textdiff's calls: B x (window positions still [MASK] in some row), never more than the window
    assert all(r % 2 == 0 and 2 <= r <= 2 * 4 for r in ours) and min(ours) < 2 * 4


def test_block_cache_prefill_and_windows_are_window_sized():
    process = textdiff.build_process({"name": "block", "block_size": 4}, vocab_size=V, mask_id=MASK)
    model = tiny("block_causal", 4)
    rows = count_head_rows(model)
    out = generate(model, process, "ancestral", [[1, 2, 3, 4, 5]], max_new_tokens=8, steps=8, block_size=4, seed=0)
    ref = generate(FullRows(model), process, "ancestral", [[1, 2, 3, 4, 5]], max_new_tokens=8, steps=8, block_size=4, seed=0)
    assert torch.equal(out.sequences, ref.sequences)
    calls = rows[: out.model_calls]
    assert max(calls) <= 4 and sum(calls) < sum(rows[out.model_calls:])  # prefill keeps 1 row, windows 4


def test_external_denoiser_accepts_logits_to_keep_after_the_causal_shift():
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=2)).eval()
    den = ExternalDenoiser(hf, DenoiserConfig(path="x", kind="causal", full_attention=True), 60, 59).eval()
    ids = torch.randint(3, 59, (2, 9))
    with torch.no_grad():
        full = den(ids).logits
        assert torch.equal(den(ids, logits_to_keep=4).logits, full[:, -4:])
        assert torch.equal(den(ids, logits_to_keep=torch.tensor([0, 2])).logits, full[:, [0, 2]])
