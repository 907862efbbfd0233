"""Score entropy discrete diffusion: SEDD (Lou et al. 2024), on the absorbing and the uniform graph.

The forward process is the CTMC dp_t/dt = σ'(t) Q p_t with graph Q:

* ``sedd_absorb``: every token jumps to [MASK] at rate σ' (q(x_t | x0) as in the masked process);
* ``sedd_uniform``: every token jumps to each of the V states at rate σ'/V (as in UDLM).

The network's output is read as log concentration ratios ``log s_θ(x_t)_y ≈ log p_t(x_t^{l←y}) / p_t(x_t)``
for the one-token changes y at each position (``log_score``; the entry at y = x_t is 0 by definition).
On the absorbing graph the output is scaled as in SEDD: at a masked position
log s_y = logit_y − log(V − 1) − log(e^σ − 1), so a time-free network can represent the exact
ratios s_y = α/(1 − α) · p(x0 = y | x_t) and training starts near the right scale.

The loss is the diffusion-weighted denoising score entropy (DWDSE), with K(a) = a (log a − 1)::

    loss_l = Σ_{y ≠ x_t} Q_t(y → x_t) · [ s_θ,y − r_y log s_θ,y + K(r_y) ],   r_y = q_t(y | x0) / q_t(x_t | x0)

Each bracket is the Bregman divergence of a ↦ a log a between r and s (≥ 0, zero iff s = r), so
E_t Σ_l loss_l + prior_loss is an upper bound on −log p(x0), and with the exact ratios it is tight.

Absorbing graph, masked position (Q(y → M) = σ', r_{x0} = α/(1 − α), r_y = 0 otherwise), with
l̃ = logit − log(V − 1) and w(t) = −α'/(1 − α) = σ' α/(1 − α)::

    loss_l = w(t) · [ Σ_{y ≠ M} exp(l̃_y) − 1 − l̃_{x0} ]      (≥ w · (−log softmax(l̃)_{x0}), the MDLM loss)

Uniform graph (Q(y → x) = σ'/V; ρ = (1 − α)/(V α + 1 − α)): if x_t = x0, r_y = ρ for every y ≠ x_t;
otherwise r_{x0} = 1/ρ and r_y = 1 for the other V − 2 states. The sums are done in closed form.

Sampling (read by the Euler / analytic samplers in :mod:`textdiff.samplers`):

* ``reverse_rate(logits, x_t, t)`` [B, L, V]: R_θ(x_t → y) = Q_t(y → x_t) s_θ,y for y ≠ x_t and
  −Σ of those at y = x_t, per unit of decreasing time. Euler / tau-leaping step from t to s:
  p(x_s = y) = [y = x_t] + (t − s) R_θ(x_t → y) (clamp at 0, renormalise).
* ``staggered_score(logits, x_t, t, s)`` [B, L, V]: exp(−(σ_t − σ_s) Q) s_θ(x_t), i.e. the ratios
  p_s(y)/p_t(x_t) one step back (SEDD Thm. 4.2).
* ``transp_transition(x_t, t, s)`` [B, L, V]: q(x_t | x_s = y) as a function of y.
* ``analytic_probs(logits, x_t, t, s)`` [B, L, V] (float64, rows sum to 1): the Tweedie τ-leaping step
  p(x_s = y | x_t) ∝ staggered_score_y · transp_transition_y (negative entries clamped to 0); exact for
  one token when the ratios are exact. At s = 0 the [MASK] column is dropped (SEDD's final denoising
  step). ``reverse_probs`` returns the same thing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import IncompatibleError
from ..registry import register
from .base import ForwardProcess, ProcessConfig, upcast
from .masked import MaskedProcess
from .uniform import UniformProcess


def score_entropy(log_s: torch.Tensor, r: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_y weight_y · [s_y − r_y log s_y + K(r_y)], K(a) = a (log a − 1), over the last dim.

    log_s, r, weight: [..., V] (r ≥ 0, K(0) = 0). Zero iff s = r where weight > 0, positive elsewhere.
    """
    k = torch.where(r > 0, r * (torch.log(r.clamp_min(1e-300)) - 1), torch.zeros_like(r))
    term = log_s.exp() - torch.where(r > 0, r * log_s, torch.zeros_like(r)) + k
    return (weight * term).sum(-1)


@dataclass
class ScoreEntropyConfig(ProcessConfig):
    name: str = "sedd_absorb"


