"""The objective: one function that corrupts a batch, calls the denoiser once and returns the
per-token NELBO terms. Training (``training/loop.py``) and evaluation (``eval/``) both use it, so the
number a run reports is the number it optimised.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .categorical import Generator


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
