"""Block diffusion: BD3-LM (Arriola et al. 2025).

A sequence of length L is cut into K = L / L' blocks x^1..x^K. The model is autoregressive over blocks
and a masked diffusion model inside each block::

    log p(x) = Σ_k log p(x^k | x^{<k})
    −log p(x^k | x^{<k}) <= E_{t ~ U(0,1)} E_{x_t^k} [ Σ_{l in block k} −α'(t) / (1 − α(t))
                                               · [x_t^{k,l} = MASK] · (−log p_θ(x0^{k,l} | x_t^k, x^{<k})) ]

so the NELBO is the masked (MDLM, SUBS) integrand of :class:`MaskedProcess`, with an independent time
t_k per block and each block conditioned on the CLEAN blocks before it. ``sample_t`` returns t as
[B, L], constant within each block.

Training runs all K conditionals in one forward over ``[x_t ; x0]`` (length 2L, positions
``[0..L-1, 0..L-1]``) with the mask of :mod:`textdiff.models.masks`: noisy block k attends to itself
and to clean blocks < k; the clean half is block-causal. ``model_logits`` keeps the first L logits.
With L' = L there is one block that sees only itself: exactly the masked process.

Clipped schedules (mask rate 1 − α(t) confined to [β, ω]) lower the variance of the gradient; the
band is read from the schedule as [1 − α(0), 1 − α(1)] (the ``clipped`` schedule of
:mod:`textdiff.schedules` sets it). ``resample=True`` additionally redraws a block's masks until its
empirical mask rate lies in that band (BD3-LM's heuristic; it changes the estimator, so report
likelihoods with ``resample=False`` and an unclipped schedule for a true bound).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from ..categorical import Generator, uniform
from ..errors import ConfigError, IncompatibleError
from ..models.masks import block_diffusion_flex_mask, block_diffusion_mask, flex_available
from ..registry import register
from .masked import MaskedConfig, MaskedProcess


@dataclass
class BlockConfig(MaskedConfig):
    name: str = "block"
    block_size: int = 4  # L', the block length (the model's block_size must match)
    resample: bool = False  # redraw a block's masks until its mask rate lies in the schedule's band
    max_resample: int = 100  # give up (keep the last draw) after this many redraws
    attention_backend: Literal["auto", "sdpa", "flex"] = "auto"  # auto: flex on CUDA when available
    flex_tile: int = 128  # FlexAttention sparse tile (its BLOCK_SIZE), set explicitly

    def validate(self) -> None:
        if self.block_size < 1:
            raise ConfigError(f"process.block_size={self.block_size} must be at least 1")
        if self.max_resample < 1:
            raise ConfigError(f"process.max_resample={self.max_resample} must be at least 1")
        if self.flex_tile < 1:
            raise ConfigError(f"process.flex_tile={self.flex_tile} must be at least 1")


@register("process", "block")
class BlockProcess(MaskedProcess):
    config_class = BlockConfig
    #: the denoiser must use block-causal attention (read by ``models.build``)
    required_attention = "block_causal"

    @classmethod
    def config_block_size(cls, config: BlockConfig) -> int:
        return int(config.block_size)

    def num_blocks(self, seq_len: int) -> int:
        """K = L / L'; raises a one-line error when L' does not divide L or exceeds it."""
        Lb = self.block_size
        if Lb > seq_len:
            raise ConfigError(f"process.block_size={Lb} is larger than the sequence length {seq_len}; use a block size <= data.seq_len")
        if seq_len % Lb:
            raise ConfigError(f"process.block_size={Lb} does not divide the sequence length {seq_len}; pick a divisor of data.seq_len")
        return seq_len // Lb

    def check_model(self, model_config) -> None:
        """Raise unless the denoiser is block-causal with this block size."""
        attention = getattr(model_config, "attention", None)
        size = getattr(model_config, "block_size", None)
        if attention != "block_causal" or size != self.block_size:
            raise IncompatibleError(
                f"process 'block' (block_size={self.block_size}) needs a model with attention='block_causal' and "
                f"block_size={self.block_size}, got attention={attention!r}, block_size={size}"
            )

    # ---- time ---------------------------------------------------------------------------------
    def sample_t(self, batch_size: int, device=None, generator: Generator = None, seq_len: Optional[int] = None):
        """One t per block, returned per token as [B, L] (constant within each block).

        With ``antithetic`` (and one generator), each block column k is stratified across the batch:
        t[b, k] = (π_k(b) + u_k) / B with π_k a random permutation, so every t[b, k] is exactly
        U(0, 1) and each column covers [0, 1] evenly. Without ``seq_len``: one t per row, [B].
        """
        if seq_len is None:
            return super().sample_t(batch_size, device=device, generator=generator)
        K = self.num_blocks(seq_len)
        if self.config.antithetic and not isinstance(generator, (list, tuple)):
            rank = uniform((batch_size, K), generator, device).argsort(0).argsort(0)  # [B, K] permutations
            t = (rank.double() + uniform((1, K), generator, device)) / batch_size
        else:
            t = uniform((batch_size, K), generator, device)
        return t.float().repeat_interleave(self.block_size, dim=1)  # [B, L]

    def mask_rate_band(self) -> tuple[float, float]:
        """[β, ω] = [1 − α(0), 1 − α(1)]: the range of mask rates the schedule can produce."""
        ends = self.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
        return float(1 - ends[0]), float(1 - ends[1])

    # ---- the forward process ------------------------------------------------------------------
    def corrupt(self, x0, t, frozen=None, generator: Generator = None):
        """x_t [B, L] as for masked diffusion; with ``resample``, blocks whose empirical mask rate
        (over non-frozen tokens) lies outside [β, ω] are redrawn, at most ``max_resample`` times."""
        x_t = super().corrupt(x0, t, frozen=frozen, generator=generator)
        if not self.config.resample:
            return x_t
        lo, hi = self.mask_rate_band()
        B, L = x0.shape
        Lb = self.block_size
        self.num_blocks(L)
        free = torch.ones_like(x0, dtype=torch.bool) if frozen is None else ~frozen
        count = free.view(B, -1, Lb).sum(-1)  # [B, K]
        for _ in range(self.config.max_resample):
            rate = (x_t == self.mask_id).view(B, -1, Lb).sum(-1) / count.clamp_min(1)  # [B, K]
            bad = (count > 0) & ((rate < lo - 1e-6) | (rate > hi + 1e-6))
            if not bool(bad.any()):
                break
            fresh = super().corrupt(x0, t, frozen=frozen, generator=generator)
            x_t = torch.where(bad.repeat_interleave(Lb, dim=1), fresh, x_t)
        return x_t

    # ---- how the denoiser is fed ---------------------------------------------------------------
    def use_flex(self, device) -> bool:
        backend = self.config.attention_backend
        if backend == "flex":
            if not flex_available():
                raise ConfigError("process.attention_backend='flex' needs torch>=2.5 (FlexAttention); use 'sdpa'")
            return True
        return backend == "auto" and torch.device(device).type == "cuda" and flex_available()

    def attention_mask(self, seq_len: int, device):
        """The [x_t ; x0] mask: a FlexAttention BlockMask or a dense bool [1, 1, 2L, 2L]."""
        self.num_blocks(seq_len)
        if self.use_flex(device):
            return block_diffusion_flex_mask(seq_len, self.block_size, device, self.config.flex_tile)
        return block_diffusion_mask(seq_len, self.block_size, device)

    def model_inputs(self, x_t, x0, t):
        """``input_ids`` [B, 2L] = [x_t ; x0], ``position_ids`` [B, 2L] = [0..L-1, 0..L-1], the mask, and
        (time-conditioned models) ``t`` [B, 2L]: ``network_time`` of each block's t on the noisy half and
        of t = 0 on the clean half."""
        B, L = x_t.shape
        pos = torch.arange(L, device=x_t.device).repeat(2)[None].expand(B, 2 * L)
        inputs = {
            "input_ids": torch.cat([x_t, x0], dim=1),
            "position_ids": pos,
            "attention_mask": self.attention_mask(L, x_t.device),
        }
        if self.time_conditioning:
            tt = self.per_token(t, x_t)
            inputs["t"] = self.network_time(torch.cat([tt, torch.zeros_like(tt)], dim=1))
        return inputs

    def model_logits(self, logits, x_t):
        """The noisy half: logits [B, L, V] of x_t out of [B, 2L, V]."""
        return logits[:, : x_t.shape[1]]
