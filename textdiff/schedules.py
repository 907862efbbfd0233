"""Noise schedules.

A schedule maps time t in [0, 1] to the survival probability α(t): the chance that a token is still
uncorrupted at time t. α(0) ≈ 1 (clean data), α(1) ≈ 0 (pure noise), α decreasing. The total noise
is σ(t) = −log α(t), so α = exp(−σ) and α'(t) = −σ'(t) α(t).

Every schedule gives ``alpha``, ``dalpha`` (α'), ``sigma`` and ``dsigma`` (σ') on tensors of any shape.
Each family registers itself (``@register("schedule", name)``); :func:`build_schedule` turns a name,
mapping or config into a schedule.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from typing import Any

import torch

from .dataclass_io import make_config
from .errors import ConfigError
from .registry import lookup, register
from .signatures import checked_config


@dataclass
class ScheduleConfig:
    name: str = "loglinear"


def build_schedule(spec: Any) -> "Schedule":
    """A schedule from a name (``"loglinear"``), a mapping with ``name`` or a schedule config."""
    cfg = make_config("schedule", spec)
    return lookup("schedule", cfg.name)(cfg)


class Schedule(ABC):
    """α(t) and its derivative; σ(t) = −log α(t) follows."""

    config_class = ScheduleConfig

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        checked_config(cls)  # LogLinearConfig(bad_keyword=...) is a one-line ConfigError

    def __init__(self, config: ScheduleConfig):
        self.config = config

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Survival probability α(t) in [0, 1]."""

    @abstractmethod
    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        """Time derivative α'(t) ≤ 0."""

    def mask_rate(self, t: torch.Tensor) -> torch.Tensor:
        """1 − α(t), the corruption probability; subclasses compute it without cancellation near t = 0."""
        return 1 - self.alpha(t)

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

    def validate(self) -> None:
        if not 0.0 <= self.eps < 1.0:
            raise ConfigError(f"schedule loglinear: eps={self.eps} must be in [0, 1)")


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

    def sigma(self, t):
        return -torch.log1p(-(1 - self.config.eps) * t)

    def mask_rate(self, t):
        return (1 - self.config.eps) * t

    def t_from_alpha(self, alpha):
        return (1 - alpha) / (1 - self.config.eps)


@dataclass
class LinearConfig(ScheduleConfig):
    name: str = "linear"
    sigma_min: float = 0.0  # σ(0); α(0) = exp(−σ_min)
    sigma_max: float = 10.0  # σ(1); α(1) = exp(−σ_max)

    def validate(self) -> None:
        if not 0.0 <= self.sigma_min < self.sigma_max:
            raise ConfigError(f"schedule linear: need 0 <= sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")


class SigmaSchedule(Schedule):
    """A schedule given by its total noise σ(t): α = exp(−σ), 1 − α = −expm1(−σ), α' = −σ' α."""

    @abstractmethod
    def sigma(self, t):
        """Total noise σ(t)."""

    @abstractmethod
    def dsigma(self, t):
        """Noise rate σ'(t)."""

    def alpha(self, t):
        return torch.exp(-self.sigma(t))

    def mask_rate(self, t):
        return -torch.expm1(-self.sigma(t))

    def dalpha(self, t):
        return -self.dsigma(t) * self.alpha(t)


@register("schedule", "linear")
class Linear(SigmaSchedule):
    """Linear total noise (MDLM's "linear"): σ(t) = σ_min + (σ_max − σ_min) t.

    α(t) = exp(−σ(t)), α'(t) = −(σ_max − σ_min) α(t). Limits: α(0) = e^{−σ_min}, α(1) = e^{−σ_max}.
    """

    config_class = LinearConfig

    def sigma(self, t):
        c = self.config
        return c.sigma_min + (c.sigma_max - c.sigma_min) * t

    def dsigma(self, t):
        c = self.config
        return torch.full_like(t, c.sigma_max - c.sigma_min)

    def t_from_alpha(self, alpha):
        c = self.config
        return (-torch.log(alpha) - c.sigma_min) / (c.sigma_max - c.sigma_min)


@dataclass
class CosineConfig(ScheduleConfig):
    name: str = "cosine"
    eps: float = 1e-3  # α(1) = eps

    def validate(self) -> None:
        if not 0.0 <= self.eps < 1.0:
            raise ConfigError(f"schedule cosine: eps={self.eps} must be in [0, 1)")


@register("schedule", "cosine")
class Cosine(Schedule):
    """Cosine schedule (MDLM's "cosine"): α(t) = ε + (1 − ε) cos(π t / 2).

    α'(t) = −(1 − ε) (π / 2) sin(π t / 2). Limits: α(0) = 1, α(1) = ε. Few tokens are corrupted early
    (1 − α ≈ (1 − ε) π² t² / 8), so more of the training budget goes to high noise levels.
    """

    config_class = CosineConfig

    def alpha(self, t):
        eps = self.config.eps
        return eps + (1 - eps) * torch.cos(torch.pi * t / 2)

    def mask_rate(self, t):
        return 2 * (1 - self.config.eps) * torch.sin(torch.pi * t / 4) ** 2  # 1 − cos x = 2 sin²(x/2)

    def dalpha(self, t):
        eps = self.config.eps
        return -(1 - eps) * (torch.pi / 2) * torch.sin(torch.pi * t / 2)

    def t_from_alpha(self, alpha):
        eps = self.config.eps
        return torch.arccos(((alpha - eps) / (1 - eps)).clamp(-1.0, 1.0)) * 2 / torch.pi


