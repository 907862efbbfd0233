"""Multi-block (pipelined) decoding for masked diffusion: the next block starts before the current one
is finished (D2F, Wang et al. 2025; d3LLM, hao-ai-lab 2025).

The window (the whole answer; pass ``block_size`` = the answer length to ``generate``) is cut into
blocks of ``multi_block`` positions from its start. Each row keeps the number of blocks that have
begun; per step, with progress(b) = the fraction of block b already committed:

1. block b ≥ 2 is *active* when progress(b − 1) ≥ ``decoded_token_threshold`` (block 1 always is);
2. one more block begins when the last begun block has progress ≥ ``block_add_threshold`` or no
   [MASK] left (at most one per step);
3. the candidates are the [MASK]s of every begun block; scored by the entropy H = −Σ p log p of
   p = softmax(logits) in float64 (``mask_logit = "keep"``: [MASK] stays in it) with x̂0 = argmax
   (temperature 0) or a draw from the filtered p̃;
4. commit the lowest-entropy candidate and every candidate with H ≤ ``threshold``; if the first active
   block that has a [MASK] got none, also its lowest-entropy [MASK] (progress is guaranteed);
5. the step to s = 0 commits every [MASK] left (as every sampler).

With ``block_add_threshold = decoded_token_threshold = 1`` one block at a time is decoded: the same
tokens as block-wise decoding (``generate(block_size=multi_block)``) with the single-block rule
(``tests/test_sampler_multi_block.py``). d3LLM's LLaDA decoder ``generate_multi_block`` is this with
threshold 0.5, blocks of 32 and the thresholds 0.1 / 0.95 of its chat script.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import ConfigError
from ..registry import register
from .base import SamplerConfig, StepOutput
from .confidence import _Unmasker, _UnmaskerKnobs
from .draws import step_uniforms


@dataclass
class MultiBlockConfig(_UnmaskerKnobs, SamplerConfig):
    name: str = "multi_block"
    #: block length inside the window (None: the whole window is one block)
    multi_block: Optional[int] = None
    #: commit every candidate whose entropy (nats) is at most this, besides the lowest one
    threshold: float = 0.5
    #: begin the next block once the last one is this far committed
    block_add_threshold: float = 0.1
    #: a block is active (guaranteed a commit per step) once the previous one is this far committed
    decoded_token_threshold: float = 0.95

    def validate(self) -> None:
        super().validate()
        if self.rng != "rows":
            raise ConfigError(f"sampler.rng={self.rng!r}: the multi_block sampler draws with textdiff's per-row generators only ('rows')")
        if self.multi_block is not None and self.multi_block < 1:
            raise ConfigError(f"sampler.multi_block={self.multi_block} must be at least 1 (or null)")
        if self.threshold < 0:
            raise ConfigError(f"sampler.threshold={self.threshold} is an entropy bound; it must be >= 0")
        for key in ("block_add_threshold", "decoded_token_threshold"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"sampler.{key}={getattr(self, key)} must be in [0, 1]")


@register("sampler", "multi_block")
class MultiBlockSampler(_Unmasker):
    config_class = MultiBlockConfig
    ordering = "entropy"

    def finished(self, x_t):
        return self._no_noise_left(x_t)

    def set_timesteps(self, num_steps: int, device=None) -> None:
        super().set_timesteps(num_steps, device)
        self._begun = None  # a new window: every row starts with its first block

    def blocks(self, L: int, device) -> torch.Tensor:
        """[L] the block of each window position."""
        S = self.config.multi_block or L
        return torch.arange(L, device=device) // S

    def step(self, logits, t, s, x_t, generator=None):
        cfg = self.config
        B, L = x_t.shape
        noise = self.process.is_noise(x_t)  # [B, L]
        block = self.blocks(L, x_t.device)  # [L]
        nb = int(block[-1]) + 1
        onehot = torch.nn.functional.one_hot(block, nb).to(torch.float64)  # [L, nb]
        size = onehot.sum(0)  # [nb] positions per block
        left = noise.to(torch.float64) @ onehot  # [B, nb] masks per block
        progress = 1.0 - left / size  # [B, nb]
        if getattr(self, "_begun", None) is None or self._begun.shape[0] != B:
            self._begun = torch.ones(B, dtype=torch.long, device=x_t.device)
        last = progress.gather(1, (self._begun - 1)[:, None])[:, 0]  # [B] progress of the last begun block
        grow = (self._begun < nb) & ((last >= cfg.block_add_threshold) | (last >= 1.0))
        self._begun = self._begun + grow.long()
        active = torch.ones(B, nb, dtype=torch.bool, device=x_t.device)
        active[:, 1:] = progress[:, :-1] >= cfg.decoded_token_threshold  # [B, nb]
        begun = torch.arange(nb, device=x_t.device)[None, :] < self._begun[:, None]  # [B, nb]
        candidates = noise & begun[:, block]  # [B, L]
        u = torch.zeros(B, L, dtype=torch.float64) if cfg.temperature == 0 else step_uniforms(x_t, 1, generator)[..., 0]
        x0_hat, neg_entropy = self.candidates(logits, x_t, candidates, u)  # score = −H, −∞ off the candidates
        entropy = -neg_entropy  # [B, L], +∞ off the candidates
        commit = candidates & (entropy <= cfg.threshold)
        commit |= candidates & _first_min(entropy)  # the lowest-entropy candidate (leftmost on ties)
        # the first active block with a [MASK] and no commit gets its lowest-entropy [MASK]
        open_ = active & begun & (left > 0)  # [B, nb]
        first = torch.where(open_.any(1), open_.float().argmax(1), torch.full((B,), -1, device=x_t.device))  # [B]
        in_first = block[None, :] == first[:, None]  # [B, L]
        starved = ~(commit & in_first).any(1) & (first >= 0)  # [B]
        forced = _first_min(torch.where(candidates & in_first, entropy, torch.full_like(entropy, float("inf"))))
        commit |= forced & candidates & starved[:, None]
        end = noise & (self.rows(s, x_t) <= 0)[:, None]  # the step to s = 0 leaves no [MASK]
        commit |= end
        if bool((commit & ~candidates).any()):  # positions of blocks not begun (last step only)
            x0_hat = torch.where(commit & ~candidates, self.candidates(logits, x_t, commit & ~candidates, u)[0], x0_hat)
        x0_hat = self.no_mask_left(logits, x_t, x0_hat, end, u)
        return StepOutput(x_s=torch.where(commit, x0_hat, x_t), x0_pred=x0_hat)


def _first_min(values: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: each row's (leftmost) smallest finite value; none in a row of +∞ only."""
    idx = values.argmin(1)  # first occurrence of the minimum
    hit = torch.zeros_like(values, dtype=torch.bool)
    hit[torch.arange(values.shape[0]), idx] = True
    return hit & torch.isfinite(values)
