"""Noise schedules.

A schedule maps time t in [0, 1] to the survival probability α(t): the chance that a token is still
uncorrupted at time t. α(0) ≈ 1 (clean data), α(1) ≈ 0 (pure noise), α decreasing. The total noise
is σ(t) = −log α(t), so α = exp(−σ) and α'(t) = −σ'(t) α(t).

Every schedule gives ``alpha``, ``dalpha`` (α'), ``sigma`` and ``dsigma`` (σ') on tensors of any shape.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from .registry import register


@dataclass
class ScheduleConfig:
    name: str = "loglinear"


class Schedule(ABC):
    """α(t) and its derivative; σ(t) = −log α(t) follows."""

    config_class = ScheduleConfig

    def __init__(self, config: ScheduleConfig):
        self.config = config

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Survival probability α(t) in [0, 1]."""

    @abstractmethod
    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        """Time derivative α'(t) ≤ 0."""

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Total noise σ(t) = −log α(t)."""
        return -torch.log(self.alpha(t))

    def dsigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise rate σ'(t) = −α'(t) / α(t)."""
        return -self.dalpha(t) / self.alpha(t)

    def t_from_alpha(self, alpha: torch.Tensor) -> torch.Tensor:
        """Inverse of α(t), by bisection (subclasses may give a closed form)."""
        lo = torch.zeros_like(alpha)
        hi = torch.ones_like(alpha)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = self.alpha(mid) > alpha  # α decreases: still too early
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return (lo + hi) / 2


@dataclass
class LogLinearConfig(ScheduleConfig):
    name: str = "loglinear"
    eps: float = 1e-3  # α(1) = eps, so the prior is reached up to eps


@register("schedule", "loglinear")
class LogLinear(Schedule):
    """MDLM / SEDD log-linear schedule: α(t) = 1 − (1 − ε) t, σ(t) = −log(1 − (1 − ε) t).

    For masked diffusion the ELBO weight −α'/(1 − α) becomes 1/t.
    """

    config_class = LogLinearConfig

    def alpha(self, t):
        return 1 - (1 - self.config.eps) * t

    def dalpha(self, t):
        return torch.full_like(t, -(1 - self.config.eps))

    def t_from_alpha(self, alpha):
        return (1 - alpha) / (1 - self.config.eps)