@dataclass
class GeometricConfig(ScheduleConfig):
    name: str = "geometric"
    sigma_min: float = 1e-4  # σ(0) (SEDD's uniform graph: 1e-4)
    sigma_max: float = 20.0  # σ(1) (SEDD's uniform graph: 20)

    def validate(self) -> None:
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ConfigError(f"schedule geometric: need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")


@register("schedule", "geometric")
class Geometric(SigmaSchedule):
    """Geometric total noise (SEDD, Lou et al. 2024): σ(t) = σ_min^{1 − t} σ_max^t.

    σ'(t) = σ(t) log(σ_max / σ_min); α(t) = exp(−σ(t)), α'(t) = −σ'(t) α(t).
    Limits: α(0) = e^{−σ_min} ≈ 1 − σ_min (so a NELBO over [0, 1] leaves out a reconstruction term
    of order σ_min), α(1) = e^{−σ_max} ≈ 2e-9 for σ_max = 20.
    """

    config_class = GeometricConfig

    def sigma(self, t):
        c = self.config
        return c.sigma_min ** (1 - t) * c.sigma_max ** t

    def dsigma(self, t):
        c = self.config
        return self.sigma(t) * math.log(c.sigma_max / c.sigma_min)

    def t_from_alpha(self, alpha):
        c = self.config
        return torch.log(-torch.log(alpha) / c.sigma_min) / math.log(c.sigma_max / c.sigma_min)


@dataclass
class PolynomialConfig(ScheduleConfig):
    name: str = "polynomial"
    power: float = 2.0  # w: the mask rate grows like t^w (w = 1 is log-linear)
    eps: float = 1e-3  # α(1) = eps

    def validate(self) -> None:
        if self.power <= 0 or not 0.0 <= self.eps < 1.0:
            raise ConfigError(f"schedule polynomial: need power > 0 and 0 <= eps < 1, got {self.power}, {self.eps}")


@register("schedule", "polynomial")
class Polynomial(Schedule):
    """Polynomial schedule (MD4's "poly"): α(t) = 1 − (1 − ε) t^w.

    α'(t) = −(1 − ε) w t^{w − 1}. Limits: α(0) = 1, α(1) = ε. w > 1 keeps tokens clean longer,
    w < 1 corrupts early. For masked diffusion the ELBO weight −α'/(1 − α) is w / t.
    """

    config_class = PolynomialConfig

    def alpha(self, t):
        c = self.config
        return 1 - (1 - c.eps) * t ** c.power

    def mask_rate(self, t):
        c = self.config
        return (1 - c.eps) * t ** c.power

    def dalpha(self, t):
        c = self.config
        return -(1 - c.eps) * c.power * t ** (c.power - 1)

    def t_from_alpha(self, alpha):
        c = self.config
        return ((1 - alpha) / (1 - c.eps)).clamp_min(0.0) ** (1.0 / c.power)


@dataclass
class ClippedConfig(ScheduleConfig):
    name: str = "clipped"
    beta: float = 0.3  # lowest mask rate 1 − α, at t = 0
    omega: float = 0.8  # highest mask rate 1 − α, at t = 1

    def validate(self) -> None:
        if not 0.0 <= self.beta < self.omega <= 1.0:
            raise ConfigError(
                f"schedule clipped: need 0 <= beta < omega <= 1, got beta={self.beta}, omega={self.omega}"
            )


@register("schedule", "clipped")
class Clipped(Schedule):
    """Clipped linear schedule (BD3-LM, Arriola et al. 2025): the mask rate 1 − α is drawn in [β, ω].

    α(t) = 1 − β − (ω − β) t, α'(t) = −(ω − β). Limits: α(0) = 1 − β, α(1) = 1 − ω.
    With t ~ U(0, 1) this is BD3-LM's mask rate ~ U[β, ω], which lowers the variance of the
    gradient. With β > 0 or ω < 1 the masked NELBO integral covers only the mask rates in [β, ω]:
    it is a training objective, NOT a likelihood bound — evaluate with β = 0, ω = 1 (log-linear).
    """

    config_class = ClippedConfig

    def alpha(self, t):
        c = self.config
        return 1 - c.beta - (c.omega - c.beta) * t

    def mask_rate(self, t):
        c = self.config
        return c.beta + (c.omega - c.beta) * t

    def dalpha(self, t):
        c = self.config
        return torch.full_like(t, -(c.omega - c.beta))

    def t_from_alpha(self, alpha):
        c = self.config
        return ((1 - alpha - c.beta) / (c.omega - c.beta)).clamp(0.0, 1.0)


checked_config(Schedule)  # ScheduleConfig(...) itself
