"""Uniform-state diffusion: D3PM-uniform (Austin et al. 2021) in continuous time, UDLM (Schiff et al. 2024).

Forward process: each token independently keeps its value with probability α(t) and is otherwise
redrawn uniformly from the V states (itself included)::

    q(x_t | x0) = Cat( α_t · onehot(x0) + (1 − α_t) / V · 1 )

It is the CTMC with forward rate −α'/(α V) = σ'/V from every state to every other state.

The network's logits give x_θ = p_θ(x0 | x_t) (a softmax, no carry-over: every token may be noise).
Write x̄ = V α_t onehot(x0) + (1 − α_t) 1 and x̄_θ = V α_t x_θ + (1 − α_t) 1, both [B, L, V] and
each summing to V; let i = x_t^l. The reverse posterior (UDLM's) plugs the soft x_θ into the exact
one-step posterior q(x_s | x_t, x0)::

    p_θ(x_s = y | x_t = i) = q(x_t = i | x_s = y) · q(x_s = y | x_θ) / q(x_t = i | x_θ)
    q(x_t = i | x_s = y)  = α_{t|s} [i = y] + (1 − α_{t|s}) / V,        α_{t|s} = α_t / α_s
    q(x_s = y | x_θ)      = α_s x_θ,y + (1 − α_s) / V

so its reverse rate is R_θ(i → y) = (σ'(t) / V) · x̄_θ,y / x̄_θ,i. The CTMC NELBO (Campbell et al. 2022)
per position, Σ_{y ≠ i} [R_θ − R log R_θ + R log R − R] with the true conditional rate
R(i → y | x0) = (σ'/V) x̄_y / x̄_i, sums in closed form because Σ_y x̄_y = Σ_y x̄_θ,y = V::

    loss_l = −α'(t) / (V α(t)) · [ V / x̄_θ,i − V / x̄_i
                                   − Σ_{y ≠ i} (x̄_y / x̄_i) · log( x̄_θ,y x̄_i / (x̄_θ,i x̄_y) ) ]

(UDLM's Eq. for the continuous-time NELBO; the bracket is a Bregman divergence, hence ≥ 0, and it is
0 iff x̄_θ ∝ x̄ on the states y ≠ i.) The exact denoiser in this parameterisation is the
leave-one-out posterior x_θ = q(x0^l | x_t^{−l}); it makes the bound tight up to the prior term.
The prior is Uniform(V); ``prior_loss`` = KL(q(x_1 | x0) ‖ Uniform) is > 0 when α(1) > 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..categorical import Generator, uniform
from ..registry import register
from .base import ForwardProcess, ProcessConfig, cross_entropy, upcast


@dataclass
class UniformConfig(ProcessConfig):
    name: str = "uniform"
    #: the training loss: "nelbo" (UDLM's continuous-time bound, the default and what evaluation reports)
    #: or "cross_entropy" (−log p_θ(x0 | x_t) at every position, corrupted or not: DiffusionGemma's SFT
    #: loss as NeMo defines it; a trained-on surrogate, not a bound)
    loss: str = "nelbo"

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in ("nelbo", "cross_entropy"):
            from ..errors import ConfigError

            raise ConfigError(f"process.loss={self.loss!r}; use 'nelbo' or 'cross_entropy'")


@register("process", "uniform")
class UniformProcess(ForwardProcess):
    """UDLM: uniform-state diffusion with the closed-form continuous-time NELBO (module docstring)."""

    config_class = UniformConfig
    graph = "uniform"
    gives_posterior = True
    gives_rates = True

    def corrupt(self, x0, t, frozen=None, generator: Generator = None):
        """x_t [B, L]: keep x0 with probability α, else a uniform draw over all V states."""
        a = self.alpha(self.per_token(t, x0))  # [B, L]
        u = uniform(x0.shape, generator, x0.device, dtype=torch.float32)
        noise = torch.floor(uniform(x0.shape, generator, x0.device) * self.vocab_size).long()
        noise = noise.clamp_max(self.vocab_size - 1)
        redraw = u >= a
        if frozen is not None:
            redraw &= ~frozen
        return torch.where(redraw, noise, x0)

    def prior(self, shape, device=None, generator: Generator = None):
        """x_1 ~ Uniform(V) [B, L]."""
        u = uniform(tuple(shape), generator, device)
        return torch.floor(u * self.vocab_size).long().clamp_max(self.vocab_size - 1)

    def prior_loss(self, x0):
        """KL(q(x_1 | x0) ‖ Uniform(V)) per token [B, L] (the same for every x0)."""
        one = torch.ones((), dtype=torch.float64)
        a1, m1 = float(self.alpha(one)), float(self.schedule.mask_rate(one))
        V = self.vocab_size
        hit, miss = a1 + m1 / V, m1 / V
        kl = hit * math.log(hit * V) + ((V - 1) * miss * math.log(miss * V) if miss > 0 else 0.0)
        return torch.full(x0.shape, kl, dtype=torch.float32, device=x0.device)

    def x0_logits(self, logits, x_t, t):
        """log p_θ(x0 | x_t) [B, L, V]: a plain log-softmax (no carry-over: any token may be noise)."""
        return torch.log_softmax(upcast(logits), dim=-1)

    def loss(self, logits, x_t, x0, t):
        """[B, L] closed-form NELBO integrand (module docstring), computed in log space; with
        ``loss = "cross_entropy"`` the plain −log p_θ(x0 | x_t) instead.

        With a = α(t): log x̄_θ = logaddexp(log(V a) + log x_θ, log(1 − a)); x̄ has only two values,
        V a + 1 − a at x0 and 1 − a elsewhere.
        """
        V = self.vocab_size
        lg = upcast(logits)
        if self.config.loss == "cross_entropy":
            return cross_entropy(logits.flatten(0, 1), x0.flatten()).view(x0.shape)  # [B, L]
        tt = self.per_token(t, x0).double()  # per-position scalars in float64 (1 − α near t = 0)
        a = self.alpha(tt)[..., None]  # [B, L, 1]
        weight = -self.schedule.dalpha(tt)[..., None] / (V * a)  # σ'/V
        lo = self.schedule.mask_rate(tt)[..., None].clamp_min(1e-30)  # x̄_y = 1 − α for y ≠ x0
        hi = V * a + lo  # x̄_{x0}
        logp = torch.log_softmax(lg, dim=-1)  # [B, L, V]
        log_xbt = torch.logaddexp(torch.log(V * a).to(lg.dtype) + logp, torch.log(lo).to(lg.dtype).expand_as(logp))
        log_xbt_i = log_xbt.gather(-1, x_t[..., None])  # log x̄_θ,i [B, L, 1]
        diff = log_xbt - log_xbt_i  # [B, L, V] log(x̄_θ,y / x̄_θ,i), zero at y = i
        sum_diff = diff.sum(-1, keepdim=True).double()
        d_x0 = diff.gather(-1, x0[..., None]).double()
        same = (x_t == x0)[..., None]  # [B, L, 1]
        xb_i = torch.where(same, hi, lo)  # x̄_i
        # Σ_{y≠i} (x̄_y / x̄_i) log(x̄_θ,y / x̄_θ,i), with x̄_y = lo except x̄_{x0} = hi
        cross = (lo * sum_diff + torch.where(same, 0.0, (hi - lo) * d_x0)) / xb_i
        # Σ_{y≠i} (x̄_y / x̄_i) log(x̄_i / x̄_y): (V − 1) equal terms if i = x0, one term (y = x0) if not
        log_ratio = torch.log(hi) - torch.log(lo)
        ent = torch.where(same, (V - 1) * (lo / hi) * log_ratio, -(hi / lo) * log_ratio)
        bracket = V * torch.exp(-log_xbt_i.double()) - V / xb_i - cross - ent
        return (weight * bracket).squeeze(-1).to(torch.float32 if lg.dtype != torch.float64 else lg.dtype)

    def reverse_probs(self, logits, x_t, t, s):
        """p_θ(x_s | x_t) [B, L, V] (float64, rows sum to 1): UDLM's posterior (module docstring)."""
        V = self.vocab_size
        a_t, m_t = (v[..., None] for v in self.survival(self.per_token(t, x_t, torch.float64)))  # [B, L, 1]
        a_s, m_s = (v[..., None] for v in self.survival(self.per_token(s, x_t, torch.float64)))
        a_ts = a_t / a_s.clamp_min(1e-300)
        jump = (m_t - m_s) / a_s.clamp_min(1e-300)  # 1 − α_t/α_s without cancellation
        p0 = self.x0_logits(logits, x_t, t).double().exp()  # [B, L, V]
        q_s = a_s * p0 + m_s / V  # q(x_s = y | x_θ)
        onehot = torch.nn.functional.one_hot(x_t, V).double()
        q_t_given_s = a_ts * onehot + jump / V  # q(x_t = i | x_s = y) as a function of y
        probs = q_t_given_s * q_s
        return probs / probs.sum(-1, keepdim=True)

    def reverse_rate(self, logits, x_t, t):
        """R_θ(x_t → y) = (σ'(t)/V) · x̄_θ,y / x̄_θ,x_t for y ≠ x_t; the x_t entry is −Σ of the others.
        [B, L, V] per unit of (decreasing) time, for Euler / tau-leaping samplers."""
        V = self.vocab_size
        tt = self.per_token(t, x_t)
        a = self.alpha(tt).double()[..., None]
        p0 = self.x0_logits(logits, x_t, t).double().exp()
        xbt = V * a * p0 + (1 - a)
        rate = (self.schedule.dsigma(tt).double()[..., None] / V) * xbt / xbt.gather(-1, x_t[..., None])
        rate.scatter_(-1, x_t[..., None], 0.0)
        return rate.scatter(-1, x_t[..., None], -rate.sum(-1, keepdim=True))
