"""The whole adaptation path on transformers' own LlamaForCausalLM, outside the trainer (issue 26).

A tiny causal LM gains a [MASK] row and runs with the annealed mask and the shift of
``textdiff.adapt``. The properties phase 2 builds on:

* adaptation step 0 (causal mask + shift) gives EXACTLY the AR model's next-token loss, for the
  masked target and for the block target's one-pass ``[x_t ; x0]`` layout;
* block size 1 with the shift is the AR model at any mask rate and any progress;
* the end of annealing (masked target) is the existing Dream-style ``denoiser: {kind: causal}`` path;
* the block target decodes with an exact KV cache through transformers' own ``DynamicCache``.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from textdiff.adapt.attention import additive_mask, annealed_mask, read_logits
from textdiff.adapt.mask_token import init_mask_rows

V, MASK = 40, 40  # the AR vocabulary; the [MASK] is the row added after it


def data(B=3, L=16, seed=1):
    """Arithmetic rows x_i = (a + d i) mod V, a random, d in {1, 2, 3}: two tokens fix the rest."""
    g = torch.Generator().manual_seed(seed)
    start, step = torch.randint(0, V, (B, 1), generator=g), torch.randint(1, 4, (B, 1), generator=g)
    return (start + step * torch.arange(L)[None]) % V


@pytest.fixture(scope="module")
def models():
    """A briefly trained AR Llama (its loss far below log V, so attention matters) and its adapted copy."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    ar = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(ar.parameters(), lr=1e-2)
    for step in range(40):
        x = data(16, 16, seed=100 + step)
        loss = ar(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    ar.eval()
    adapted = copy.deepcopy(ar)
    adapted.resize_token_embeddings(V + 1, mean_resizing=False)
    init_mask_rows(adapted.get_input_embeddings(), adapted.get_output_embeddings(), MASK, "mean", source_rows=V)
    return ar, adapted.eval()


def forward(model, x_t, x0, progress, target="masked", block_size=None, shift=True, rule="random"):
    """Phase 2's training forward in miniature: layout, annealed additive mask, positions, read-out."""
    B, L = x0.shape
    if target == "block":
        ids = torch.cat([x_t, x0], dim=1)  # [B, 2L]
        pos = torch.arange(L).repeat(2)[None].expand(B, 2 * L)
    else:
        ids, pos = x_t, torch.arange(L)[None].expand(B, L)
    mask = additive_mask(annealed_mask(progress, L, target, block_size, rule=rule)).expand(B, 1, -1, -1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    return read_logits(logits, L, target, block_size, shift)  # [B, L, V + 1], row i predicts token i


def subs_log_probs(logits):
    """SUBS: the [MASK] logit is −∞; log-probabilities over the AR vocabulary."""
    logits = logits.clone()
    logits[..., MASK] = float("-inf")
    return torch.log_softmax(logits.double(), -1)[..., :V]


def ar_log_probs(ar, x0):
    """log p_AR(x_i | x_<i) for i >= 1, aligned so that row i predicts token i."""
    with torch.no_grad():
        logits = ar(x0).logits
    return torch.log_softmax(logits.double(), -1)[:, :-1]


def test_step0_masked_target_is_the_ar_model(models):
    ar, adapted = models
    x0 = data()
    lp = subs_log_probs(forward(adapted, x0, x0, 0.0))[:, 1:]
    torch.testing.assert_close(lp, ar_log_probs(ar, x0), rtol=0, atol=1e-5)
    nll = -lp.gather(-1, x0[:, 1:, None]).mean()
    with torch.no_grad():
        ar_loss = ar(x0, labels=x0).loss  # transformers' own shifted next-token loss
    assert float(ar_loss) < 0.5 * torch.log(torch.tensor(float(V)))  # trained: far from uniform
    assert abs(float(nll) - float(ar_loss)) < 1e-5
    late = -subs_log_probs(forward(adapted, x0, x0, 1.0))[:, 1:].gather(-1, x0[:, 1:, None]).mean()
    assert float(late) > float(ar_loss) + 0.1  # unadapted full attention is worse: the comparison has teeth


@pytest.mark.parametrize("block_size", [2, 4, 8])
def test_step0_block_target_is_the_ar_model(models, block_size):
    ar, adapted = models
    x0 = data()
    lp = subs_log_probs(forward(adapted, x0, x0, 0.0, "block", block_size))[:, 1:]
    torch.testing.assert_close(lp, ar_log_probs(ar, x0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_block_size_one_with_shift_is_the_ar_model_at_any_noise(models, progress):
    ar, adapted = models
    x0 = data()
    x_t = torch.where(torch.rand(x0.shape, generator=torch.Generator().manual_seed(2)) < 0.6, MASK, x0)
    lp = subs_log_probs(forward(adapted, x_t, x0, progress, "block", 1))[:, 1:]
    torch.testing.assert_close(lp, ar_log_probs(ar, x0), rtol=0, atol=1e-5)


def test_end_of_anneal_is_the_dream_style_external_denoiser(models):
    from textdiff.config import DenoiserConfig
    from textdiff.models.external import ExternalDenoiser

    _, adapted = models
    x0 = data()
    x_t = torch.where(torch.rand(x0.shape, generator=torch.Generator().manual_seed(3)) < 0.5, MASK, x0)
    dream = ExternalDenoiser(adapted, DenoiserConfig(path="unused", kind="causal", full_attention=True), V + 1, MASK)
    with torch.no_grad():
        theirs = dream(x_t).logits
    torch.testing.assert_close(forward(adapted, x_t, x0, 1.0), theirs, rtol=0, atol=1e-5)


def test_block_target_decodes_with_an_exact_kv_cache(models):
    """One pass over [x_t ; x0] == block-by-block decoding with transformers' DynamicCache: each noisy
    block is denoised against the cached clean blocks (then the cache is cut back), and the pass that
    commits a clean block gives, in its last row, the logits of the next block's first token."""
    _, adapted = models
    B, L, Lb = 2, 12, 4
    x0 = data(B, L)
    x_t = torch.where(torch.rand(x0.shape, generator=torch.Generator().manual_seed(4)) < 0.5, MASK, x0)
    one_pass = forward(adapted, x_t, x0, 1.0, "block", Lb)

    cache, rows, boundary = DynamicCache(), [], None
    with torch.no_grad():
        for k in range(L // Lb):
            block = slice(k * Lb, (k + 1) * Lb)
            pos = torch.arange(k * Lb, (k + 1) * Lb)[None].expand(B, Lb)
            sees_all = torch.zeros(B, 1, Lb, (k + 1) * Lb)  # committed blocks + its own block, both ways
            noisy = adapted(input_ids=x_t[:, block], attention_mask=sees_all, position_ids=pos,
                            cache=cache, use_cache=True).logits  # [B, L', V]
            cache.crop(-Lb)  # a denoising step leaves the cache as it was
            first = noisy[:, :1] if boundary is None else boundary  # token k L' from the previous commit
            rows.append(torch.cat([first, noisy[:, :-1]], dim=1))  # the shift inside the block
            clean = adapted(input_ids=x0[:, block], attention_mask=sees_all, position_ids=pos,
                            cache=cache, use_cache=True).logits
            boundary = clean[:, -1:]
    assert cache.get_seq_length() == L
    torch.testing.assert_close(torch.cat(rows, dim=1), one_pass, rtol=0, atol=1e-5)
