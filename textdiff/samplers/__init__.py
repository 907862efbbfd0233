"""Samplers. Importing this package registers every built-in sampler; the registry imports it on the
first lookup of a built-in name (:data:`textdiff.registry.BUILTINS`).

=================  ==========================================  =====================================
name               serves (what it requires of the process)    what it is
=================  ==========================================  =====================================
``ancestral``      masked, block, uniform, ar (x0 posterior)   exact posterior p_θ(x_s | x_t) (MDLM,
                                                               UDLM); cached-NFE when t is not fed
``first_hitting``  masked, block, sedd_absorb (absorbing)      one exact unmasking per step at the
                                                               sampled first-hitting time (Zheng+24)
``euler``          uniform, sedd_absorb, sedd_uniform (rates)  tau-leaping on reverse rates (SEDD)
``analytic``       sedd_absorb, sedd_uniform (scores)          Tweedie τ-leaping (SEDD Thm. 4.2)
``confidence``     masked, block, sedd_absorb                  LLaDA / MaskGIT / Dream orderings with
                                                               a commit schedule
``threshold``      masked, block, sedd_absorb                  Fast-dLLM: commit all with p > τ
``remdm``          masked, block, sedd_absorb                  ReMDM remasking: revises tokens
``entropy_bound``  masked, block, uniform (x0 logits)          EB sampler (Ben-Hamu+25): accept the
                                                               lowest-entropy prefix, renoise the rest;
                                                               DiffusionGemma's released decoding
``editing``        masked, block, sedd_absorb                  LLaDA 2.1 token editing: threshold
                                                               commits + token-to-token edits
``multi_block``    masked, block, sedd_absorb                  d3LLM / D2F pipelined blocks: the next
                                                               block starts before this one is done
=================  ==========================================  =====================================

Every sampler takes ``temperature``, ``top_k`` and ``top_p`` (see ``SamplerConfig``) and draws in
float64. Exactness with an exact denoiser is checked in ``tests/test_sampler_oracle.py``.

A step costs what can change in it (issue 16, ``benchmarks/sampling.py``): absorbing processes decide
first, without the network, which positions leave [MASK] and read only those rows of the logits;
the confidence samplers read each masked row once; uniform-graph samplers read each row once and
draw over V only where a token jumps (:mod:`.uniform_rows`). Top-p takes its cut from a histogram of
the weights' bit patterns, never a sort (:mod:`.nucleus`). The last step (s = 0) goes to the data
(α_s = 1) for every schedule, so no [MASK] is left.
"""
from .ancestral import AncestralConfig, AncestralSampler
from .base import Sampler, SamplerConfig, StepOutput, build_sampler, default_sampler
from .confidence import ConfidenceConfig, ConfidenceSampler
from .threshold import ThresholdConfig, ThresholdSampler
from .editing import EditingConfig, EditingSampler
from .multi_block import MultiBlockConfig, MultiBlockSampler
from .euler import AnalyticConfig, AnalyticSampler, EulerConfig, EulerSampler
from .first_hitting import FirstHittingConfig, FirstHittingSampler
from .entropy_bound import EntropyBoundConfig, EntropyBoundSampler
from .remdm import ReMDMConfig, ReMDMSampler

__all__ = [
    "Sampler", "SamplerConfig", "StepOutput", "build_sampler", "default_sampler",
    "AncestralConfig", "AncestralSampler",
    "ConfidenceConfig", "ConfidenceSampler", "ThresholdConfig", "ThresholdSampler",
    "EulerConfig", "EulerSampler", "AnalyticConfig", "AnalyticSampler",
    "FirstHittingConfig", "FirstHittingSampler",
    "ReMDMConfig", "ReMDMSampler", "EditingConfig", "EditingSampler",
    "MultiBlockConfig", "MultiBlockSampler",
    "EntropyBoundConfig", "EntropyBoundSampler",
]
