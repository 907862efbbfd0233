"""Rewards -> group-relative advantages (GRPO, Shao et al. 2024), as TRL's ``GRPOTrainer`` forms them.

Rows come in groups: the G = ``num_generations`` completions of one prompt are consecutive rows
``[g·G, (g+1)·G)``. With R_i the weighted reward sum of row i (:func:`combine_rewards`)::

    A_i = (R_i − mean_group(R)) / (s + 1e-4)

    scale_rewards = "group":  s = std of R over the row's group (unbiased, as ``torch.std``)
    scale_rewards = "batch":  s = std of R over the whole batch (PPO-Lite)
    scale_rewards = "none":   no division (Dr. GRPO, Liu et al. 2025; also what d1's trainer does)

A group whose rewards are all equal has A = 0 for every row: it carries no gradient
(``frac_reward_zero_std`` counts such groups, TRL's metric of the same name).

Distributed runs gather the rewards of all processes before this (a group must be whole); the
function itself is pure and depends only on the rows it is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..errors import ConfigError, warn

#: added to the standard deviation before dividing (TRL's constant)
STD_EPS = 1e-4


@dataclass
class Advantages:
    advantages: torch.Tensor  # [B] float32
    group_mean: torch.Tensor  # [B / G] mean reward per group
    group_std: torch.Tensor  # [B / G] unbiased std per group (0 for G = 1)
    frac_reward_zero_std: float  # share of groups whose rewards are all equal (no learning signal)


def combine_rewards(per_func: torch.Tensor, weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """[B, F] rewards of F functions -> [B] weighted sums, NaN (a function's ``None``) counted as 0.

    A row where EVERY function returned None gets 0 and a warning (TRL's rule): a reward function
    returns None for rows it does not apply to, and at least one should apply.
    """
    if per_func.dim() != 2:
        raise ConfigError(f"rewards must be [rows, functions], got shape {list(per_func.shape)}")
    w = torch.ones(per_func.shape[1], dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.numel() != per_func.shape[1]:
        raise ConfigError(f"got {w.numel()} reward weights for {per_func.shape[1]} reward functions; give one each")
    r = per_func.to(torch.float64)
    none = torch.isnan(r).all(1)
    if bool(none.any()):
        warn(f"every reward function returned None for {int(none.sum())} completion(s) (row {int(none.nonzero()[0, 0])} first); "
             "they get reward 0")
    return torch.nansum(r * w[None, :], dim=1).float()


def group_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group") -> Advantages:
    """Group-relative advantages of ``rewards`` [B] (groups of ``num_generations`` consecutive rows)."""
    if scale_rewards not in ("group", "batch", "none"):
        raise ConfigError(f"scale_rewards={scale_rewards!r}; use 'group', 'batch' or 'none'")
    G = int(num_generations)
    B = rewards.numel()
    if G < 1 or B % G:
        raise ConfigError(f"{B} rewards do not split into groups of num_generations={G}; "
                          "each prompt needs exactly num_generations completions")
    r = rewards.reshape(-1, G).to(torch.float64)  # [B / G, G]
    mean = r.mean(1)  # [B / G]
    std = r.std(1) if G > 1 else torch.zeros_like(mean)  # unbiased, as torch.std / TRL
    adv = r - mean[:, None]
    if scale_rewards == "group":
        adv = adv / (std[:, None] + STD_EPS)
    elif scale_rewards == "batch":
        batch_std = r.flatten().std() if B > 1 else torch.zeros((), dtype=torch.float64)
        adv = adv / (batch_std + STD_EPS)
    zero = float((std < 1e-6).double().mean()) if mean.numel() else math.nan
    return Advantages(advantages=adv.flatten().float(), group_mean=mean.float(), group_std=std.float(),
                      frac_reward_zero_std=zero)