@dataclass
class SEDDAbsorbConfig(ScoreEntropyConfig):
    name: str = "sedd_absorb"
    #: read the network's output as SEDD's ``scale_by_sigma`` model does,
    #: log s_y = logit_y − log(V − 1) − log(e^σ − 1) (True, SEDD's released models); False: the
    #: output is log s itself (a SEDD model trained with ``model.scale_by_sigma: False``)
    scale_by_sigma: bool = True


@dataclass
class SEDDUniformConfig(ScoreEntropyConfig):
    name: str = "sedd_uniform"


class ScoreEntropyProcess(ForwardProcess):
    """Shared SEDD machinery; subclasses fix the graph (module docstring)."""

    config_class = ScoreEntropyConfig
    parameterization = "score"
    gives_posterior = True  # the Tweedie step (``analytic_probs``)
    gives_rates = True

    def _a(self, t, x):
        """α(t) per token [B, L, 1] in float64 (1 at t <= 0: the data, see ``survival``)."""
        return self.survival(self.per_token(t, x).double())[0][..., None]

    def _m(self, t, x):
        """1 − α(t) per token [B, L, 1] in float64, cancellation-free (0 at t <= 0)."""
        return self.survival(self.per_token(t, x).double())[1][..., None]

    def _tau(self, t, s, x):
        """α_t / α_s = exp(−(σ_t − σ_s)) per token [B, L, 1] (float64)."""
        return self._a(t, x) / self._a(s, x).clamp_min(1e-300)

    def score(self, logits, x_t, t):
        """s_θ(x_t) [B, L, V] (float64), 1 at y = x_t."""
        return self.log_score(logits, x_t, t).double().exp()

    def reverse_probs(self, logits, x_t, t, s):
        """The analytic (Tweedie) step, see ``analytic_probs``."""
        return self.analytic_probs(logits, x_t, t, s)

    def analytic_probs(self, logits, x_t, t, s):
        """p(x_s | x_t) ∝ staggered_score · transp_transition [B, L, V] (float64, rows sum to 1)."""
        probs = self.staggered_score(logits, x_t, t, s).clamp_min(0.0) * self.transp_transition(x_t, t, s)
        return probs / probs.sum(-1, keepdim=True).clamp_min(1e-300)


