"""Threshold parallel decoding (Fast-dLLM, Wu et al. 2025; LLaDA 2.0; SDAR; Fast-dLLM v2).

One step: draw the candidates x̂0 and their confidences p(x̂0) as the confidence samplers do
(:mod:`.confidence`), then commit every masked position whose confidence exceeds τ, and at least the
most confident one per step (all of them at s = 0), so fewer steps than the grid are often used (the
loop stops once no [MASK] is left). With ``min_commit = "even_split"`` the floor is the step's share
of the window split evenly over the N steps, ⌊W / N⌋ plus one for the first W mod N steps (LLaDA 2.0's
and SDAR's ``generate``; 1 when N = W).

Fast-dLLM v2's hierarchical decoding (``Fast_dLLM_QwenForCausalLM.generate``) adds two knobs:

* ``sub_block`` = S: the window is decoded in sub-blocks of S positions, left to right: each step's
  candidates are the [MASK]s of the leftmost sub-block that still has one (its ``small_block_size``);
* ``first_commit = "block_start"``: on the first step of a window whose first position is [MASK],
  commit only that position, with the argmax of its logits (the token the previous block's last
  output predicts, which Fast-dLLM v2 appends when it caches a finished block); a window that starts
  with a given token (the prompt's tail) follows the rule from its first step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from ..errors import ConfigError
from ..registry import register
from .base import SamplerConfig, StepOutput
from .confidence import _Unmasker, _UnmaskerKnobs
from .draws import step_uniforms
from .unmask_rows import rank_commit, rank_commit_bounded


@dataclass
class ThresholdConfig(_UnmaskerKnobs, SamplerConfig):
    name: str = "threshold"
    #: commit every masked position whose confidence p(x̂0) exceeds this (Fast-dLLM's τ)
    threshold: float = 0.9
    #: the fewest commits per step: "one" = the most confident one (Fast-dLLM), "even_split" = the step's
    #: share of the window split evenly over the steps, remainder first (LLaDA 2.0's generate)
    min_commit: Literal["one", "even_split"] = "one"
    #: decode the window in sub-blocks of this many positions, left to right (Fast-dLLM v2's small_block_size)
    sub_block: Optional[int] = None

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"sampler.threshold={self.threshold} must be in [0, 1]")
        if self.min_commit not in ("one", "even_split"):
            raise ConfigError(f"sampler.min_commit={self.min_commit!r} must be 'one' or 'even_split'")
        if self.sub_block is not None and self.sub_block < 1:
            raise ConfigError(f"sampler.sub_block={self.sub_block} must be at least 1 (or null: the whole window)")


@register("sampler", "threshold")
class ThresholdSampler(_Unmasker):
    config_class = ThresholdConfig

    def min_commits(self, t, x_t) -> torch.Tensor:
        """k [B]: the fewest commits this step (the most confident k go even below τ).

        ``one``: 1. ``even_split``: step i of N (t = 1 − i / N) over a window of W positions commits
        at least ⌊W / N⌋, plus one for the first W mod N steps (so N steps cover the window).
        """
        B = x_t.shape[0]
        if self.config.min_commit == "one":
            return torch.ones(B, dtype=torch.long, device=x_t.device)
        n_steps = self.timesteps.shape[-1] - 1
        i = torch.round((1.0 - self.rows(t, x_t)) * n_steps).long()  # [B] this step's index
        base, extra = divmod(x_t.shape[1], n_steps)
        return base + (i < extra).long()

    def sub_block_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """[B, L]: the [MASK]s of each row's leftmost sub-block that has one (all of them without ``sub_block``)."""
        S = self.config.sub_block
        if not S or S >= noise.shape[1]:
            return noise
        index = torch.arange(noise.shape[1], device=noise.device) // S  # [L] sub-block of each position
        first = torch.where(noise, index, torch.full_like(noise, noise.shape[1], dtype=torch.long)).amin(1)  # [B]
        return noise & (index[None, :] == first[:, None])

    def block_start(self, logits, t, x_t, noise):
        """``first_commit = "block_start"``: (rows [B] whose first position is [MASK] at t = 1, x_t with
        that position set to the argmax of its logits); None when no row is such."""
        if self.config.first_commit != "block_start":
            return None
        rows = noise[:, 0] & (self.rows(t, x_t) >= 1.0)
        if not bool(rows.any()):
            return None
        top = self.suppress(self.x0_rows(logits[:, 0].clone())).argmax(-1)  # [B]
        x_s = x_t.clone()
        x_s[:, 0] = torch.where(rows, top, x_t[:, 0])
        return rows, x_s

    def step(self, logits, t, s, x_t, generator=None):
        start = self.block_start(logits, t, x_t, self.process.is_noise(x_t))
        out = self.threshold_step(logits, t, s, x_t, generator)
        if start is not None:  # those rows commit their block's first token only
            rows, x_s = start
            out = StepOutput(x_s=torch.where(rows[:, None], x_s, out.x_s), x0_pred=out.x0_pred)
        return out

    def threshold_step(self, logits, t, s, x_t, generator=None):
        """Commit the [MASK]s (of the current sub-block) above τ, at least ``min_commits``."""
        every = self.process.is_noise(x_t)  # [B, L]
        first = self.leftmost_first(logits, t, x_t, every, generator)
        if first is not None:
            return first
        noise = self.sub_block_noise(every)
        k = self.min_commits(t, x_t)  # [B]
        last = every & (self.rows(s, x_t) <= 0)[:, None]  # the last step commits everything
        tau = self.config.threshold
        if self.config.rng == "torch":  # the publisher's random stream (SDAR): no bounded shortcut
            x0_hat, conf = self.torch_candidates(logits, x_t, noise, generator)
            commit = (noise & (conf > tau)) | rank_commit(conf, noise, k) | last
            return StepOutput(x_s=torch.where(commit, x0_hat, x_t), x0_pred=x0_hat)
        if self.bounded(logits):  # greedy: float64 only where the threshold or the best k are in doubt
            x0_hat, lo, hi, exact = self.candidate_bounds(logits, x_t, noise)
            unsure = noise & (lo <= tau) & (hi > tau)
            commit = noise & (lo > tau)
            if bool(unsure.any()):
                commit |= unsure & (exact(unsure) > tau)
            commit |= rank_commit_bounded(lo, hi, noise, k, exact) | last
            return StepOutput(x_s=torch.where(commit, x0_hat, x_t), x0_pred=x0_hat)
        greedy = self.config.temperature == 0  # argmax candidates: no noise is drawn
        u = torch.zeros(x_t.shape, dtype=torch.float64) if greedy else step_uniforms(x_t, 1, generator)[..., 0]
        x0_hat, conf = self.candidates(logits, x_t, noise, u)  # conf = p_θ(x̂0 | x_t) float64
        conf = self.deprioritize(conf, x0_hat)
        commit = noise & (conf > tau)
        commit |= rank_commit(conf, noise, k)  # at least the k most confident while masks remain
        commit |= last
        return StepOutput(x_s=torch.where(commit, x0_hat, x_t), x0_pred=x0_hat)
