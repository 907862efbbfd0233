"""Multi-block (pipelined) decoding, ``multi_block``: its contract beyond the shared suite, and d3LLM's
multi-block decoders (LLaDA and Dream networks) token for token on the fixtures made by hao-ai-lab's
own code (tests/fixtures/published/make_d3llm.py)."""
from __future__ import annotations

import pytest
import torch

import textdiff
from published_llm_helpers import FIXTURES, fixture_expected, load_fixture, relative
from textdiff.generation import generate
from textdiff.models.published import detect_family
from test_sampler_contract import MASK, N, PROMPTS, V, tiny_model

D3LLM_CHAT = {"threshold": 0.5, "block_add_threshold": 0.1, "decoded_token_threshold": 0.95}
D3LLM_LOOSE = {"threshold": 1.2, "block_add_threshold": 0.25, "decoded_token_threshold": 0.5}
D3LLM_SEQUENTIAL = {"threshold": 1.2, "block_add_threshold": 1.0, "decoded_token_threshold": 1.0}


def _spec(**fields):
    return {"name": "multi_block", "temperature": 0.0, **fields}


def test_with_thresholds_one_it_is_block_wise_decoding():
    """add = activate = 1: one block at a time, the same tokens as generate(block_size=4) with the
    single-block rule, on a batch with prompts of different lengths."""

    process = textdiff.build_process("masked", vocab_size=V, mask_id=MASK)
    model = tiny_model("masked")
    rule = {"threshold": 1.0, "block_add_threshold": 1.0, "decoded_token_threshold": 1.0}
    one_window = generate(model, process, _spec(multi_block=4, **rule), PROMPTS, max_new_tokens=N, steps=N)
    block_wise = generate(model, process, _spec(**rule), PROMPTS, max_new_tokens=N, steps=N, block_size=4)
    assert torch.equal(one_window.sequences, block_wise.sequences)


def test_the_next_block_starts_before_the_current_one_is_finished():
    process = textdiff.build_process("masked", vocab_size=V, mask_id=MASK)
    states = []
    out = generate(tiny_model("masked"), process, _spec(multi_block=4, threshold=0.0, block_add_threshold=0.0,
                                                        decoded_token_threshold=1.0),
                   [[1, 2, 3]], max_new_tokens=N, steps=N, callback=lambda info: states.append(info.x[0, 3:].clone()))
    overlapped = [s for s in states if bool((s[:4] == MASK).any()) and bool((s[4:] != MASK).any())]
    assert overlapped, "no step committed in block 2 while block 1 still had a [MASK]"
    assert not bool((out.sequences == MASK).any())
    sequential = generate(tiny_model("masked"), process, _spec(multi_block=4, threshold=0.0, block_add_threshold=1.0,
                                                               decoded_token_threshold=1.0),
                          [[1, 2, 3]], max_new_tokens=N, steps=N)
    assert sequential.nfe > out.nfe  # pipelining saves steps: each step commits in two blocks


@pytest.mark.parametrize("family,name", [("d3llm_llada", "llada"), ("d3llm_dream", "dream")])
def test_d3llm_loads_through_the_llada_and_dream_paths_with_exact_logits(family, name):
    """d3LLM's checkpoints are LLaDA-8B / Dream-7B networks (DiffuCoder and Dream-Coder are Dream-shaped too)."""
    e = fixture_expected(family)
    assert detect_family(FIXTURES / family).name == name
    lm = load_fixture(family)
    with torch.no_grad():
        assert relative(lm.model(e["input_ids"]).logits, e["logits"]) <= 1e-5


def _d3llm(family, case, fields):
    lm, e = load_fixture(family), fixture_expected(family)
    out = generate(lm.model, lm.process, _spec(multi_block=16, mask_logit="keep", **fields), e["prompt"].tolist(), max_new_tokens=64,
                   steps=64, stop_at_eos=False)
    return out, e


@pytest.mark.slow
def test_d3llm_llada_multi_block_decoding_matches_token_for_token():
    out, e = _d3llm("d3llm_llada", "multi_block_loose", D3LLM_LOOSE)
    assert out.sequences[0].tolist() == e["multi_block_loose"].tolist()
    assert out.nfe == int(e["multi_block_loose_nfe"])


@pytest.mark.slow
@pytest.mark.parametrize("family,case,fields", [("d3llm_llada", "multi_block_chat", D3LLM_CHAT),
                                                ("d3llm_llada", "multi_block_sequential", D3LLM_SEQUENTIAL),
                                                ("d3llm_dream", "multi_block_loose", D3LLM_LOOSE)])
def test_d3llm_multi_block_decodings_match_token_for_token(family, case, fields):
    out, e = _d3llm(family, case, fields)
    assert out.sequences[0].tolist() == e[case].tolist()
    assert out.nfe == int(e[case + "_nfe"])
