"""ReMDM: remasking sampler for masked diffusion that can revise committed tokens (Wang et al. 2025,
"Remasking discrete diffusion models with inference-time scaling").

MDLM's posterior never touches an unmasked token. ReMDM uses a different reverse process with the
same marginals q(x_s | x0): a clean token is remasked with probability σ_t, and a masked token
unmasks a little faster to compensate. With α_t = α(t), α_s = α(s), s < t, per position::

    x_t = v (unmasked):  q(x_s = v) = 1 − σ_t,    q(x_s = MASK) = σ_t
    x_t = MASK:          q(x_s = y) = (α_s − (1 − σ_t) α_t) / (1 − α_t) · p_θ(x0 = y | x_t)
                         q(x_s = MASK) = (1 − α_s − σ_t α_t) / (1 − α_t)

valid for 0 ≤ σ_t ≤ σ_max = min(1, (1 − α_s) / α_t). σ_t = 0 is exactly MDLM's ancestral step. The
strategies of the paper::

    cap:      σ_t = min(η, σ_max)          (ReMDM-cap)
    rescale:  σ_t = η · σ_max              (ReMDM-rescale, 0 ≤ η ≤ 1)

Remasking is switched on only while ``t_off ≤ t ≤ t_on`` (default: always), in the spirit of
ReMDM-loop's middle phase (we keep the time grid; the paper also freezes α there). At the last step
s = 0 we have α_s = 1, so σ_max = 0 and every [MASK] is filled: no mask is left.

Temperature / top-k / top-p act on p_θ(x0 | x_t).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import ConfigError
from ..registry import register
from .base import Sampler, SamplerConfig, StepOutput
from .draws import draw_clean_at, step_uniforms


@dataclass
class ReMDMConfig(SamplerConfig):
    name: str = "remdm"
    #: how σ_t is chosen from η: cap (σ = min(η, σ_max)) or rescale (σ = η · σ_max)
    strategy: Literal["cap", "rescale"] = "cap"
    #: η of the strategy
    eta: float = 0.02
    #: remask only while t_off <= t <= t_on
    t_on: float = 1.0
    t_off: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.eta < 0 or (self.strategy == "rescale" and self.eta > 1):
            raise ConfigError(f"sampler.eta={self.eta} must be >= 0 (and <= 1 for strategy=rescale)")
        if not 0.0 <= self.t_off <= self.t_on <= 1.0:
            raise ConfigError(f"sampler.t_off={self.t_off}, t_on={self.t_on} must satisfy 0 <= t_off <= t_on <= 1")


@register("sampler", "remdm")
class ReMDMSampler(Sampler):
    config_class = ReMDMConfig
    #: the noisy positions must be known: an absorbing graph (masked, block, sedd_absorb)
    requires = {"graph": "absorbing"}
    revises = True

    def sigma_t(self, a_t: torch.Tensor, m_s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """σ_t [B] float64 from α_t, 1 − α_s and t [B] (σ_max = (1 − α_s) / α_t)."""
        cfg = self.config
        sigma_max = (m_s / a_t.clamp_min(1e-12)).clamp(0.0, 1.0)
        sigma = torch.clamp(sigma_max, max=cfg.eta) if cfg.strategy == "cap" else cfg.eta * sigma_max
        on = (t >= cfg.t_off) & (t <= cfg.t_on)
        return torch.where(on, sigma, torch.zeros_like(sigma))

    def step(self, logits, t, s, x_t, generator=None):
        """Per position (module docstring), with every probability in float64 from the schedule
        (m = 1 − α): a clean token is remasked w.p. σ_t; a [MASK] unmasks w.p.
        (m_t − m_s + σ_t α_t) / m_t. Both decisions are network-free; tokens are drawn only where a
        [MASK] unmasks."""
        t, s = self.rows(t, x_t), self.rows(s, x_t)
        a_t, m_t = self.process.survival(t)  # [B]
        _, m_s = self.process.survival(s)
        sigma = self.sigma_t(a_t, m_s, t)  # [B]
        denom = m_t.clamp_min(1e-12)
        unmask = ((m_t - m_s + sigma * a_t) / denom).clamp_min(0.0)  # [B]
        stay_masked = ((m_s - sigma * a_t) / denom).clamp_min(0.0)
        p_unmask = unmask / (unmask + stay_masked).clamp_min(1e-300)
        noise = self.process.is_noise(x_t)  # [B, L]
        u = step_uniforms(x_t, 2, generator)  # [B, L, 2]: (move?, token)
        remask = ~noise & (u[..., 0] < sigma[:, None])
        leave = noise & (u[..., 0] < p_unmask[:, None])
        x_s = x_t.masked_fill(remask, self.process.mask_id)
        x_s[leave] = draw_clean_at(self.process, logits, leave, u[..., 1], self.filter)
        return StepOutput(x_s=x_s)
