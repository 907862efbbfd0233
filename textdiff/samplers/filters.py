"""Temperature, top-k and top-p: the knobs every sampler takes (``SamplerConfig``), as one object.

:class:`LogitFilter` reads the knobs of a sampler's config when it is applied (a sampler holds one
as ``sampler.filter``). It filters clean-token logits (samplers that form p_θ(x0 | x_t)) and, for
samplers that never form it (Euler, analytic), the jump targets of a one-step transition. Results are
float64; the defaults (temperature 1, no top-k, top-p 1) change nothing.
"""
from __future__ import annotations

from typing import Optional

import torch

from .nucleus import nucleus


class LogitFilter:
    """Temperature / top-k / top-p of ``config`` (any object with those three fields)."""

    def __init__(self, config):
        self.config = config

    @property
    def active(self) -> bool:
        """Whether temperature / top-k / top-p change anything (False at the defaults)."""
        cfg = self.config
        return cfg.temperature != 1.0 or cfg.top_k is not None or cfg.top_p < 1.0

    def __call__(self, logits: torch.Tensor, temperature: Optional[float] = None) -> torch.Tensor:
        """Temperature, top-k and nucleus filtering of [..., V] logits (float32 -> float64 result).

        ``temperature`` overrides the config's (the confidence samplers' scores use 1 at temperature 0).
        """
        lg = logits.double()
        cfg = self.config
        temp = cfg.temperature if temperature is None else temperature
        if temp == 0:
            best = lg.argmax(-1, keepdim=True)
            return torch.full_like(lg, float("-inf")).scatter_(-1, best, 0.0)
        if temp != 1.0:
            lg = lg / temp
        if cfg.top_k is not None and cfg.top_k < lg.shape[-1]:
            # the k-th value found in the logits' own dtype: l -> l / T in float64 is strictly increasing
            # on distinct float32 / bf16 values, so the kept set is the one of the float64 comparison
            kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
            lg = lg.masked_fill(logits < kth, float("-inf"))
        if cfg.top_p < 1.0:
            lg = nucleus(lg, cfg.top_p, inplace=lg is not logits)  # a copy of ours: filtered in place
        return lg

    def transition(self, probs: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """The filters applied to a one-step transition distribution ``probs`` [B, L, V].

        Used by samplers that never form p_θ(x0 | x_t) (Euler, analytic). The probability of
        leaving x_t, J = 1 − p(x_t), is kept; only the choice of WHERE to jump is filtered::

            p̃(y) = (1 − J) [y = x_t] + J · filter(p(y) [y ≠ x_t] / J)

        so a low temperature sharpens the jump targets without freezing the chain. Identity (exactly)
        at the default knobs.
        """
        probs = probs.double()
        if not self.active:
            return probs
        here = torch.nn.functional.one_hot(x_t, probs.shape[-1]).bool()
        jump = probs.masked_fill(here, 0.0)
        total = jump.sum(-1, keepdim=True)  # J [B, L, 1]
        moving = total > 0
        target = torch.softmax(self(torch.log(jump / total.clamp_min(1e-300))), dim=-1)
        target = torch.where(moving, target.nan_to_num(0.0), torch.zeros_like(target))
        return target * total + here.double() * (1.0 - total)
