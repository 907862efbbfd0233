"""The entropy-bound sampler (textdiff/samplers/entropy_bound.py): its acceptance rule by hand, and the
law it samples with the exact denoiser of tests/test_sampler_oracle.py. (The sampler contract suite,
tests/test_sampler_contract.py, runs it on the masked, block and uniform processes.)"""
import pytest
import torch

import textdiff
from textdiff.errors import ConfigError, IncompatibleError
from test_sampler_oracle import draw, masked_setup, tv_distance


def sampler(process_name="uniform", **fields):
    process = textdiff.build_process(process_name, vocab_size=6, mask_id=5)
    return textdiff.build_sampler({"name": "entropy_bound", **fields}, process)


def test_accepts_the_largest_prefix_whose_sum_minus_max_stays_under_the_bound():
    smp = sampler(entropy_bound=0.1)
    h = torch.tensor([[0.05, 0.3, 0.01, 0.02, 0.5], [0.2, 0.9, 0.4, 0.3, 0.7]], dtype=torch.float64)
    everyone = torch.ones(2, 5, dtype=torch.bool)
    # row 0, sorted 0.01 0.02 0.05 0.3 0.5: Σ before = 0, .01, .03, .08, .38 -> the first four
    # row 1: only the lowest (at least one is always accepted)
    assert smp.accepted(h, everyone).tolist() == [[True, True, True, True, False], [True, False, False, False, False]]
    some = torch.tensor([[True, False, True, True, True], [False, True, False, False, True]])
    # non-candidates are neither accepted nor counted
    assert smp.accepted(h, some).tolist() == [[True, False, True, True, True], [False, False, False, False, True]]


def test_uniform_step_renoises_what_it_does_not_accept():
    """On a uniform process the accepted positions take the draw, the others a fresh uniform token;
    a peaked position (entropy ~0) is always accepted with its argmax."""
    smp = sampler(entropy_bound=1e-6)
    smp.set_timesteps(4)
    logits = torch.zeros(64, 5, 6)
    logits[:, 2, 3] = 60.0  # position 2: certain
    x_t = torch.zeros(64, 5, dtype=torch.long)
    t, s = torch.full((64,), 1.0, dtype=torch.float64), torch.full((64,), 0.75, dtype=torch.float64)
    out = smp.step(logits, t, s, x_t, [torch.Generator().manual_seed(i) for i in range(64)])
    assert bool((out.x_s[:, 2] == 3).all())
    others = out.x_s[:, [0, 1, 3, 4]]
    assert len(set(others.flatten().tolist())) == 6  # uniform redraws over all six tokens


def test_eb_sampler_reproduces_the_law_and_the_bound_controls_the_error():
    """γ → 0: one token per step from the exact conditionals, in an entropy order that depends on the
    state only: the joint law exactly. γ large: every token at once from its marginal: far from it."""
    tight, _ = draw(masked_setup, {"name": "entropy_bound", "entropy_bound": 1e-9}, steps=8)
    loose, _ = draw(masked_setup, {"name": "entropy_bound", "entropy_bound": 100.0}, steps=8)
    assert tight.nfe == 4  # one [MASK] unmasked per call, L = 4
    assert tv_distance(tight.sequences) <= 0.03
    assert tv_distance(loose.sequences) > 0.2 and loose.nfe == 1


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="t_max and sampler.t_min"):
        sampler(t_max=0.8)
    with pytest.raises(ConfigError, match="entropy_bound"):
        sampler(entropy_bound=0.0)
    with pytest.raises(ConfigError, match="stability_threshold and"):
        sampler(confidence_threshold=0.1)
    with pytest.raises(IncompatibleError, match="works with"):
        textdiff.build_sampler("entropy_bound", textdiff.build_process("sedd_uniform", vocab_size=6))


def test_temperature_schedule_is_linear_over_the_steps():
    smp = sampler(t_max=0.8, t_min=0.4)
    smp.set_timesteps(4)
    temps = [float(smp.temperature(t)) for t, _ in smp.pairs()]
    assert temps == pytest.approx([0.8, 0.7, 0.6, 0.5])
