"""Masked (absorbing-state) diffusion: MDLM (Sahoo et al. 2024), MD4 (Shi et al. 2024).

Forward process: each token independently becomes [MASK] with probability 1 − α(t) and otherwise
stays itself; once masked it stays masked::

    q(x_t | x0) = α(t) · onehot(x0) + (1 − α(t)) · onehot(MASK)

SUBS parameterisation: the network never predicts [MASK] (its logit is −∞) and positions that are
not masked copy their input ("carry-over"). Under SUBS the continuous-time NELBO is::

    NELBO(x0) = E_{t ~ U(0,1)} E_{x_t} [ Σ_l  −α'(t) / (1 − α(t)) · [x_t^l = MASK] · (−log p_θ(x0^l | x_t)) ]

For the log-linear schedule the weight −α'/(1 − α) is 1/t. With the exact denoiser this bound is
tight: it equals −log p(x0) (an average over orders of any-order autoregressive factorisations).
The prior is all-[MASK], so the bound is exact when α(1) = 0 (log-linear with eps = 0, whose weight
1/t stays finite); with α(1) = ε > 0 (the default eps = 1e-3) the integral leaves out the last ε of
mask rates, about ε · Σ_l −log p_θ(x0^l | all masked) nats — the standard MDLM approximation.
``tests/test_processes_oracle.py`` checks the equality with the exact denoiser by enumeration.

Reverse posterior from t to s < t (used by ancestral sampling), for a masked position::

    p(x_s = MASK | x_t) = (1 − α_s) / (1 − α_t)
    p(x_s = v | x_t)    = (α_s − α_t) / (1 − α_t) · p_θ(x0 = v | x_t)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..categorical import Generator, uniform
from ..registry import register
from .base import ForwardProcess, ProcessConfig, cross_entropy, upcast


@dataclass
class MaskedConfig(ProcessConfig):
    name: str = "masked"
    #: "elbo": the NELBO weight −α'/(1 − α) (a true bound); "flat": weight 1 (NOT a bound, for ablations)
    loss_weight: Literal["elbo", "flat"] = "elbo"


@register("process", "masked")
class MaskedProcess(ForwardProcess):
    config_class = MaskedConfig
    graph = "absorbing"
    gives_posterior = True
    needs_mask_token = True
    clean_logits_unused = True  # SUBS: an unmasked token carries over, whatever its logits

    def corrupt(self, x0, t, frozen=None, generator: Generator = None):
        move = 1.0 - self.alpha(self.per_token(t, x0))  # [B, L] probability of masking
        u = uniform(x0.shape, generator, x0.device, dtype=torch.float32)
        masked = u < move
        if frozen is not None:
            masked &= ~frozen
        return torch.where(masked, torch.full_like(x0, self.mask_id), x0)

    def prior(self, shape, device=None, generator: Generator = None):
        return torch.full(tuple(shape), self.mask_id, dtype=torch.long, device=device)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """ELBO weight −α'(t) / (1 − α(t)) (1/t for log-linear), or 1 for the flat ablation."""
        if self.config.loss_weight == "flat":
            return torch.ones_like(t)
        t64 = t.double()  # 1 − α in float64 from a cancellation-free formula: exact weights at small t
        w = -self.schedule.dalpha(t64) / self.schedule.mask_rate(t64).clamp_min(1e-30)
        return w.to(t.dtype)

    def loss(self, logits, x_t, x0, t):
        """[B, L]: weight(t) · [x_t = MASK] · (−log p_θ(x0 | x_t)); cross-entropy only where masked."""
        is_masked = x_t == self.mask_id  # [B, L]
        out = torch.zeros(x0.shape, device=x0.device, dtype=torch.float32)
        if not bool(is_masked.any()):
            return out
        lg = logits[is_masked]  # [N, V] only the masked rows (SUBS: the rest carry over)
        lg[:, self.mask_id] = float("-inf")
        nll = cross_entropy(lg, x0[is_masked])  # [N]
        w = self.weight(self.per_token(t, x0))[is_masked]  # [N]
        out[is_masked] = w * nll
        return out

    def x0_logits(self, logits, x_t, t):
        """SUBS: [MASK] gets −∞; unmasked positions put all mass on their own token. [B, L, V]."""
        lg = upcast(logits).clone()
        lg[..., self.mask_id] = float("-inf")
        logp = torch.log_softmax(lg, dim=-1)
        keep = x_t != self.mask_id  # [B, L]
        if bool(keep.any()):
            carried = torch.full_like(logp[keep], float("-inf"))
            carried.scatter_(-1, x_t[keep][:, None], 0.0)
            logp[keep] = carried
        return logp

    def x0_logits_rows(self, rows, fresh=False):
        """SUBS at masked positions: the [MASK] logit is −∞ (rows [n, V]; in place when ``fresh``)."""
        out = upcast(rows) if fresh and rows.dtype in (torch.float32, torch.float64) else upcast(rows).clone()
        out[:, self.mask_id] = float("-inf")
        return out

    def reverse_probs(self, logits, x_t, t, s):
        """p_θ(x_s | x_t) [B, L, V] (float64): see the module docstring. MDLM's update, with
        m = 1 − α from the schedule in float64: p0 · (m_t − m_s) / m_t, and m_s / m_t at [MASK]."""
        tt, ss = self.per_token(t, x_t, torch.float64), self.per_token(s, x_t, torch.float64)
        _, m_t = self.survival(tt)
        _, m_s = self.survival(ss)
        p0 = self.x0_logits(logits, x_t, t).double().exp()  # [B, L, V]
        probs = p0 * self.unmask_probability(tt, ss)[..., None]
        probs[..., self.mask_id] = torch.where(m_t > 0, m_s / m_t.clamp_min(1e-300), torch.zeros_like(m_t))
        keep = x_t != self.mask_id
        probs[keep] = F.one_hot(x_t[keep], probs.shape[-1]).double()
        return probs

    def is_noise(self, x_t):
        return x_t == self.mask_id