@register("process", "sedd_absorb")
class SEDDAbsorb(ScoreEntropyProcess):
    """SEDD on the absorbing graph (all tokens flow to [MASK])."""

    config_class = SEDDAbsorbConfig
    needs_mask_token = True
    graph = "absorbing"
    corrupt = MaskedProcess.corrupt
    prior = MaskedProcess.prior
    is_noise = MaskedProcess.is_noise
    x0_logits_rows = MaskedProcess.x0_logits_rows  # exp(l̃_y) ∝ exp(logit_y): [MASK] −∞

    def _log_expm1_sigma(self, tt):
        """log(e^σ − 1) = log((1 − α)/α) per token, [...] float64 for times ``tt`` [...]."""
        tt = tt.double()
        return torch.log(self.schedule.mask_rate(tt)) - torch.log(self.alpha(tt))

    def _shifted(self, logits, tt):
        """l̃ = log s + log(e^σ − 1) [..., V], [MASK] column −∞; ``tt`` [...] the times of the rows.

        scale_by_sigma (SEDD's output transform): l̃ = logit − log(V − 1), the same for every t;
        otherwise the logits are log s and l̃ = logit + log(e^σ − 1)."""
        lg = upcast(logits)
        if self.config.scale_by_sigma:
            lg = lg - math.log(self.vocab_size - 1)
        else:
            lg = lg + self._log_expm1_sigma(tt)[..., None].to(lg.dtype)
        return lg.index_fill(-1, torch.tensor([self.mask_id], device=lg.device), float("-inf"))

    def log_score(self, logits, x_t, t):
        """log s_θ(x_t) [B, L, V]: l̃_y − log(e^σ − 1) at masked positions, y ≠ [MASK]; 0 at y = x_t;
        −∞ for the (unused) changes of a clean token."""
        tt = self.per_token(t, x_t)
        lg = self._shifted(logits, tt) - self._log_expm1_sigma(tt)[..., None].to(upcast(logits).dtype)
        masked = (x_t == self.mask_id)[..., None]
        out = torch.where(masked, lg, torch.full_like(lg, float("-inf")))
        return out.scatter(-1, x_t[..., None], 0.0)

    def loss(self, logits, x_t, x0, t):
        """[B, L]: w(t) · [Σ_{y≠M} exp(l̃_y) − 1 − l̃_{x0}] at masked positions, 0 elsewhere."""
        tt = self.per_token(t, x0).double()
        w = -self.schedule.dalpha(tt) / self.schedule.mask_rate(tt).clamp_min(1e-30)  # [B, L]
        masked = x_t == self.mask_id
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        out = torch.zeros(x0.shape, dtype=dtype, device=x0.device)
        if not bool(masked.any()):
            return out
        lg = self._shifted(logits[masked], tt[masked])  # [N, V]: only masked rows (clean rows carry no term)
        bracket = torch.logsumexp(lg, -1).exp() - 1 - lg.gather(-1, x0[masked][:, None]).squeeze(-1)
        out[masked] = (w[masked] * bracket.double()).to(dtype)
        return out

    def x0_logits(self, logits, x_t, t):
        """log p_θ(x0 | x_t) [B, L, V]: the normalised ratios at masked positions, carry-over elsewhere."""
        return MaskedProcess.x0_logits(self, logits, x_t, t)

    def reverse_rate(self, logits, x_t, t):
        """R_θ(M → y) = w(t) exp(l̃_y) at masked positions (diagonal −Σ); clean tokens never move."""
        tt = self.per_token(t, x_t).double()
        w = -self.schedule.dalpha(tt) / self.schedule.mask_rate(tt).clamp_min(1e-30)
        rate = self._shifted(logits, tt).double().exp() * w[..., None]
        rate = torch.where((x_t == self.mask_id)[..., None], rate, torch.zeros_like(rate))
        rate.scatter_(-1, x_t[..., None], 0.0)
        return rate.scatter(-1, x_t[..., None], -rate.sum(-1, keepdim=True))

    def mask_exit_scale(self, t: torch.Tensor, s: torch.Tensor, tau_leap: bool) -> torch.Tensor:
        """c [B] float64: in one step t -> s a [MASK] leaves w.p. min(1, c · Σ_{y≠M} exp(logit_y)),
        to y ∝ exp(logit_y). Tau-leaping: c = (t − s) w(t) · k with w = −α'/(1 − α) (the rate row
        above); Tweedie (``analytic_probs``): c = (m_t − m_s) / m_t · k, m = 1 − α; k = exp(l̃ − logit),
        i.e. 1 / (V − 1) with scale_by_sigma, else e^σ(t) − 1.
        At s <= 0 c = +∞: the step to the data leaves no [MASK]. t, s: [B] times."""
        t, s = t.to(torch.float64), s.to(torch.float64)
        _, m_t = self.survival(t)
        _, m_s = self.survival(s)
        if tau_leap:
            c = (t - s) * (-self.schedule.dalpha(t).to(torch.float64)) / m_t.clamp_min(1e-300)
        else:
            c = (m_t - m_s) / m_t.clamp_min(1e-300)
        if self.config.scale_by_sigma:  # l̃ = logit − log(V − 1)
            c = c / (self.vocab_size - 1)
        else:  # l̃ = logit + log(e^σ − 1): the logits are log s
            c = c * torch.exp(self._log_expm1_sigma(t))
        return torch.where(s <= 0, torch.full_like(c, float("inf")), c)

    def staggered_score(self, logits, x_t, t, s):
        """exp(−δQ) s_θ with e^{−δ} = α_t/α_s: y ≠ M gets e^δ s_y = α_s/(1 − α_t) exp(l̃_y); the
        [MASK] entry gets 1 − (α_s − α_t)/(1 − α_t) Σ_y exp(l̃_y). Clean positions: e^δ at x_t."""
        a_s, m_t, m_s = self._a(s, x_t), self._m(t, x_t), self._m(s, x_t)
        e = self._shifted(logits, self.per_token(t, x_t)).double().exp()
        stag = e * a_s / m_t.clamp_min(1e-300)
        stag[..., self.mask_id] = (1 - (m_t - m_s) / m_t.clamp_min(1e-300) * e.sum(-1, keepdim=True))[..., 0]
        clean = x_t != self.mask_id
        keep = torch.zeros_like(stag).scatter(-1, x_t[..., None], 1.0 / self._tau(t, s, x_t))
        return torch.where(clean[..., None], keep, stag)

    def transp_transition(self, x_t, t, s):
        """q(x_t | x_s = y): from a clean y, stay with α_t/α_s, mask with 1 − α_t/α_s; M stays M."""
        tau = self._tau(t, s, x_t)
        V = self.vocab_size
        masked = (x_t == self.mask_id)[..., None]
        from_masked = (1 - tau).expand(*x_t.shape, V).clone()
        from_masked[..., self.mask_id] = 1.0
        stay = F.one_hot(x_t, V).double() * tau
        return torch.where(masked, from_masked, stay)

    def analytic_probs(self, logits, x_t, t, s):
        probs = super().analytic_probs(logits, x_t, t, s)
        if bool((self.per_token(s, x_t, torch.float64) <= 0).all()):  # final step to the data (s = 0): no [MASK] may remain
            masked = x_t == self.mask_id
            probs[..., self.mask_id] = torch.where(masked, 0.0, probs[..., self.mask_id])
            probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-300)
        return probs


