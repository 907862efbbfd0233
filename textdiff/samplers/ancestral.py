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

Cost per step. Absorbing processes (masked, block): a [MASK] at t is clean at s with probability
(m_t − m_s) / m_t (m = 1 − α; ``unmask_probability``), which does not depend on the network. So
the step first decides, with one uniform per position, which positions unmask, then draws their
tokens from p̃_θ(x0 | x_t): only those rows of the logits are read (in float64), and a step in which
nothing unmasks costs O(B L). A reused (cached) step recomputes nothing. Other processes (uniform,
ar) draw every position from the process's own ``reverse_probs``, evaluated row by row in float64
chunks (:func:`~.draws.draw_transition`), never as a [B, L, V] float64 tensor; the uniform graph
(with or without temperature / top-k / top-p) by the row kernel of :mod:`.uniform_rows`. The kernel
follows the process's declared ``graph`` (it serves x0-parameterised processes only).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..registry import register
from .base import Sampler, SamplerConfig, StepOutput
from .draws import draw_clean_at, draw_transition, step_uniforms
from .uniform_rows import udlm_posterior_step


@dataclass
class AncestralConfig(SamplerConfig):
    name: str = "ancestral"
    #: reuse the last logits when x_t did not change and the model is not time-conditioned (MDLM caching)
    cache_unchanged: bool = True


@register("sampler", "ancestral")
class AncestralSampler(Sampler):
    config_class = AncestralConfig
    #: the posterior p_θ(x_s | x_t) read from logits of p_θ(x0 | x_t)
    requires = {"parameterization": "x0", "gives_posterior": True}

    @property
    def skips_unchanged(self) -> bool:
        return self.config.cache_unchanged and not self.process.time_dependent

    def finished(self, x_t):
        return self._no_noise_left(x_t)

    def step(self, logits, t, s, x_t, generator=None):
        t, s = self.rows(t, x_t), self.rows(s, x_t)
        graph = self.process.graph
        if graph == "absorbing":  # where tokens appear does not depend on the network
            u = step_uniforms(x_t, 2, generator)  # [B, L, 2]: (unmask?, token) per position
            leave = self.process.is_noise(x_t) & (u[..., 0] < self.process.unmask_probability(t, s)[:, None])  # [B, L]
            x_s = x_t.clone()
            x_s[leave] = draw_clean_at(self.process, logits, leave, u[..., 1], self.filter)
            return StepOutput(x_s=x_s)
        if graph == "uniform":  # UDLM's posterior: one float64 pass per row; filters act on p0 first
            cfg = self.config
            x0_filter = self.filter if self.filter.active else None
            top_k = (cfg.top_k, cfg.temperature) if cfg.top_k is not None and cfg.top_p >= 1.0 and cfg.temperature > 0 else None
            top_p = (cfg.temperature, cfg.top_p) if cfg.top_k is None and cfg.top_p < 1.0 and cfg.temperature > 0 else None
            u3 = step_uniforms(x_t, 3, generator)
            return StepOutput(x_s=udlm_posterior_step(self.process, logits, x_t, t, s, u3, x0_filter=x0_filter,
                                                      x0_top_k=top_k, x0_nucleus=top_p))
        u = step_uniforms(x_t, 1, generator)[..., 0]
        return StepOutput(x_s=draw_transition(self._posterior, logits, x_t, t, s, u))

    def _posterior(self, logits, x_t, t, s):
        """p_θ(x_s | x_t) of a chunk [c, 1, V] with the filters applied to p_θ(x0 | x_t) first."""
        lg = self.process.x0_logits(logits, x_t, t)
        return self.process.reverse_probs(self.filter(lg) if self.filter.active else lg, x_t, t, s)
