"""Classifier-free guidance: the formula, weight 0 == no guidance, caches, and refusals."""
from __future__ import annotations

import pytest
import torch

import textdiff
from textdiff.errors import IncompatibleError, TextDiffError
from textdiff.generation import _model_call, generate
from textdiff.guidance import ClassifierFreeGuidance, guided_log_probs
from textdiff.models.configuration_textdiff import TextDiffConfig
from textdiff.models.modeling_textdiff import TextDiffModel

V, MASK = 12, 11
PROMPTS = [[1, 2, 3], [4, 5]]


def tiny(attention="bidirectional", block_size=None):
    torch.manual_seed(0)
    cfg = TextDiffConfig(vocab_size=V, hidden_size=32, num_layers=1, num_heads=2, mlp_ratio=2.0,
                         max_position_embeddings=32, attention=attention, block_size=block_size, initializer_range=0.5)
    return TextDiffModel(cfg).eval()


def masked():
    return textdiff.build_process("masked", vocab_size=V, mask_id=MASK)


@pytest.mark.parametrize("sampler", ["ancestral", "first_hitting", "confidence"])
def test_weight_zero_is_exactly_no_guidance(sampler):
    model, process = tiny(), masked()
    plain = generate(model, process, sampler, PROMPTS, max_new_tokens=6, steps=6, seed=0)
    cfg = ClassifierFreeGuidance(model, process, weight=0.0)
    guided = generate(model, process, sampler, PROMPTS, max_new_tokens=6, steps=6, seed=0, denoise=cfg)
    assert torch.equal(plain.sequences, guided.sequences)
    assert guided.model_calls == plain.model_calls  # no unconditional branch is run


def test_guided_logits_follow_the_formula_with_the_prompt_masked():
    model, process = tiny(), masked()
    calls = []

    def spy(ids, t, attention_mask, position_ids, cache, update_cache):
        calls.append((ids.clone(), attention_mask.clone()))
        return _model_call(model, process)(ids, t, attention_mask, position_ids, cache, update_cache)

    w = 1.5
    cfg = ClassifierFreeGuidance(model, process, weight=w, base=spy)
    out = generate(model, process, "ancestral", PROMPTS, max_new_tokens=4, steps=1, seed=0, denoise=cfg)
    assert out.model_calls == 2 * out.nfe == 2
    (cond_ids, mask), (uncond_ids, mask_u) = calls
    # rows are [pad | prompt | new]: the prompt tokens, and only they, become [MASK]
    prompt = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(uncond_ids[prompt], torch.full((5,), MASK))
    assert torch.equal(uncond_ids[~prompt], cond_ids[~prompt]) and torch.equal(mask, mask_u)
    lc = model(cond_ids, attention_mask=mask).logits
    lu = model(uncond_ids, attention_mask=mask).logits
    expected = (1 + w) * torch.log_softmax(lc, -1) - w * torch.log_softmax(lu, -1)
    assert torch.allclose(guided_log_probs(lc, lu, w), expected)
    # p_w ∝ p_c^(1+w) / p_u^w, renormalised
    p = torch.softmax(expected, -1)
    ratio = p * torch.softmax(lu, -1) ** w / torch.softmax(lc, -1) ** (1 + w)
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), rtol=1e-4)


def test_guidance_changes_samples_and_keeps_prompts():
    model, process = tiny(), masked()
    plain = generate(model, process, "ancestral", PROMPTS * 4, max_new_tokens=6, steps=6, seed=0)
    guided = generate(model, process, "ancestral", PROMPTS * 4, max_new_tokens=6, steps=6, seed=0,
                      denoise=ClassifierFreeGuidance(model, process, weight=3.0))
    assert not torch.equal(plain.sequences, guided.sequences)
    assert torch.equal(plain.sequences[:, :3], guided.sequences[:, :3])
    assert not bool((guided.sequences == MASK).any())


@pytest.mark.parametrize("uncond", ["mask", "drop"])
def test_guidance_with_an_exact_block_cache_equals_no_cache(uncond):
    """The unconditional branch keeps its own KV cache: cached and uncached guided runs agree."""
    process = textdiff.build_process({"name": "block", "block_size": 4}, vocab_size=V, mask_id=MASK)
    model = tiny("block_causal", block_size=4)
    runs = [generate(model, process, "ancestral", PROMPTS, max_new_tokens=8, steps=8, block_size=4, seed=0,
                     use_cache=use, denoise=ClassifierFreeGuidance(model, process, weight=2.0, uncond=uncond))
            for use in (True, False)]
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    assert runs[0].model_calls != runs[1].model_calls  # the first run really used the cache


def test_drop_mode_serves_processes_without_a_mask_token():
    model = tiny()
    process = textdiff.build_process("uniform", vocab_size=V)
    with pytest.raises(IncompatibleError, match="uncond='drop'"):
        ClassifierFreeGuidance(model, process, weight=1.0)
    out = generate(model, process, "ancestral", PROMPTS, max_new_tokens=4, steps=4, seed=0,
                   denoise=ClassifierFreeGuidance(model, process, weight=1.0, uncond="drop"))
    assert out.model_calls == 2 * out.nfe


def test_guidance_refuses_score_processes_and_bad_weights():
    model = tiny()
    sedd = textdiff.build_process("sedd_absorb", vocab_size=V, mask_id=MASK)
    with pytest.raises(IncompatibleError, match="scores"):
        ClassifierFreeGuidance(model, sedd, weight=1.0)
    with pytest.raises(TextDiffError, match="finite"):
        ClassifierFreeGuidance(model, masked(), weight=float("nan"))
    with pytest.raises(TextDiffError, match="generate"):
        ClassifierFreeGuidance(model, masked(), weight=1.0)(torch.zeros(1, 2, dtype=torch.long), None,
                                                            torch.ones(1, 2), torch.zeros(1, 2, dtype=torch.long),
                                                            None, False)
