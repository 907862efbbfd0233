"""Exponential moving average of the weights, kept in float32; swapped in for evaluation and saving."""
from __future__ import annotations

import contextlib

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().float().clone() for k, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """shadow <- d * shadow + (1 - d) * param, with d warmed up as min(decay, (1 + n) / (10 + n))."""
        d = min(self.decay, (1 + step) / (10 + step))
        for k, p in model.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach().float(), 1 - d)

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """Temporarily load the EMA weights into ``model``."""
        backup = {}
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k in self.shadow:
                    backup[k] = p.detach().clone()
                    p.copy_(self.shadow[k].to(p.dtype))
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, p in model.named_parameters():
                    if k in backup:
                        p.copy_(backup[k])

    def state_dict(self) -> dict:
        return {k: v.contiguous() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict) -> None:
        for k in self.shadow:
            self.shadow[k].copy_(state[k])