@register("process", "sedd_uniform")
class SEDDUniform(ScoreEntropyProcess):
    """SEDD on the uniform graph (every token may jump to any other)."""

    config_class = SEDDUniformConfig
    graph = "uniform"
    corrupt = UniformProcess.corrupt
    prior = UniformProcess.prior
    prior_loss = UniformProcess.prior_loss

    def log_score(self, logits, x_t, t):
        """log s_θ(x_t) [B, L, V]: the raw logits, with 0 at y = x_t."""
        return upcast(logits).scatter(-1, x_t[..., None], 0.0)

    def loss(self, logits, x_t, x0, t):
        """[B, L] DWDSE on the uniform graph, summed in closed form (module docstring)."""
        V = self.vocab_size
        tt = self.per_token(t, x0).double()
        a = self.alpha(tt)
        weight = -self.schedule.dalpha(tt) / (V * a)  # σ'/V
        m = self.schedule.mask_rate(tt)  # 1 − α
        rho = (m / (V * a + m)).clamp_min(1e-300)
        ls = self.log_score(logits, x_t, t)  # [B, L, V], 0 at x_t
        sum_s = (torch.logsumexp(ls, -1).exp() - 1).double()  # Σ_{y≠x_t} s_y
        sum_l = ls.sum(-1).double()  # Σ_{y≠x_t} log s_y
        l_x0 = ls.gather(-1, x0[..., None]).squeeze(-1).double()
        same = x_t == x0
        k_rho = rho * (torch.log(rho) - 1)
        inv = 1 / rho
        k_inv = inv * (-torch.log(rho) - 1)
        when_same = sum_s - rho * sum_l + (V - 1) * k_rho
        when_diff = sum_s - sum_l - (inv - 1) * l_x0 + k_inv - (V - 2)
        out = weight * torch.where(same, when_same, when_diff)
        return out.to(torch.float64 if ls.dtype == torch.float64 else torch.float32)

    def x0_logits(self, logits, x_t, t):
        """log p_θ(x0 | x_t) [B, L, V] recovered from the ratios: softmax(log s) estimates
        p_t(x_t^l = · | x_t^{−l}) = α q(x0 = · | x_t^{−l}) + (1 − α)/V; invert (clamped at 0), then
        multiply by q_t(x_t | x0) and renormalise."""
        V = self.vocab_size
        a = self._a(t, x_t)
        pt = torch.softmax(self.log_score(logits, x_t, t).double(), -1)
        loo = ((pt - (1 - a) / V) / a.clamp_min(1e-300)).clamp_min(0.0)
        post = loo * (a * F.one_hot(x_t, V).double() + (1 - a) / V)
        post = post / post.sum(-1, keepdim=True).clamp_min(1e-300)
        return torch.log(post).to(upcast(logits).dtype)

    def reverse_rate(self, logits, x_t, t):
        """R_θ(x_t → y) = (σ'(t)/V) s_θ,y for y ≠ x_t; −Σ at y = x_t. [B, L, V] float64."""
        tt = self.per_token(t, x_t).double()
        rate = self.score(logits, x_t, t) * (self.schedule.dsigma(tt) / self.vocab_size)[..., None]
        rate.scatter_(-1, x_t[..., None], 0.0)
        return rate.scatter(-1, x_t[..., None], -rate.sum(-1, keepdim=True))

    def staggered_score(self, logits, x_t, t, s):
        """exp(−δQ) s_θ = e^δ s_y + (1 − e^δ) (Σ_z s_z)/V, with e^{−δ} = α_t/α_s and s_{x_t} = 1."""
        tau = self._tau(t, s, x_t)
        sc = self.score(logits, x_t, t)
        return sc / tau + (1 - 1 / tau) * sc.sum(-1, keepdim=True) / self.vocab_size

    def transp_transition(self, x_t, t, s):
        """q(x_t | x_s = y) = (α_t/α_s) [y = x_t] + (1 − α_t/α_s)/V."""
        tau = self._tau(t, s, x_t)
        return tau * F.one_hot(x_t, self.vocab_size).double() + (1 - tau) / self.vocab_size

    def is_noise(self, x_t):
        raise IncompatibleError(
            f"process {self.config.name!r} cannot tell noisy from clean tokens; confidence samplers need an absorbing process (masked, sedd_absorb)"
        )
