"""LLaDA 2.1: the LLaDA 2.0 network with token-editing decoding, against the fixture made by the
publisher's own generate (tests/fixtures/published/make_llada21.py), and the LLaDA 2.2 refusal."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from published_llm_helpers import FIXTURES, fixture_expected, load_fixture, relative
from textdiff.errors import ConfigError
from textdiff.lm import DiffusionLM
from textdiff.models.published import detect_family
from textdiff.models.published import llada21

# fixture case -> (prompt key, generate(block_length, gen_length, ...) as sampler fields); temperature 0
CASES = {
    "signature_default": ("prompt", 32, 64, dict(llada21.SIGNATURE)),
    "quality": ("prompt", 32, 64, dict(llada21.QUALITY)),
    "speed": ("prompt", 32, 64, dict(llada21.SPEED)),
    "loose": ("prompt", 32, 64, {**llada21.QUALITY, "threshold": 0.2, "editing_threshold": 0.3, "max_post_steps": 4}),
    "no_post": ("prompt", 32, 64, {**llada21.QUALITY, "threshold": 0.5, "editing_threshold": 0.2, "max_post_steps": 0}),
    "two_min": ("prompt", 32, 64, {**llada21.QUALITY, "threshold": 0.9, "min_commit": 2}),
    "short_quality": ("short_prompt", 32, 40, dict(llada21.QUALITY)),
    "short_speed": ("short_prompt", 32, 40, dict(llada21.SPEED)),
    "quality_eos_stop": ("prompt", 32, 96, dict(llada21.QUALITY)),
    "speed_eos_stop": ("prompt", 32, 96, dict(llada21.SPEED)),
    "block8_quality": ("prompt", 8, 32, dict(llada21.QUALITY)),
}


@pytest.fixture(scope="module")
def lm():
    return load_fixture("llada21")


def _decode(lm, case, use_cache="exact", **override):
    """(answer tokens through the first EOS, as the publisher returns them; nfe) of DiffusionLM.generate."""
    e = fixture_expected("llada21")
    key, block, length, spec = CASES[case]
    spec = {**spec, **override}
    prompt = e[key][0].tolist()
    eos_stop = case.endswith("eos_stop")  # the publisher's eos_early_stop: stop after the block with EOS
    _, out = lm.generate([prompt], max_new_tokens=length, sampler=spec, block_size=block, return_output=True,
                         stop_at_eos=eos_stop, use_cache=use_cache)
    tail = len(prompt) % block  # blocks counted from the sequence start: the first one holds the prompt's tail
    answer = out.sequences[0, len(prompt):len(prompt) + length].tolist()
    assert out.sequences[0, len(prompt) - tail:len(prompt)].tolist() == prompt[len(prompt) - tail:]
    eos = lm.tokenizer.eos_token_id
    return (answer[: answer.index(eos) + 1] if eos in answer else answer), out.nfe


def test_llada21_loads_on_the_llada2_path_with_logit_parity(lm):
    e = fixture_expected("llada21")
    assert detect_family(FIXTURES / "llada21").name == "llada2"  # the released config.json is 2.0's
    with torch.no_grad():
        logits = lm.model(e["input_ids"]).logits
    assert relative(logits, e["logits"]) <= 1e-5


def _check(lm, case, use_cache="exact"):
    e = fixture_expected("llada21")
    if case == "block8_quality":  # the publisher's block_length also sets its attention blocks
        lm.model.config.block_size = 8
    try:
        tokens, nfe = _decode(lm, case, use_cache)
    finally:
        lm.model.config.block_size = 32
    assert tokens == e[case].tolist()
    assert nfe == int(e[case + "_nfe"])  # the same number of model calls: the same commits and edits per step


@pytest.mark.slow
def test_llada21_editing_decoding_matches_the_publisher_with_edits(lm):
    """The "loose" case: 8 token-to-token edits in the publisher's run, post passes capped at 4."""
    assert int(fixture_expected("llada21")["loose_edits"]) > 0
    _check(lm, "loose")


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c != "loose"])
def test_llada21_every_recorded_decoding_matches_token_for_token(lm, case):
    _check(lm, case)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["quality", "short_speed"])
def test_llada21_decoding_without_the_cache_is_the_same(lm, case):
    _check(lm, case, use_cache="none")


@pytest.mark.slow
def test_llada21_ranks_with_the_mask_logit_in_the_softmax(lm):
    """The normaliser matters: with [MASK] dropped from the softmax (SUBS) the "two_min" case takes a
    different number of steps than the publisher's, which keeps it (``mask_logit = "keep"``)."""
    e = fixture_expected("llada21")
    _, nfe = _decode(lm, "two_min", mask_logit="drop")
    assert nfe != int(e["two_min_nfe"])


def _copy(tmp_path, **changes):
    folder = tmp_path / "llada21"
    shutil.copytree(FIXTURES / "llada21", folder)
    (folder / "expected.safetensors").unlink()
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_dllm_saved_llada21_folder_gets_the_editing_decoding(tmp_path):
    folder = _copy(tmp_path, model_type="llada21_moe")
    assert detect_family(folder).name == "llada21"
    lm = DiffusionLM.from_pretrained(folder, device="cpu")
    cfg = lm.sampler_config
    assert (cfg.name, cfg.threshold, cfg.editing_threshold, cfg.mask_logit) == ("editing", 0.7, 0.5, "keep")
    assert lm.generation_defaults == {"block_size": 32, "blocks_from": "sequence_start"}
    e = fixture_expected("llada21")
    with torch.no_grad():
        assert relative(lm.model(e["input_ids"]).logits, e["logits"]) <= 1e-5


@pytest.mark.parametrize("changes", [{"model_type": "llada22_moe"}, {"architectures": ["LLaDA2_2MoeModelLM"]}])
def test_llada22_is_refused_in_one_line_saying_its_code_is_not_public(tmp_path, changes):
    folder = _copy(tmp_path, **changes)
    with pytest.raises(ConfigError, match="not public") as err:
        DiffusionLM.from_pretrained(folder, device="cpu")
    assert "\n" not in str(err.value) and "LLaDA 2.2" in str(err.value)
