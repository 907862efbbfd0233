"""What an RL run reports: reward statistics per reward function, the held-out evaluation and the
``rl_curves.png`` figure.

Metric names follow TRL's ``GRPOTrainer`` logs where it has one (``reward``, ``reward_std``,
``rewards/<name>/mean``, ``rewards/<name>/std``, ``frac_reward_zero_std``, ``kl``,
``clip_ratio/region_mean``, ``entropy``, ``completions/mean_length``,
``completions/clipped_ratio``); textdiff adds ``rollout_tokens_per_s`` (completion positions
decoded per second, all processes), ``rollout_s`` / ``update_s`` (the step's wall-clock split
between rollouts + rewards + old/reference log-probs and the policy update) and, on held-out
evaluation lines, ``eval_reward`` and ``eval_rewards/<name>/mean`` (for ``exact_answer``: the
exact-match accuracy).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch


def reward_metrics(names: Sequence[str], per_func: torch.Tensor, total: torch.Tensor, prefix: str = "") -> dict:
    """Mean / std of each reward function's values [B, F] (NaN = None rows left out) and of the
    weighted total [B]; ``prefix`` is "" for training rollouts, "eval_" for held-out ones."""
    out = {f"{prefix}reward": float(total.mean()), f"{prefix}reward_std": float(total.std()) if total.numel() > 1 else 0.0}
    for j, name in enumerate(names):
        v = per_func[:, j]
        v = v[~torch.isnan(v)]
        key = name.replace(":", ".")
        out[f"{prefix}rewards/{key}/mean"] = float(v.mean()) if v.numel() else math.nan
        out[f"{prefix}rewards/{key}/std"] = float(v.std()) if v.numel() > 1 else 0.0
    return out


def describe(line: dict) -> str:
    """One printed line of an RL metrics line (training or held-out)."""
    if "eval_reward" in line:
        parts = [f"step {line['step']}: held-out reward {line['eval_reward']:.3f}"]
        parts += [f"{k[len('eval_rewards/'):-len('/mean')]} {v:.3f}" for k, v in line.items()
                  if k.startswith("eval_rewards/") and k.endswith("/mean")]
        return ", ".join(parts) + f" ({line.get('eval_prompts', 0)} prompts)"
    return (f"step {line['step']}: reward {line['reward']:.3f} ± {line['reward_std']:.3f}, kl {line['kl']:.4f}, "
            f"clip {line['clip_ratio/region_mean']:.3f}, entropy {line['entropy']:.3f}, "
            f"rollout {line['rollout_tokens_per_s']:,.0f} tok/s, split rollout {line['rollout_s']:.1f} s / update {line['update_s']:.1f} s")


def plot_rl_curves(metrics_file: Path, png: Path) -> Path | None:
    """Reward (training and held-out), KL, clip ratio and entropy against steps; None (and a one-line
    note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: no rl_curves.png (matplotlib missing): pip install 'textdiff[eval]'")
        return None
    lines = [json.loads(ln) for ln in Path(metrics_file).read_text().splitlines() if ln.strip()]

    def series(key):
        return [(m["step"], m[key]) for m in lines if isinstance(m.get(key), (int, float)) and math.isfinite(m[key])]

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), dpi=110)
    panels = [("reward", ["reward", "eval_reward"]), ("KL to the reference", ["kl"]),
              ("clip ratio", ["clip_ratio/region_mean"]), ("entropy (nats)", ["entropy"])]
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            pts = series(key)
            if pts:
                ax.plot(*zip(*pts), marker="o" if key.startswith("eval_") else None, ms=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png
