"""Random numbers and categorical sampling, always in float64.

Gumbel-max with float32 noise truncates the Gumbel tail and silently lowers the diversity of samples
(Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic masked models and exploit
inaccurate categorical sampling"). Every categorical draw in textdiff goes through
:func:`sample_categorical`, which works in float64.

``generator`` may be one ``torch.Generator`` or a list with one generator per batch row; with a list,
row ``b`` draws its noise only from ``generator[b]``, which makes batched generation give exactly the
per-row results (batch invariance).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Generator = Optional[Union[torch.Generator, Sequence[torch.Generator]]]


def uniform(shape: Sequence[int], generator: Generator = None, device=None, dtype=torch.float64) -> torch.Tensor:
    """U(0, 1) noise of ``shape`` [B, ...]; per-row generators when ``generator`` is a list."""
    shape = tuple(shape)
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]} rows; give one per row")
        rows = [_rand(shape[1:], g, device, dtype) for g in generator]
        return torch.stack(rows, 0) if rows else torch.empty(shape, device=device, dtype=dtype)
    return _rand(shape, generator, device, dtype)


def _rand(shape, generator, device, dtype):
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gen_device, dtype=dtype)
    return u.to(device) if device is not None else u


def gumbel(shape, generator: Generator = None, device=None) -> torch.Tensor:
    """Standard Gumbel noise in float64: −log(−log U)."""
    u = uniform(shape, generator, device)
    tiny = torch.finfo(torch.float64).tiny
    exponential = -torch.log(u.clamp_min(tiny))  # Exp(1) noise, > 0
    return -torch.log(exponential.clamp_min(tiny))


def sample_categorical(probs: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Draw indices from ``probs`` [..., V] (unnormalised allowed) by float64 Gumbel-max.

    Returns a long tensor of shape ``probs.shape[:-1]``.
    """
    p = probs.to(torch.float64)
    logp = torch.log(p)  # log 0 = -inf: those classes are never chosen
    return torch.argmax(logp + gumbel(p.shape, generator, p.device), dim=-1)


def sample_from_logits(logits: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Draw indices from ``softmax(logits)`` [..., V] by float64 Gumbel-max."""
    lg = logits.to(torch.float64)
    return torch.argmax(lg + gumbel(lg.shape, generator, lg.device), dim=-1)


def make_generators(seeds: Sequence[int], device="cpu") -> list[torch.Generator]:
    """One generator per row, seeded by ``seeds``."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
