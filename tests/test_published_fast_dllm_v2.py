"""Fast-dLLM v2 (Qwen2.5 block diffusion with token shift) against the fixture made by NVIDIA's own
code (tests/fixtures/published/make_fast_dllm_v2.py): logits, and generate()'s greedy decoding
(sub-blocks of 8, threshold, the next block's first token from the finished block) token for token,
with the exact KV cache of committed blocks and without a cache."""
from __future__ import annotations

import pytest
import torch

from published_llm_helpers import FIXTURES, fixture_expected, load_fixture, relative
from textdiff.models.published import detect_family

# make_fast_dllm_v2.py's greedy cases: name -> (prompt length, generate keyword arguments)
CASES = {
    "default": (12, dict(small_block_size=8, threshold=0.9)),
    "threshold_low": (12, dict(small_block_size=8, threshold=0.3)),
    "aligned_prompt": (64, dict(small_block_size=8, threshold=0.9)),  # prefilled; the first token is the prompt's next
    "long_prompt": (45, dict(small_block_size=8, threshold=0.9)),
    "block16": (20, dict(block_size=16, small_block_size=4, threshold=0.5)),
    "one_sub_block": (12, dict(small_block_size=32, threshold=0.9)),
    "stop": (12, dict(small_block_size=8, threshold=0.9, stop_token=15)),
}


@pytest.fixture(scope="module")
def lm():
    return load_fixture("fast_dllm_v2")


def _decode(lm, case, use_cache="exact"):
    """(ours, the publisher's): generate() returns prompt + answer (+ the next block's first token)."""
    e = fixture_expected("fast_dllm_v2")
    n, kw = CASES[case]
    theirs = e[case].flatten().tolist()
    block = kw.get("block_size", 32)
    lm.model.config.block_size = block  # generate's block_size is also its attention block
    try:
        _, out = lm.generate([e[f"prompt_{n}"][0].tolist()], max_new_tokens=len(theirs) - n, block_size=block,
                             sampler_options={"threshold": kw["threshold"], "sub_block": kw["small_block_size"]},
                             stop_at_eos=False, return_output=True, use_cache=use_cache)
    finally:
        lm.model.config.block_size = 32
    return out.sequences[0].tolist()[:len(theirs)], theirs


def test_fast_dllm_v2_loads_as_shifted_block_causal_qwen2(lm):
    e = fixture_expected("fast_dllm_v2")
    assert detect_family(FIXTURES / "fast_dllm_v2").name == "fast_dllm_v2"
    net = lm.model
    assert type(net).__name__ == "DiffusionQwen2Model"
    assert (net.config.attention, net.config.block_size, net.config.logits_shift) == ("block_causal", 32, 1)
    assert lm.tokenizer.mask_token == "|<MASK>|" and lm.tokenizer.eos_token == "<|im_end|>"
    cfg = lm.sampler_config
    assert (cfg.name, cfg.threshold, cfg.sub_block, cfg.first_commit) == ("threshold", 0.9, 8, "block_start")
    net.config.logits_shift = 0  # the fixture's logits are forward's own (unshifted) rows
    try:
        with torch.no_grad():
            assert relative(net(e["input_ids"]).logits, e["logits_b32"]) <= 1e-5
            net.config.block_size = 8
            assert relative(net(e["input_ids"]).logits, e["logits_b8"]) <= 1e-5
    finally:
        net.config.logits_shift, net.config.block_size = 1, 32


def test_fast_dllm_v2_stop_case_matches(lm):
    ours, theirs = _decode(lm, "stop")
    assert ours == theirs


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c != "stop"])
def test_fast_dllm_v2_decoding_matches_generate_token_for_token(lm, case):
    ours, theirs = _decode(lm, case)
    assert ours == theirs


@pytest.mark.slow
@pytest.mark.parametrize("case", ["default", "long_prompt"])
def test_fast_dllm_v2_decoding_without_a_cache_is_the_same(lm, case):
    ours, theirs = _decode(lm, case, use_cache="none")
    assert ours == theirs
