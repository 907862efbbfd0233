"""AdamW with decoupled weight decay on matrices only, and a linear-warmup + cosine schedule."""
from __future__ import annotations

import math

import torch

from ..config import TrainConfig


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel (CPU and CUDA) is the fastest path
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8)


def lr_factor(step: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based).

    Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` ("cosine"), a
    constant lr ("constant"), or warmup-stable-decay ("wsd", Hu et al. 2024, MiniCPM): constant,
    then linear decay to ``min_lr_ratio`` over the last ``decay_fraction`` of training. With a time budget
    (``max_minutes``) progress is the larger of the step fraction and the time fraction, so a run
    stopped by its budget still ends its decay.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    if cfg.max_minutes:
        progress = max(progress, elapsed_s / (cfg.max_minutes * 60))
    progress = min(1.0, progress)
    if cfg.lr_schedule == "wsd":
        start = 1.0 - cfg.decay_fraction
        if progress <= start:
            return 1.0
        return 1.0 - (1.0 - cfg.min_lr_ratio) * (progress - start) / max(cfg.decay_fraction, 1e-9)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class LRSchedule:
    """Sets the optimizer's lr before every step from (step, elapsed time); stateless beyond those."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig):
        self.optimizer, self.cfg = optimizer, cfg
        self.last_lr = cfg.lr * lr_factor(0, cfg)
        self.apply(0, 0.0)

    def apply(self, step: int, elapsed_s: float) -> None:
        self.last_lr = self.cfg.lr * lr_factor(step, self.cfg, elapsed_s)
        for group in self.optimizer.param_groups:
            group["lr"] = self.last_lr

    def get_last_lr(self) -> list[float]:
        return [self.last_lr]

    def state_dict(self) -> dict:
        return {"last_lr": self.last_lr}

    def load_state_dict(self, state: dict) -> None:
        self.last_lr = state["last_lr"]


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> LRSchedule:
    return LRSchedule(optimizer, cfg)
