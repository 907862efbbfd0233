"""The policy loss: clipped surrogate (PPO / GRPO), KL to a reference, and the numbers to log
(KL, clip fractions, mean ratio, and the entropy of p_θ that the log-prob estimators return).

With log-ratio δ = log π_θ − log π_old (per token for diffu-GRPO, per sequence for the ELBO
objective), ratio r = e^δ and advantage A, the surrogate to MINIMISE is::

    ℓ = −min( r · A,  clip(r, 1 − ε, 1 + ε_high) · A )

At r = 1 (the first of the μ inner updates, where π_θ = π_old) its gradient is −A ∇ log π_θ: the
REINFORCE gradient of the advantage-weighted log-probability. A ratio outside the clip range on the
side the advantage pushes it gets no gradient (``clip_ratio`` counts those terms:
low = r < 1 − ε with A < 0, high = r > 1 + ε_high with A > 0, TRL's definitions).

KL to the reference policy (β > 0), with d = log π_ref − log π_θ (Schulman's estimators; y ~ π_θ)::

    k3 = e^d − d − 1   (≥ 0, unbiased for KL(π_θ || π_ref); GRPO, d1)
    k2 = d² / 2        (≥ 0, biased, lower variance; ESPO)

Token-level terms (diffu-GRPO) are averaged as ``loss_type`` says (TRL's names), with m the
completion mask [B, N] and N_max = ``max_completion_length``::

    grpo:    mean_b ( Σ_l ℓ_bl m_bl / Σ_l m_bl )          (per-sequence mean: length-biased)
    bnpo:    Σ ℓ m / Σ m                                  (this batch's tokens)
    dr_grpo: Σ ℓ m / (B · N_max)                           (a constant: Dr. GRPO)
    dapo:    Σ ℓ m / num_items                             (all tokens of the global batch: every
                                                            process and accumulation step; = bnpo
                                                            when ``num_items`` is not given)

The ELBO objective has one term per sequence with δ = (ELBO_θ − ELBO_old) / |y| (ESPO's per-token
normalisation, TRL's ``importance_sampling_level="sequence"``), likewise d for the KL; the terms are
averaged over the counted sequences (``num_items`` = their global count; ``loss_type`` does not apply).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import ConfigError


@dataclass
class PolicyLoss:
    loss: torch.Tensor  # scalar to minimise (differentiable)
    kl: float  # mean KL estimate (0 when β = 0)
    clip_ratio_low: float  # share of terms clipped below (r < 1 − ε, A < 0)
    clip_ratio_high: float  # share of terms clipped above (r > 1 + ε_high, A > 0)
    clip_ratio: float  # low + high ("region" clip ratio)
    ratio_mean: float  # mean r over the counted terms
    entropy: float = float("nan")  # mean entropy of p_θ at the scored positions (from the estimator), when given

    def metrics(self) -> dict:
        return {"kl": self.kl, "clip_ratio/low_mean": self.clip_ratio_low, "clip_ratio/high_mean": self.clip_ratio_high,
                "clip_ratio/region_mean": self.clip_ratio, "ratio_mean": self.ratio_mean, "entropy": self.entropy}


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-term KL(π_θ || π_ref) estimate from log-probs of samples of π_θ (module docstring)."""
    d = ref_logp - logp
    if estimator == "k3":
        return torch.expm1(d) - d
    if estimator == "k2":
        return 0.5 * d * d
    raise ConfigError(f"kl_estimator={estimator!r}; use 'k3' or 'k2'")


