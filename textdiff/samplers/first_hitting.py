"""First-hitting sampling for masked diffusion (Zheng et al. 2024, "Masked diffusion models are
secretly time-agnostic masked models and exploit inaccurate categorical sampling").

In absorbing diffusion every masked token unmasks at an independent random time. Given n masked
tokens at time t, a single token stays masked until s < t with probability
(1 − α(s)) / (1 − α(t)), so all n stay masked until s with probability ((1 − α(s)) / (1 − α(t)))^n.
The first of them to unmask therefore does so at the time τ solving::

    1 − α(τ) = (1 − α(t)) · u^(1/n),      u ~ U(0, 1)

and it is a uniformly chosen masked position, whose token is drawn from p_θ(x0 | x_t at τ). Each step
makes exactly ONE change, so the chain is exact for an exact denoiser (no two tokens are ever drawn
independently in the same step): this is the exact reverse process, with NFE = number of masked
tokens.

How it fits ``set_timesteps`` / ``pairs`` / ``step``:

* the number of steps is not a knob: a row with n masked positions takes exactly n steps, so
  ``set_timesteps(num_steps)`` only validates ``num_steps`` (the ``steps`` of ``generate()`` is
  ignored; NFE = max over rows of the number of masked positions in the window);
* :meth:`FirstHittingSampler.begin` sees the window x_t [B, L] and draws the first-hitting times of
  every row from the per-row generators: a per-row grid [B, N + 1] =
  ``[τ_1, τ_2, ..., τ_n, 0, ..., 0]`` where N = max_b n_b (rows with fewer masks idle at t = s = 0).
  Step k is evaluated at t = τ_k — the model sees the state just before the k-th unmasking at the
  time it happens — and moves to s = τ_{k+1}. The times matter only to time-conditioned denoisers;
  a time-agnostic (MDLM) denoiser gives the same samples whatever they are.

Since n_k = n − k deterministically, all hitting times can be drawn up front::

    log(1 − α(τ_{k+1})) = log(1 − α(1)) + Σ_{j ≤ k} log(u_j) / (n − j)

Temperature / top-k / top-p act on p_θ(x0 | x_t) of the chosen position.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..categorical import uniform
from ..errors import ConfigError
from ..registry import register
from .base import Sampler, SamplerConfig, StepOutput
from .draws import draw_clean_at


@dataclass
class FirstHittingConfig(SamplerConfig):
    name: str = "first_hitting"


@register("sampler", "first_hitting")
class FirstHittingSampler(Sampler):
    config_class = FirstHittingConfig
    uses_steps = False  # a row with n masked positions takes exactly n steps
    #: the noisy positions must be known: an absorbing graph (masked, block, sedd_absorb)
    requires = {"graph": "absorbing"}

    def set_timesteps(self, num_steps: int, device=None) -> None:
        """Validates ``num_steps`` only: the grid is drawn in :meth:`begin` (one step per masked token)."""
        super().set_timesteps(num_steps, device)
        self.timesteps = None  # begin() must run before pairs()

    def begin(self, x_t, generator=None):
        """Draw the per-row first-hitting times [B, N + 1] for the window x_t [B, L]."""
        noise = self.process.is_noise(x_t)  # [B, L]
        n = noise.sum(1).to(torch.float64)  # [B]
        B, N = x_t.shape[0], int(n.max()) if noise.numel() else 0
        device = x_t.device
        u = uniform((B, max(N, 1)), generator, device)[:, :N]  # [B, N] float64
        k = torch.arange(N, device=device, dtype=torch.float64)
        left = (n[:, None] - k)  # masked tokens before the (k+1)-th hitting
        active = left > 0
        tiny = torch.finfo(torch.float64).tiny
        incr = torch.where(active, torch.log(u.clamp_min(tiny)) / left.clamp_min(1.0), torch.zeros_like(u))
        one = torch.ones(1, dtype=torch.float64, device=device)
        log_m0 = torch.log(self.process.survival(one)[1])  # log(1 − α(1)), float64
        log_m = log_m0 + torch.cumsum(incr, dim=1)  # [B, N] log(1 − α(τ_{k+1}))
        tau = self.process.schedule.t_from_alpha(-torch.expm1(log_m)).double().clamp(0.0, 1.0)
        tau = torch.where(active, tau, torch.zeros_like(tau))
        self.timesteps = torch.cat([tau, torch.zeros(B, 1, dtype=torch.float64, device=device)], dim=1)

    def pairs(self):
        if self.timesteps is None:
            raise ConfigError("first_hitting draws its time grid from the state: call set_timesteps(n) then begin(x_t)")
        return super().pairs()

    def finished(self, x_t):
        return self._no_noise_left(x_t)

    def step(self, logits, t, s, x_t, generator=None):
        """Unmask exactly one uniformly chosen [MASK] per row (rows without one are unchanged).

        Only the chosen position's row of ``logits`` is read: per step O(B L + B V)."""
        noise = self.process.is_noise(x_t)  # [B, L]
        n = noise.sum(1)  # [B]
        u = uniform((x_t.shape[0], 2), generator, x_t.device)  # [B, 2]: (position, token)
        k = torch.minimum((u[:, 0] * n).floor().long(), (n - 1).clamp_min(0))  # the k-th masked position
        pos = (torch.cumsum(noise.long(), 1) <= k[:, None]).sum(1).clamp_max(x_t.shape[1] - 1)  # [B]
        has = n > 0
        rows = torch.arange(x_t.shape[0], device=x_t.device)[has]
        chosen = torch.zeros_like(noise)
        chosen[rows, pos[has]] = True
        x_s = x_t.clone()
        x_s[chosen] = draw_clean_at(self.process, logits, chosen, u[:, 1:].expand(-1, x_t.shape[1]), self.filter)
        return StepOutput(x_s=x_s)
