"""``generate()``: the only place the denoiser is called during sampling.

Layout of one batch: every row is ``[left padding | prompt | N new positions]``. The new positions
start from the process prior (all [MASK] for masked diffusion); prompt and padding are frozen.

The OUTER loop walks over windows of new positions: one window of N positions (full-sequence
diffusion), or blocks of ``block_size`` positions left to right (block diffusion / semi-AR). The
INNER loop runs any sampler on the current window::

    for window in windows:                        # blocks, left to right
        sampler.set_timesteps(steps_per_window)
        for t, s in sampler.pairs():
            logits = context.logits(x, window, t)  # the model call (with or without a KV cache)
            x[window] = sampler.step(logits, t, s, x[window]).x_s
        context.commit(x, window)                   # exact cache: append the clean block's keys/values

How the model sees the context is a :class:`Context` strategy: ``FullContext`` feeds the whole
row every call (exact for any model); ``BlockCache`` keeps an exact KV cache of committed blocks
for block-causal models (BD3-LM) and feeds only the window. Samplers never see blocks or caches.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import torch

from .categorical import make_generators
from .errors import ConfigError, IncompatibleError
from .contexts import make_context

# ---------------------------------------------------------------------------------------------
# Inputs and outputs
# ---------------------------------------------------------------------------------------------


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # [B, P + N] final rows (left-padded prompts + new tokens)
    generated: list[list[int]]  # per row: the new tokens (cut after EOS when stop_at_eos)
    nfe: int  # network function evaluations (model calls) used
    seconds: float  # wall-clock time of the sampling loop
    lengths: list[int] = field(default_factory=list)  # len(generated[b])
    prompt_lengths: list[int] = field(default_factory=list)


@dataclass
class StepInfo:
    """What a streaming callback receives after every sampler step."""

    x: torch.Tensor  # [B, P + N] current rows
    window: tuple[int, int]  # [lo, hi) of the window in row coordinates
    t: float
    s: float
    nfe: int


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> ids [B, P] left-padded with ``pad_id`` and a validity mask [B, P]."""
    P = max((len(p) for p in prompts), default=0)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros((len(prompts), P), dtype=torch.bool, device=device)
    for b, p in enumerate(prompts):
        if len(p):
            ids[b, P - len(p):] = torch.as_tensor(list(p), dtype=torch.long, device=device)
            valid[b, P - len(p):] = True
    return ids, valid


# ---------------------------------------------------------------------------------------------
# generate()
# ---------------------------------------------------------------------------------------------


def _model_call(model, process):
    """Wrap the model as (ids, t, mask, pos, cache, update) -> logits; t only if the process needs it."""

    def denoise(ids, t, attention_mask, position_ids, cache, update_cache):
        kwargs = {}
        if process.time_conditioning:
            kwargs["t"] = t
        out = model(ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                    update_cache=update_cache, **kwargs)
        return out.logits if hasattr(out, "logits") else out

    return denoise


def _generators(seed, generator, batch_size, device):
    if generator is not None:
        return generator
    if seed is None:
        return None
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [int(seed) + b for b in range(batch_size)]
    if len(seeds) != batch_size:
        raise ConfigError(f"got {len(seeds)} seeds for {batch_size} prompts; give one per prompt or a single int")
    return make_generators(seeds, device="cpu")


