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

Cost per step: on ``sedd_absorb`` a [MASK] leaves with probability min(1, c Σ_y exp(logit_y))
(``mask_exit_scale``) to y ∝ exp(logit_y): one float64 pass over the masked rows, and the draw
only where a token leaves; clean rows are never read. On the uniform graphs every position may
move: :mod:`.uniform_rows` reads each row once per step (float64 chunks) and draws over V only
where a token jumps, with or without the filters.

Temperature / top-k / top-p act on each position's jump targets (these samplers never form
p_θ(x0 | x_t)): the probability of leaving x_t is kept and the choice among the other states is
filtered (:meth:`~.filters.LogitFilter.transition`); at the defaults they change nothing.

The kernel of a step follows the process's declarations: ``graph`` (absorbing / uniform) and
``parameterization`` (x0 logits / SEDD scores) name its one-step law.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..categorical import Buffers, gather_rows, inverse_cdf, normaliser, row_chunks, shifted_weights
from ..registry import register
from .base import Sampler, SamplerConfig, StepOutput
from .draws import draw_rows, draw_transition, step_uniforms
from .uniform_rows import (sedd_uniform_analytic_step, sedd_uniform_tau_leap_step, udlm_posterior_step,
                           udlm_tau_leap_step)


def tau_leap_probs(rate: torch.Tensor, x_t: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """[B, L, V] float64: δ_{x_t} + dt · R with R = ``rate`` [B, L, V], dt [B]; clamped and renormalised."""
    onehot = F.one_hot(x_t, rate.shape[-1]).bool()
    jump = (dt.double()[:, None, None] * rate.double()).clamp_min(0.0).masked_fill(onehot, 0.0)
    stay = (1.0 - jump.sum(-1, keepdim=True)).clamp_min(0.0)
    probs = jump + onehot.double() * stay
    return probs / probs.sum(-1, keepdim=True)


def _absorbing_step(sampler, logits, x_t, scale, generator):
    """x_s [B, L] for SEDD-absorb: a [MASK] leaves w.p. min(1, scale · Σ_y exp(logit_y)) (``scale``
    [B], +∞ = always) to y ∝ exp(logit_y) (filtered); only the masked rows are read."""
    proc = sampler.process
    noise = proc.is_noise(x_t)
    u = step_uniforms(x_t, 2, generator)  # [B, L, 2]: (leave?, token)
    bi, li = noise.nonzero(as_tuple=True)
    x_s = x_t.clone()
    plain = sampler.config.temperature != 0 and not sampler.filter.active
    log_scale = torch.log(scale)  # [B] (+∞ stays +∞, 0 -> −∞)
    bufs = Buffers()
    for sl in row_chunks(bi.shape[0], logits.shape[-1]):
        b, l = bi[sl], li[sl]
        rows = proc.x0_logits_rows(gather_rows(logits, b, l), fresh=True)  # [c, V]
        m, total = normaliser(rows, out=bufs.get("e", rows.shape, rows.dtype, rows.device))  # Σ exp(l) = e^m · total
        log_exit = log_scale[b] + m + torch.log(total)  # log(scale · Σ exp(l))
        leave = u[b, l, 0] < torch.exp(log_exit).clamp_max(1.0)
        if not bool(leave.any()):
            continue
        tok = (inverse_cdf(shifted_weights(rows[leave])[0], u[b, l, 1][leave]) if plain
               else draw_rows(rows[leave], u[b, l, 1][leave], sampler.filter))
        x_s[b[leave], l[leave]] = tok
    return x_s


def _law(process) -> tuple:
    """(graph, parameterization): the declarations that name a process's one-step law."""
    return process.graph, process.parameterization


@dataclass
class EulerConfig(SamplerConfig):
    name: str = "euler"
    #: the last step (s = 0) uses the exact one-step posterior instead of a tau-leap (SEDD's denoise)
    final_denoise: bool = True


@register("sampler", "euler")
class EulerSampler(Sampler):
    config_class = EulerConfig
    requires = {"gives_rates": True}

    def step(self, logits, t, s, x_t, generator=None):
        t, s = self.rows(t, x_t), self.rows(s, x_t)
        final = self.config.final_denoise and bool((s <= 0).all())
        law = _law(self.process)
        if law == ("absorbing", "score"):  # the exact last step and the tau-leap both leave no [MASK] at s = 0
            scale = self.process.mask_exit_scale(t, s, tau_leap=not final)
            return StepOutput(x_s=_absorbing_step(self, logits, x_t, scale, generator))
        # one float64 pass per row, a draw over V only where a token jumps (filtered targets: jump_filter)
        jf = self.filter if self.filter.active else None
        if law == ("uniform", "x0"):  # UDLM
            kernel = udlm_posterior_step if final else udlm_tau_leap_step
            u3 = step_uniforms(x_t, 3, generator)
            return StepOutput(x_s=kernel(self.process, logits, x_t, t, s, u3, jump_filter=jf))
        if law == ("uniform", "score"):  # SEDD-uniform: the last step is the Tweedie step (analytic_probs)
            kernel = sedd_uniform_analytic_step if final else sedd_uniform_tau_leap_step
            u3 = step_uniforms(x_t, 3, generator)
            return StepOutput(x_s=kernel(self.process, logits, x_t, t, s, u3, jump_filter=jf))
        u = step_uniforms(x_t, 1, generator)[..., 0]
        fn = self.process.reverse_probs if final else self._tau_leap  # (score processes: the Tweedie step)
        return StepOutput(x_s=draw_transition(fn, logits, x_t, t, s, u, self.filter))

    def _tau_leap(self, logits, x_t, t, s):
        return tau_leap_probs(self.process.reverse_rate(logits, x_t, t), x_t, t - s)


@dataclass
class AnalyticConfig(SamplerConfig):
    name: str = "analytic"


@register("sampler", "analytic")
class AnalyticSampler(Sampler):
    config_class = AnalyticConfig
    #: the Tweedie step needs the concentration ratios of a score-parameterised process
    requires = {"parameterization": "score"}

    def finished(self, x_t):
        return False

    def step(self, logits, t, s, x_t, generator=None):
        t, s = self.rows(t, x_t), self.rows(s, x_t)
        graph = self.process.graph
        if graph == "absorbing":
            scale = self.process.mask_exit_scale(t, s, tau_leap=False)
            return StepOutput(x_s=_absorbing_step(self, logits, x_t, scale, generator))
        if graph == "uniform":
            u3 = step_uniforms(x_t, 3, generator)
            jf = self.filter if self.filter.active else None
            return StepOutput(x_s=sedd_uniform_analytic_step(self.process, logits, x_t, t, s, u3, jump_filter=jf))
        u = step_uniforms(x_t, 1, generator)[..., 0]
        return StepOutput(x_s=draw_transition(self.process.analytic_probs, logits, x_t, t, s, u, self.filter))
