"""Samplers for processes given by reverse rates or concentration ratios: Euler (tau-leaping) and
analytic (Tweedie) sampling, as in SEDD (Lou et al. 2024) and for uniform-state diffusion.

**Euler / tau-leaping.** The reverse CTMC has rates R_θ(x_t → y) per unit of decreasing time
(``process.reverse_rate(logits, x_t, t)`` [B, L, V], diagonal = −Σ of the row). Holding them fixed
over [s, t] and letting every position jump independently::

    p(x_s^l = y | x_t) = [y = x_t^l] + (t − s) · R_θ(x_t^l → y)

(negative entries clamped to 0, then renormalised). Its error is O(t − s) per step and vanishes as
the number of steps grows (``tests/test_sampler_oracle.py`` shows the TV to the true law shrinking from
2 to 256 steps). With ``final_denoise`` (default, as SEDD's ``denoise=True``) the last step, s = 0,
uses the process's exact one-step posterior instead (``analytic_probs``, else ``reverse_probs``), which
for absorbing graphs fills every remaining [MASK].

**Analytic / Tweedie τ-leaping** (SEDD Thm. 4.2): with exact ratios the one-token posterior is::

    p(x_s^l = y | x_t) ∝ [exp(−(σ_t − σ_s) Q) s_θ(x_t)]_y · exp((σ_t − σ_s) Q)(x_t^l, y)

i.e. ``process.analytic_probs(logits, x_t, t, s)`` (staggered score × transposed transition). It is
exact per token and differs from the true reverse process only by drawing tokens independently.

Temperature / top-k / top-p act on each position's jump targets (these samplers never form
p_θ(x0 | x_t)): the probability of leaving x_t is kept and the choice among the other states is
filtered (``Sampler.filter_transition``); at the defaults they change nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..categorical import sample_categorical
from ..registry import register
from .base import Sampler, SamplerConfig, StepOutput


def tau_leap_probs(rate: torch.Tensor, x_t: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """[B, L, V] float64: δ_{x_t} + dt · R with R = ``rate`` [B, L, V], dt [B]; clamped and renormalised."""
    onehot = F.one_hot(x_t, rate.shape[-1]).bool()
    jump = (dt.double()[:, None, None] * rate.double()).clamp_min(0.0).masked_fill(onehot, 0.0)
    stay = (1.0 - jump.sum(-1, keepdim=True)).clamp_min(0.0)
    probs = jump + onehot.double() * stay
    return probs / probs.sum(-1, keepdim=True)


def _exact_posterior(process, logits, x_t, t, s):
    fn = getattr(process, "analytic_probs", None) or process.reverse_probs
    return fn(logits, x_t, t, s)


@dataclass
class EulerConfig(SamplerConfig):
    name: str = "euler"
    #: the last step (s = 0) uses the exact one-step posterior instead of a tau-leap (SEDD's denoise)
    final_denoise: bool = True


@register("sampler", "euler")
class EulerSampler(Sampler):
    config_class = EulerConfig
    compatible = ("uniform", "sedd_absorb", "sedd_uniform")

    def step(self, logits, t, s, x_t, generator=None):
        t, s = self.rows(t, x_t), self.rows(s, x_t)
        if self.config.final_denoise and bool((s <= 0).all()):
            probs = _exact_posterior(self.process, logits, x_t, t, s)
        else:
            probs = tau_leap_probs(self.process.reverse_rate(logits, x_t, t), x_t, t - s)
        return StepOutput(x_s=sample_categorical(self.filter_transition(probs, x_t), generator))


@dataclass
class AnalyticConfig(SamplerConfig):
    name: str = "analytic"


@register("sampler", "analytic")
class AnalyticSampler(Sampler):
    config_class = AnalyticConfig
    compatible = ("sedd_absorb", "sedd_uniform")

    def finished(self, x_t):
        return False

    def step(self, logits, t, s, x_t, generator=None):
        probs = self.process.analytic_probs(logits, x_t, self.rows(t, x_t), self.rows(s, x_t))
        return StepOutput(x_s=sample_categorical(self.filter_transition(probs, x_t), generator))
