"""SDAR / TraDo (Qwen3 block diffusion) against the fixture made by the publishers' own code
(tests/fixtures/published/make_sdar.py): logits, and the sampled decoding token for token under the
same torch seed in the reference-RNG mode (``rng = "torch"``), plus a distributional test of the
default per-row draws. The publisher's top-k defect cases are shown to differ, by design."""
from __future__ import annotations

import pytest
import torch

from published_llm_helpers import FIXTURES, fixture_expected, load_fixture, relative
import textdiff
from textdiff.models.published import detect_family
from textdiff.models.published.sdar import SDAR_DECODING, TRADO_DECODING

BASE = dict(block_length=4, denoising_steps=4, temperature=1.0, top_k=0, top_p=1.0,
            remasking_strategy="low_confidence_dynamic", confidence_threshold=0.85)
# make_sdar.py's CASES: name -> (prompt length, seed, block_diffusion_generate arguments over BASE)
CASES = {
    "sdar_default": (10, 0, dict(gen_length=16)),
    "trado_default": (8, 1, dict(gen_length=16, confidence_threshold=0.9)),
    "static": (10, 2, dict(gen_length=16, remasking_strategy="low_confidence_static")),
    "filtered": (8, 4, dict(gen_length=16, temperature=0.7, top_k=8, top_p=0.9)),
    "block8": (8, 5, dict(gen_length=16, block_length=8, denoising_steps=8, confidence_threshold=0.5)),
    "stop_ids": (8, 6, dict(gen_length=40)),
    "defect_static": (13, 7, dict(gen_length=11, block_length=8, denoising_steps=4,
                                  remasking_strategy="low_confidence_static")),
    "defect_dynamic": (8, 8, dict(gen_length=16, block_length=8, denoising_steps=2, confidence_threshold=0.1)),
}


@pytest.fixture(scope="module")
def lm():
    return load_fixture("sdar")


def _spec(kw):
    if kw["remasking_strategy"] == "low_confidence_static":  # top-k of the confidences, even split
        return {"name": "confidence", "ordering": "confidence", "commit_schedule": "linear", "score_from": "sampling",
                "mask_logit": "keep", "temperature": kw["temperature"], "rng": "torch"}
    return {**SDAR_DECODING, "rng": "torch", "threshold": kw["confidence_threshold"], "temperature": kw["temperature"],
            "top_k": kw["top_k"] or None, "top_p": kw["top_p"]}


def _decode(lm, case):
    """(ours, the publisher's) sequences over the part the publisher decoded ([MASK] after an early stop)."""
    e = fixture_expected("sdar")
    n, seed, over = CASES[case]
    kw = {**BASE, **over}
    block, length = kw["block_length"], kw["gen_length"]
    windows = -(-(n % block + length) // block)  # blocks from the sequence start: the first holds the prompt's tail
    lm.model.config.block_size = block  # the publisher's block_length is also its attention block
    try:
        _, out = lm.generate([e[f"prompt_{n}"][0].tolist()], max_new_tokens=length, sampler=_spec(kw), block_size=block,
                             steps=kw["denoising_steps"] * windows, generator=torch.Generator().manual_seed(seed),
                             stop_at_eos=False, return_output=True)
    finally:
        lm.model.config.block_size = 4
    theirs = e[case].tolist()
    decoded = theirs.index(lm.process.mask_id) if lm.process.mask_id in theirs else len(theirs)
    return out.sequences[0].tolist()[:decoded], theirs[:decoded]


def test_sdar_loads_as_qwen3_block_diffusion_with_exact_logits(lm):
    e = fixture_expected("sdar")
    assert detect_family(FIXTURES / "sdar").name == "sdar"
    net = lm.model
    assert type(net).__name__ == "DiffusionQwen3Model" and (net.config.attention, net.config.block_size) == ("block_causal", 4)
    assert lm.tokenizer.mask_token == "<|MASK|>" and lm.process.mask_id == lm.tokenizer.mask_token_id
    assert (lm.process.config.name, lm.process.block_size) == ("block", 4)
    assert lm.sampler_config.name == "threshold" and lm.sampler_config.threshold == 0.85
    with torch.no_grad():
        assert relative(net(e["input_ids"]).logits, e["logits_block"]) <= 1e-5
        net.config.attention = "bidirectional"  # without generate's mask the network is bidirectional
        try:
            assert relative(net(e["input_ids"]).logits, e["logits_nomask"]) <= 1e-5
        finally:
            net.config.attention = "block_causal"


@pytest.mark.slow
def test_sdar_default_decoding_matches_the_publisher_under_its_seed(lm):
    """block_diffusion_generate's defaults; the 10-token prompt ends inside a block (its tail frozen)."""
    ours, theirs = _decode(lm, "sdar_default")
    assert ours == theirs


@pytest.mark.slow
@pytest.mark.parametrize("case", ["trado_default", "static", "filtered", "block8", "stop_ids"])
def test_sdar_decodings_match_the_publisher_under_its_seed(lm, case):
    assert int(fixture_expected("sdar")[case + "_resampled"]) == 0  # cases the publisher's defect does not touch
    ours, theirs = _decode(lm, case)
    assert ours == theirs


@pytest.mark.slow
@pytest.mark.parametrize("case", ["defect_static", "defect_dynamic"])
def test_the_publishers_top_k_defect_is_not_copied(lm, case):
    """With fewer [MASK]s left than the step's share, the publisher re-samples committed tokens; textdiff
    commits only [MASK]s, so these runs differ (the prompt is kept and no [MASK] is left)."""
    e = fixture_expected("sdar")
    assert int(e[case + "_resampled"]) > 0
    ours, theirs = _decode(lm, case)
    n = CASES[case][0]
    assert ours != theirs and ours[:n] == e[f"prompt_{n}"][0].tolist() and lm.process.mask_id not in ours


def test_trado_decoding_is_sdars_with_its_threshold():
    assert TRADO_DECODING == {**SDAR_DECODING, "threshold": 0.9}


@pytest.mark.parametrize("rng", ["rows", "torch"])
def test_the_draws_follow_the_tempered_softmax(rng):
    """One [MASK] and s = 0: the committed token is a draw from softmax(l / T) ([MASK] kept in the
    softmax, its logit far below): 4000 draws are within 0.05 total variation of it, in both modes."""
    V, M, T, n = 12, 11, 0.7, 4000
    process = textdiff.build_process({"name": "block", "block_size": 1}, vocab_size=V, mask_id=M)
    smp = textdiff.build_sampler({**SDAR_DECODING, "temperature": T, "rng": rng}, process)
    smp.set_timesteps(1)
    logits = torch.randn(1, 1, V, generator=torch.Generator().manual_seed(0)) * 2
    logits[..., M] = -30.0
    x_t = torch.full((n, 1), M)
    x_s = smp.step(logits.expand(n, 1, V).contiguous(), torch.ones(n), torch.zeros(n), x_t,
                   torch.Generator().manual_seed(1)).x_s
    freq = torch.bincount(x_s[:, 0], minlength=V).double() / n
    want = torch.softmax(logits[0, 0].double() / T, -1)
    assert 0.5 * float((freq - want).abs().sum()) < 0.05