@torch.no_grad()
def generate(
    model,
    process,
    sampler,
    prompts: Optional[Sequence[Sequence[int]]] = None,
    *,
    max_new_tokens: int = 128,
    steps: int = 128,
    batch_size: Optional[int] = None,
    block_size: Optional[int] = None,
    use_cache: bool = True,
    max_context: Optional[int] = None,
    seed: Union[int, Sequence[int], None] = None,
    generator=None,
    pad_token_id: int = 0,
    eos_token_id: Optional[int] = None,
    stop_at_eos: bool = True,
    template: Optional[torch.Tensor] = None,
    callback: Optional[Callable[[StepInfo], None]] = None,
    denoise: Optional[Callable] = None,
) -> GenerationOutput:
    """Sample new tokens after each prompt (or fill a template).

    prompts: token-id lists (may differ in length; may be empty); or None with ``batch_size``.
    max_new_tokens: N, the number of new positions per row.
    steps: sampler steps in total; with blocks, split evenly across blocks (at least 1 each).
    block_size: generate blocks of this many tokens left to right (None: one window of N).
    use_cache: with blocks and a block-causal / causal model, keep an exact KV cache.
    max_context: slide the cache window to at most this many tokens (beyond the training context).
    seed: an int (row b uses seed + b) or one seed per row; gives batch-invariant results.
    template: [B, N] ids with ``process.mask_id`` where tokens must be generated (infilling);
        other positions are frozen.
    callback: called with a :class:`StepInfo` after every step (streaming).
    denoise: replace the model call (guidance wrappers); same signature as ``_model_call``.
    """
    device = next(model.parameters()).device
    if prompts is None:
        prompts = [[] for _ in range(batch_size or 1)]
    prompts = [list(p) for p in prompts]
    B = len(prompts)
    if B == 0:
        raise ConfigError("no prompts given; pass a list of prompts (use [''] for unconditional samples)")
    if max_new_tokens < 1 and template is None:
        raise ConfigError(f"max_new_tokens={max_new_tokens} must be at least 1")
    if steps < 1:
        raise ConfigError(f"steps={steps} must be at least 1")
    if template is not None:
        template = torch.as_tensor(template, dtype=torch.long, device=device)
        if template.dim() == 1:
            template = template[None].expand(B, -1)
        max_new_tokens = template.shape[1]
    N = max_new_tokens
    gens = _generators(seed, generator, B, device)

    prompt_ids, prompt_valid = left_pad(prompts, pad_token_id, device)  # [B, P]
    P = prompt_ids.shape[1]
    new = process.prior((B, N), device=device, generator=gens)  # [B, N]
    frozen_new = torch.zeros(B, N, dtype=torch.bool, device=device)
    if template is not None:
        frozen_new = template != process.mask_id
        new = torch.where(frozen_new, template, new)
    x = torch.cat([prompt_ids, new], dim=1)  # [B, T]
    frozen = torch.cat([torch.ones_like(prompt_valid), frozen_new], dim=1)  # prompt + template are fixed
    valid = torch.cat([prompt_valid, torch.ones(B, N, dtype=torch.bool, device=device)], dim=1)

    config = model.config
    structural = getattr(config, "attention", "bidirectional")
    lengths = prompt_valid.sum(1)  # [B]
    if block_size is not None and structural == "block_causal" and config.block_size:
        block_size = config.block_size if block_size is None else block_size
        if block_size % config.block_size and config.block_size % block_size:
            raise ConfigError(f"block_size={block_size} does not fit the model's block size {config.block_size}")
    # positions: the first new token of every row sits at the same block-aligned position
    align = block_size or 1
    start = ((lengths.max() + align - 1) // align) * align if P else torch.tensor(0, device=device)
    positions = torch.cumsum(valid.long(), 1) - 1 - lengths[:, None] + start  # [B, T]
    positions = torch.where(valid, positions, torch.zeros_like(positions)).clamp_min(0)
    if max_context is None and int(positions.max()) >= config.max_position_embeddings:
        raise ConfigError(
            f"prompt + max_new_tokens needs position {int(positions.max())} but the model allows "
            f"{config.max_position_embeddings}; shorten the prompt or max_new_tokens"
        )

    call = denoise or _model_call(model, process)
    ctx = make_context(model, process, call, valid, positions, block_size=block_size,
                       cache="auto" if use_cache else "none", max_context=max_context)

    windows = [(P + lo, P + min(lo + (block_size or N), N)) for lo in range(0, N, block_size or N)]
    steps_per = [max(1, steps // len(windows))] * len(windows)
    nfe, started = 0, time.perf_counter()
    for lo, hi in windows:
        sampler.set_timesteps(steps_per[0], device=device)
        cached_logits, last_x = None, None
        for t_f, s_f in sampler.pairs():
            t = torch.full((B,), t_f, device=device)
            s = torch.full((B,), s_f, device=device)
            x_win = x[:, lo:hi]
            reuse = getattr(sampler, "skips_unchanged", False) and last_x is not None and torch.equal(x_win, last_x)
            if reuse:
                logits = cached_logits
            else:
                logits = ctx.logits(x, lo, hi, t)  # [B, hi - lo, V]
                nfe += 1
            out = sampler.step(logits, t, s, x_win, generator=gens)
            x_new = torch.where(frozen[:, lo:hi], x_win, out.x_s)
            cached_logits, last_x = logits, x_win.clone()
            x[:, lo:hi] = x_new
            if callback is not None:
                callback(StepInfo(x=x, window=(lo, hi), t=t_f, s=s_f, nfe=nfe))
        ctx.commit(x, lo, hi)
        if stop_at_eos and eos_token_id is not None and block_size is not None:
            if bool((x[:, P:hi] == eos_token_id).any(1).all()):
                x = x[:, :hi]
                break
    seconds = time.perf_counter() - started

    generated = []
    for b in range(B):
        row = x[b, P:].tolist()
        if stop_at_eos and eos_token_id is not None and eos_token_id in row:
            row = row[: row.index(eos_token_id)]
        generated.append(row)
    return GenerationOutput(
        sequences=x, generated=generated, nfe=nfe, seconds=seconds,
        lengths=[len(g) for g in generated], prompt_lengths=lengths.tolist(),
    )


def check_compatible(model, process) -> None:
    """Raise if a process cannot be served by this model (time conditioning mismatch)."""
    needs_t = process.time_conditioning
    has_t = bool(getattr(model.config, "time_conditioning", False))
    if needs_t and not has_t:
        raise IncompatibleError(
            "the process is time-conditioned but the model has no time embedding; set process.time_conditioning=false or build the model with time_conditioning"
        )
