"""What a process DECLARES is what it does, and ``Sampler.serves`` is the one sampler/process rule.

Samplers, the generation loop, the recipe rules and the evaluation code read the declarations of
:class:`textdiff.processes.base.ForwardProcess` instead of probing the process; these tests hold
every registered process to its declarations, and every recipe / build path to ``Sampler.serves``.
"""
from __future__ import annotations

import pytest
import torch

import textdiff
from textdiff.config import load_recipe
from textdiff.errors import IncompatibleError
from textdiff.processes.base import ForwardProcess, process_class
from textdiff.registry import lookup
from textdiff.samplers.base import default_sampler

V, MASK = 9, 8
PROCESSES = textdiff.available("process")
SAMPLERS = textdiff.available("sampler")


def _raises_incompatible(fn) -> bool:
    try:
        fn()
        return False
    except IncompatibleError:
        return True


@pytest.mark.parametrize("name", PROCESSES)
def test_a_process_does_what_it_declares(name):
    process = textdiff.build_process(name, vocab_size=V, mask_id=MASK)
    cls = type(process)
    assert process_class(name) is cls and process_class(process) is cls and process_class(process.config) is cls
    g = torch.Generator().manual_seed(0)
    x_t = process.corrupt(torch.randint(0, MASK, (2, 4), generator=g), torch.full((2,), 0.7), generator=g)
    logits = torch.randn(2, 4, V, generator=g)
    t, s = torch.full((2,), 0.6), torch.full((2,), 0.3)
    # graph: only an absorbing process can tell the noisy positions, and its noise is the [MASK] token
    assert _raises_incompatible(lambda: process.is_noise(x_t)) == (cls.graph != "absorbing")
    if cls.graph == "absorbing":
        assert torch.equal(process.is_noise(x_t), x_t == MASK) and cls.needs_mask_token
    if cls.graph is None:  # nothing is corrupted
        x0 = torch.randint(0, MASK, (2, 4), generator=g)
        assert torch.equal(process.corrupt(x0, torch.full((2,), 1.0)), x0)
    # the methods behind gives_posterior / gives_rates exist exactly when declared
    assert _raises_incompatible(lambda: process.reverse_probs(logits, x_t, t, s)) == (not cls.gives_posterior)
    assert _raises_incompatible(lambda: process.reverse_rate(logits, x_t, t)) == (not cls.gives_rates)
    if cls.gives_posterior:
        probs = process.reverse_probs(logits, x_t, t, s)
        assert torch.allclose(probs.sum(-1), torch.ones(2, 4, dtype=probs.dtype))
    # parameterization: score processes give the Tweedie step
    assert callable(getattr(process, "analytic_probs", None)) == (cls.parameterization == "score")
    # next-token processes feed a start token and read logits shifted by one
    assert (cls.logits_shift == 1) == (process.start_token is not None) == (not cls.is_diffusion)
    assert (cls.required_attention == "causal") == (not cls.is_diffusion)
    # SUBS carry-over: a clean position's p(x0 | x_t) is its own token whatever the logits
    if cls.clean_logits_unused:
        assert cls.graph == "absorbing"
        clean = ~process.is_noise(x_t)
        other = process.x0_logits(torch.randn(2, 4, V, generator=g), x_t, t)
        assert torch.equal(process.x0_logits(logits, x_t, t)[clean], other[clean])
    # block structure: readable from the config alone, the same as the built process's
    assert cls.config_block_size(process.config) == process.block_size
    assert (process.block_size is not None) == (cls.required_attention == "block_causal")


def test_block_size_comes_from_the_config():
    process = textdiff.build_process({"name": "block", "block_size": 2}, vocab_size=V, mask_id=MASK)
    assert process.block_size == 2 and process_class(process.config).config_block_size(process.config) == 2
    assert textdiff.build_process("masked", vocab_size=V, mask_id=MASK).block_size is None


#: the pairs textdiff has always served (the golden run of issue 29 records each of them)
SERVED = {
    "ancestral": {"masked", "block", "uniform", "ar"},
    "first_hitting": {"masked", "block", "sedd_absorb"},
    "confidence": {"masked", "block", "sedd_absorb"},
    "threshold": {"masked", "block", "sedd_absorb"},
    "remdm": {"masked", "block", "sedd_absorb"},
    "editing": {"masked", "block", "sedd_absorb"},
    "multi_block": {"masked", "block", "sedd_absorb"},
    "euler": {"uniform", "sedd_absorb", "sedd_uniform"},
    "analytic": {"sedd_absorb", "sedd_uniform"},
    "entropy_bound": {"masked", "block", "uniform"},  # x0 logits, no shift (issue 23)
}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_serves_agrees_everywhere_for_every_pair(sampler):
    """For every process: ``serves`` from the class, the config and the built process; building the
    sampler; and validating a recipe all give the same answer (with the same one-line error)."""
    cls = lookup("sampler", sampler)
    for name in PROCESSES:
        process = textdiff.build_process(name, vocab_size=V, mask_id=MASK)
        answers = {cls.serves(name), cls.serves(process.config), cls.serves(process), cls.serves(type(process))}
        assert len(answers) == 1, (sampler, name)
        serves = answers.pop()
        assert serves == (name in SERVED[sampler]), (sampler, name)
        errors = []
        for attempt in (lambda: textdiff.build_sampler(sampler, process),
                        lambda: load_recipe(raw={"process": name, "sampler": sampler})):
            try:
                attempt()
            except IncompatibleError as e:
                errors.append(str(e))
        if serves:
            assert errors == []
        else:
            assert len(errors) == 2 and errors[0] == errors[1], errors
            fits = errors[0].split("it works with: ")[1].split(" (")[0].split(", ")
            assert set(fits) == SERVED[sampler] and f"sampler {sampler!r} cannot serve process {name!r}" in errors[0]


@pytest.mark.parametrize("name", PROCESSES)
def test_the_default_sampler_serves_the_process(name):
    chosen = default_sampler(name)
    assert lookup("sampler", chosen).serves(name)
    assert chosen == ("ancestral" if "ancestral" in {s for s in SERVED if name in SERVED[s]} else "analytic")
    assert load_recipe(raw={"process": name}).sampler.name == chosen


def test_a_new_process_is_served_by_what_it_declares():
    """A process registered by a user gets the samplers its declarations call for, no list to edit."""
    from dataclasses import dataclass

    from textdiff.processes.masked import MaskedConfig, MaskedProcess
    from textdiff.registry import _REGISTRY, register

    @dataclass
    class PlainAbsorbingConfig(MaskedConfig):
        name: str = "test_plain_absorbing"

    class PlainAbsorbing(MaskedProcess):  # declares no posterior: ancestral leaves it (a rule by family name would not)
        config_class = PlainAbsorbingConfig
        gives_posterior = False

    register("process", "test_plain_absorbing")(PlainAbsorbing)
    try:
        served = {s for s in SAMPLERS if lookup("sampler", s).serves("test_plain_absorbing")}
        assert served == {"first_hitting", "confidence", "threshold", "remdm", "entropy_bound", "editing", "multi_block"}
        assert issubclass(PlainAbsorbing, ForwardProcess)
    finally:
        del _REGISTRY["process"]["test_plain_absorbing"]
