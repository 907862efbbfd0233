"""The objective: one function that corrupts a batch, calls the denoiser once and returns the
per-token NELBO terms (:func:`nelbo_terms`). Training (``training/loop.py``) and evaluation (``eval/``)
both use it, so the number a run reports is the number it optimised.

:func:`estimate_nelbo` is THE likelihood estimator built on it: training validation, ``DiffusionLM.score``
(``textdiff score``) and the harness (:func:`textdiff.eval.elbo.evaluate_likelihood`) all call it, so the
same model, rows, seed and number of t samples give the same number through each. For row r (global
index, ids x0 [L], counted tokens n_r) and K = ``t_samples``::

    NELBO_r = (1/K) Σ_k Σ_l loss(x0, t_{r,k})_l + Σ_l prior_loss_l        (nats)

Times t_{r,k} come from one uniform offset u per row (per block for block diffusion), drawn from the
row's generator ``generator_for(seed, r)``; the corruption at time k from ``generator_for(seed, r, k + 1)``.
So a row's number depends on (seed, r, K) only, not on the batch it shares or the order of rows.

* ``stratified``: t_k = (k + u) / K, one draw in each of K strata (MDLM's low-discrepancy idea, within a row);
* ``antithetic``: pairs (u_j, 1 − u_j) (an odd K's last time is a fresh draw);
* ``iid``: K independent uniforms.

For an autoregressive process (``is_diffusion`` False) the loss is the exact next-token NLL and K = 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .categorical import Generator, generator_for
from .errors import ConfigError


@dataclass
class LossTerms:
    loss: torch.Tensor  # [B, L] NELBO integrand per token (nats), zero where not counted
    mask: torch.Tensor  # [B, L] float: 1 where a token counts
    x_t: torch.Tensor  # [B, L] the corrupted input
    t: torch.Tensor  # [B] or [B, L]

    def mean(self) -> torch.Tensor:
        """Average nats per counted token (the training loss)."""
        return self.loss.sum() / self.mask.sum().clamp_min(1.0)


def nelbo_terms(
    model,
    process,
    x0: torch.Tensor,
    loss_mask: Optional[torch.Tensor] = None,
    t: Optional[torch.Tensor] = None,
    frozen: Optional[torch.Tensor] = None,
    generator: Generator = None,
) -> LossTerms:
    """Corrupt x0 [B, L] at time t (drawn when None), run the denoiser, return the NELBO terms.

    loss_mask [B, L]: tokens that count (padding excluded); frozen [B, L]: positions never
    corrupted (a prompt during SFT). The process may rewrite the model inputs (block diffusion feeds
    ``[x_t ; x0]`` with its own attention mask) through ``process.model_inputs``.
    """
    B = x0.shape[0]
    if t is None:
        t = process.sample_t(B, device=x0.device, generator=generator, seq_len=x0.shape[1])
    x_t = process.corrupt(x0, t, frozen=frozen, generator=generator)
    inputs = process.model_inputs(x_t, x0, t)
    if getattr(getattr(model, "config", None), "reads_clean_context", False):  # DiffusionGemma: encoder + canvases
        inputs.update(clean_ids=x0, context_mask=frozen, generator=generator)
    if process.time_conditioning:
        inputs.setdefault("t", process.network_time(t))  # model_inputs may give its own (block diffusion: [B, 2L])
    logits = model(**inputs).logits
    logits = process.model_logits(logits, x_t)  # [B, L, V]
    loss = process.loss(logits, x_t, x0, t)  # [B, L]
    mask = torch.ones_like(loss) if loss_mask is None else loss_mask.to(loss.dtype)
    if frozen is not None:
        mask = mask * (~frozen).to(loss.dtype)
    return LossTerms(loss=loss * mask, mask=mask, x_t=x_t, t=t)


T_SAMPLING = ("stratified", "antithetic", "iid")


@dataclass
class NelboRows:
    """:func:`estimate_nelbo` of B rows."""

    totals: torch.Tensor  # [B, K] float64: Σ_l loss(x0, t_{r,k})_l (nats) at each of the row's K times
    tokens: torch.Tensor  # [B] float64: counted tokens of each row
    prior: torch.Tensor  # [B] float64: Σ_l prior_loss_l over the counted tokens
    terms: torch.Tensor  # [B, L] float64: each token's loss averaged over the K times (Σ_l terms = totals.mean(1))

    @property
    def nats(self) -> torch.Tensor:
        """[B] NELBO of each row (nats): the mean over its K times plus the prior term."""
        return self.totals.mean(1) + self.prior


def _offset_shape(process, L: int) -> tuple:
    """() for one t per row, (blocks,) when the process draws one t per block (block diffusion)."""
    probe = process.sample_t(1, device="cpu", generator=torch.Generator().manual_seed(0), seq_len=L)
    return () if probe.dim() == 1 else (L // (process.block_size or 1),)


def _row_times(u: torch.Tensor, k: int, K: int, t_sampling: str, g: torch.Generator) -> torch.Tensor:
    """The k-th of K times of one row from its offsets ``u`` (shape [] or [blocks]), float64."""
    if t_sampling == "stratified":
        return (k + u) / K
    if t_sampling == "antithetic":
        if K % 2 == 1 and k == K - 1:
            return torch.rand(u.shape, generator=g, dtype=torch.float64)  # the odd one out is a fresh draw
        return u if k % 2 == 0 else 1 - u
    return torch.rand(u.shape, generator=g, dtype=torch.float64)


@torch.no_grad()
def estimate_nelbo(
    model,
    process,
    x0: torch.Tensor,
    *,
    seed: int,
    t_samples: int,
    t_sampling: str = "stratified",
    rows: Optional[Sequence[int]] = None,
    loss_mask: Optional[torch.Tensor] = None,
    frozen: Optional[torch.Tensor] = None,
    rows_per_call: Optional[int] = None,
) -> NelboRows:
    """The NELBO of each row of x0 [B, L] (see the module docstring for the estimator).

    rows: the rows' global indices, which key their noise (default 0 .. B − 1); loss_mask [B, L]:
    tokens that count; frozen [B, L]: never corrupted and not counted (SFT prompts). The B·K (row, time)
    pairs run ``rows_per_call`` at a time (default B: one call per time), time-major; the grouping
    changes no draw.
    """
    if t_sampling not in T_SAMPLING:
        raise ConfigError(f"t_sampling={t_sampling!r}; use one of {', '.join(T_SAMPLING)}")
    B, L = x0.shape
    K = int(t_samples) if process.is_diffusion else 1
    if K < 1:
        raise ConfigError(f"t_samples={t_samples} must be at least 1")
    rows = list(range(B)) if rows is None else [int(r) for r in rows]
    shape = _offset_shape(process, L) if process.is_diffusion else ()
    row_gens = [generator_for(seed, r) for r in rows]
    offsets = [torch.rand(shape, generator=g, dtype=torch.float64) for g in row_gens]
    times = [[None] * B for _ in range(K)]  # times[k][b]: drawn in k order from each row's generator
    for k in range(K):
        for b in range(B):
            times[k][b] = _row_times(offsets[b], k, K, t_sampling, row_gens[b])
    pairs = [(b, k) for k in range(K) for b in range(B)]
    size = int(rows_per_call or B)
    totals = torch.zeros(B, K, dtype=torch.float64)
    per_token = torch.zeros(B, L, dtype=torch.float64)
    for start in range(0, len(pairs), size):
        chunk = pairs[start:start + size]
        index = torch.tensor([b for b, _ in chunk], device=x0.device)
        t = torch.stack([times[k][b] for b, k in chunk])  # [n] or [n, blocks]
        if shape:
            t = t.repeat_interleave(L // shape[0], dim=1)  # [n, L], constant within a block
        terms = nelbo_terms(model, process, x0[index], t=t.float().to(x0.device),
                            loss_mask=None if loss_mask is None else loss_mask[index],
                            frozen=None if frozen is None else frozen[index],
                            generator=[generator_for(seed, rows[b], k + 1) for b, k in chunk])
        for (b, k), v in zip(chunk, terms.loss.double().cpu()):  # v [L]
            totals[b, k] = v.sum()
            per_token[b] += v / K
    mask = torch.ones(B, L, dtype=torch.float64, device=x0.device) if loss_mask is None else loss_mask.double()
    if frozen is not None:
        mask = mask * (~frozen).double()
    prior = (process.prior_loss(x0).double() * mask).sum(1).cpu()
    return NelboRows(totals=totals, tokens=mask.sum(1).cpu(), prior=prior, terms=per_token)
