"""Ancestral sampling with the exact reverse posterior (D3PM / MDLM / UDLM).

At each step draw x_s ~ p_θ(x_s | x_t) = Σ_{x0} q(x_s | x_t, x0) p_θ(x0 | x_t), which the process
gives as ``reverse_probs``. Temperature / top-k / top-p act on p_θ(x0 | x_t) before the posterior.

``cache_unchanged`` (MDLM's cached sampler): when the model ignores t (it is not fed t, or is fed a
constant: ``process.time_input='zero'``) and x_t did not change in a
step, the logits are the same, so the generation loop may reuse them and skip a network call. This
is exact: a denoiser that is not given t is a function of x_t alone, so the reused logits are the
logits the skipped call would have returned, and the draws (which come from the per-row generators in
the same order either way) are identical. ``tests/test_sampler_oracle.py`` checks cached == uncached
token for token and that the cached run uses fewer calls.

For absorbing processes the loop stops once no [MASK] is left (``finished``): every later posterior
is the identity, so the remaining steps could not change anything.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..categorical import sample_categorical
from ..registry import register
from .base import Sampler, SamplerConfig, StepOutput


@dataclass
class AncestralConfig(SamplerConfig):
    name: str = "ancestral"
    #: reuse the last logits when x_t did not change and the model is not time-conditioned (MDLM caching)
    cache_unchanged: bool = True


@register("sampler", "ancestral")
class AncestralSampler(Sampler):
    config_class = AncestralConfig
    compatible = ("masked", "uniform", "ar")

    @property
    def skips_unchanged(self) -> bool:
        return self.config.cache_unchanged and not getattr(self.process, "time_dependent", self.process.time_conditioning)

    def finished(self, x_t):
        return self._no_noise_left(x_t)

    def step(self, logits, t, s, x_t, generator=None):
        filtered = self.filter_logits(self.process.x0_logits(logits, x_t, t))  # [B, L, V]
        probs = self.process.reverse_probs(filtered, x_t, t, s)  # [B, L, V] float64
        x_s = sample_categorical(probs, generator)
        return StepOutput(x_s=x_s)