def clipped_surrogate(log_ratio: torch.Tensor, advantages: torch.Tensor, low: float, high: float):
    """(ℓ, clipped_low, clipped_high, r): the per-term loss −min(rA, clip(r)A) and its clip flags;
    ``advantages`` broadcasts against ``log_ratio`` ([B] against [B, N]: pass A[:, None])."""
    r = torch.exp(log_ratio)
    term = torch.minimum(r * advantages, torch.clamp(r, low, high) * advantages)
    with torch.no_grad():
        clipped_low = (r < low) & (advantages < 0)
        clipped_high = (r > high) & (advantages > 0)
    return -term, clipped_low, clipped_high, r


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Σ x·m / Σ m as a float (0 when nothing counts)."""
    m = mask.to(x.dtype)
    return float((x * m).sum() / m.sum().clamp_min(1))


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, max_completion_length: Optional[int] = None,
              num_items: Optional[float] = None) -> torch.Tensor:
    """Token terms [B, N] -> the scalar loss as ``loss_type`` says (module docstring)."""
    m = mask.to(per_token.dtype)
    total = (per_token * m).sum()
    if loss_type == "grpo":
        return ((per_token * m).sum(1) / m.sum(1).clamp_min(1)).mean()
    if loss_type == "bnpo" or (loss_type == "dapo" and num_items is None):
        return total / m.sum().clamp_min(1)
    if loss_type == "dapo":
        return total / max(float(num_items), 1.0)
    if loss_type == "dr_grpo":
        if not max_completion_length:
            raise ConfigError("loss_type='dr_grpo' divides by max_completion_length; give it")
        return total / (per_token.shape[0] * max_completion_length)
    raise ConfigError(f"loss_type={loss_type!r}; use grpo, bnpo, dr_grpo or dapo")


def _summary(loss, kl_terms, weight, lo, hi, r, entropy=None) -> PolicyLoss:
    w = weight.to(r.dtype)
    return PolicyLoss(loss=loss, kl=0.0 if kl_terms is None else masked_mean(kl_terms.detach(), w),
                      clip_ratio_low=masked_mean(lo.to(r.dtype), w), clip_ratio_high=masked_mean(hi.to(r.dtype), w),
                      clip_ratio=masked_mean((lo | hi).to(r.dtype), w), ratio_mean=masked_mean(r.detach(), w),
                      entropy=float("nan") if entropy is None else masked_mean(entropy.detach().to(r.dtype), w))


def token_policy_loss(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                      old_logp: Optional[torch.Tensor] = None, ref_logp: Optional[torch.Tensor] = None,
                      epsilon: float = 0.2, epsilon_high: Optional[float] = None, beta: float = 0.0,
                      kl_estimator: str = "k3", loss_type: str = "dapo", max_completion_length: Optional[int] = None,
                      num_items: Optional[float] = None, entropy: Optional[torch.Tensor] = None) -> PolicyLoss:
    """diffu-GRPO's loss from per-token log-probs [B, N] (old: None = the current ones detached, i.e.
    μ = 1), advantages [B] and the completion mask [B, N]; ``entropy`` [B, N] (the estimator's) is
    averaged over the mask for the metrics."""
    old = logp.detach() if old_logp is None else old_logp
    high = epsilon if epsilon_high is None else epsilon_high
    per, lo, hi, r = clipped_surrogate(logp - old, advantages[:, None], 1.0 - epsilon, 1.0 + high)
    kl = None
    if beta:
        if ref_logp is None:
            raise ConfigError("beta > 0 needs the reference policy's log-probs (ref_logp)")
        kl = kl_estimate(logp, ref_logp, kl_estimator)
        per = per + beta * kl
    loss = aggregate(per, mask, loss_type, max_completion_length, num_items)
    return _summary(loss, kl, mask, lo, hi, r, entropy)


def sequence_policy_loss(elbo: torch.Tensor, advantages: torch.Tensor, num_tokens: torch.Tensor, *,
                         old_elbo: Optional[torch.Tensor] = None, ref_elbo: Optional[torch.Tensor] = None,
                         row_mask: Optional[torch.Tensor] = None, epsilon: float = 0.2,
                         epsilon_high: Optional[float] = None, beta: float = 0.0, kl_estimator: str = "k3",
                         num_items: Optional[float] = None, entropy: Optional[torch.Tensor] = None) -> PolicyLoss:
    """The ELBO objective's loss from per-sequence ELBOs [B], advantages [B] and |y| [B];
    ``row_mask`` [B] drops rows (e.g. truncated completions); ``entropy`` [B] for the metrics."""
    n = num_tokens.to(elbo.dtype).clamp_min(1)
    old = elbo.detach() if old_elbo is None else old_elbo
    high = epsilon if epsilon_high is None else epsilon_high
    per, lo, hi, r = clipped_surrogate((elbo - old) / n, advantages, 1.0 - epsilon, 1.0 + high)
    kl = None
    if beta:
        if ref_elbo is None:
            raise ConfigError("beta > 0 needs the reference policy's ELBOs (ref_elbo)")
        kl = kl_estimate(elbo / n, ref_elbo / n, kl_estimator)
        per = per + beta * kl
    w = torch.ones_like(per) if row_mask is None else row_mask.to(per.dtype)
    count = w.sum() if num_items is None else torch.tensor(float(num_items), dtype=per.dtype)
    loss = (per * w).sum() / count.clamp_min(1)
    return _summary(loss, kl, w, lo, hi, r, entropy)
