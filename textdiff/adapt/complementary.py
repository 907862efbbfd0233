"""Complementary masks: each row trained with a mask and with its complement (Fast-dLLM v2).

One uniform draw u [B, L] and the mask rate ρ = 1 − α(t) (per row, or per token for blocks) give two
corruptions of the same x0::

    m = [u < ρ] ∧ ¬frozen        x_t  = x0 with m masked
    m̄ = [u ≥ ρ] ∧ ¬frozen        x̄_t = x0 with m̄ masked

so m and m̄ are disjoint and together cover every non-frozen token exactly once: every response
token is in one of the two losses (frozen prompt tokens in neither). m̄ is a mask at rate 1 − ρ.
:func:`complement_of` gives x̄_t for any given draw x_t (a process's own ``corrupt``).

**The weight of the complement.** Write S(m) = Σ_l m_l · (−log p_θ(x0_l | x0 with m masked)). The
masked NELBO, in the variable ρ (−α'(t) dt / (1 − α(t)) = dρ / ρ), is

    NELBO = ∫_{ρ0}^{ρ1} (1/ρ) E_{m ~ Bern(ρ)} [S(m)] dρ,     [ρ0, ρ1] = [1 − α(0), 1 − α(1)],

and the one-row estimate with t ~ U(0, 1) is f = w(t) S(m), w = −α'(t) / (1 − α(t)) (the process's
own loss). Weighting the complement row by the same w(t) times the ratio r = ρ / (1 − ρ),

    ĝ = r · w(t) · S(m̄) = (−α'(t) / α(t)) S(m̄),

gives E[ĝ] = ∫ (1/(1−ρ)) E_{Bern(1−ρ)}[S] dρ = ∫_{1−ρ1}^{1−ρ0} (1/u) E_{Bern(u)}[S] du: the same
integral over the mirrored band. So the pair estimate ½ (f + ĝ) is UNBIASED for the NELBO whenever
the band of mask rates is symmetric, ρ0 + ρ1 = 1: α(0) = 1 and α(1) = 0 (log-linear or cosine with
eps = 0), or a clipped band [β, 1 − β]. With the default eps = 1e-3 the two bands differ by ε at
each end: a bias of order ε·L nats (the same order as the ε the schedule already leaves out).
Block diffusion draws one t per block and sums the blocks' NELBOs, so the same holds block by block.
Under the flat (non-ELBO) weighting the ratio is 1 (Fast-dLLM v2 weights both rows alike).

**Variance.** With a symmetric band f and ĝ have the same law (ρ ↦ 1 − ρ maps the band onto itself),
so Var ½(f + ĝ) = ½ (Var f + Cov(f, ĝ)): lower than the average of two independent rows (same
compute) exactly when Cov(f, ĝ) < 0. For a denoiser that does worse with less context the two are
anti-correlated: a draw that masks much in one row masks little in the other
(``tests/test_adapt_complementary.py`` measures both on an exact denoiser).
"""
from __future__ import annotations

from typing import Literal, Optional

import torch

from ..categorical import Generator, uniform


def _per_token(rate: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Mask rate [B] or [B, L] -> [B, L] float64 on x0's device."""
    rate = torch.as_tensor(rate, device=x0.device).to(torch.float64)
    if rate.dim() == 1:
        rate = rate[:, None]
    return rate.expand(x0.shape)


def complementary_corrupt(x0: torch.Tensor, mask_rate: torch.Tensor, mask_id: int, frozen: Optional[torch.Tensor] = None,
                          generator: Generator = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, x̄_t), each [B, L]: x0 masked where u < ρ, and where u >= ρ (frozen tokens never).

    ``mask_rate`` ρ = 1 − α(t): [B] (one t per row) or [B, L] (per token: one t per block).
    ``generator``: one generator or one per row (:func:`textdiff.categorical.uniform`)."""
    u = uniform(x0.shape, generator, x0.device)  # [B, L] float64
    first = u < _per_token(mask_rate, x0)
    if frozen is not None:
        first &= ~frozen.bool()
    x_t = torch.where(first, torch.full_like(x0, mask_id), x0)
    return x_t, complement_of(x_t, x0, mask_id, frozen)


def complement_of(x_t: torch.Tensor, x0: torch.Tensor, mask_id: int, frozen: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x̄_t [B, L]: x0 masked exactly where ``x_t`` (any draw, e.g. a process's ``corrupt``) is not,
    frozen tokens excepted."""
    other = x_t != mask_id
    if frozen is not None:
        other &= ~frozen.bool()
    return torch.where(other, torch.full_like(x0, mask_id), x0)


def complement_ratio(alpha: torch.Tensor, weighting: Literal["elbo", "flat"] = "elbo") -> torch.Tensor:
    """r = (1 − α) / α (shape of ``alpha``): the complement row's loss times r is unbiased (module
    docstring); 1 under the flat weighting. Infinite where α = 0 (that complement masks nothing)."""
    alpha = torch.as_tensor(alpha, dtype=torch.float64)
    if weighting == "flat":
        return torch.ones_like(alpha)
    return (1 - alpha) / alpha


def pair_nelbo(loss: torch.Tensor, loss_bar: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """½ (loss + r · loss_bar), [B, L]: the per-token NELBO estimate of one complementary pair.

    ``loss`` / ``loss_bar``: the process's per-token losses of the two rows (0 where not masked);
    ``ratio``: :func:`complement_ratio` per row [B] or per token [B, L]."""
    r = torch.as_tensor(ratio, device=loss.device).to(torch.float64)
    if r.dim() == 1:
        r = r[:, None]
    bar = torch.where(loss_bar != 0, r * loss_bar.double(), torch.zeros_like(r))  # 0 · ∞ where nothing is masked
    return (0.5 * (loss.double() + bar)).to(loss.dtype)
