"""Sampling for evaluation, with its speed: tokens/s, NFE and latency, with device and batch size.

:func:`sample_texts` draws ``num_samples`` unconditional samples in batches through
:func:`textdiff.generation.generate` (the only sampling loop) and times every batch. Sample i uses
seed ``seed + i`` whatever the batch size (generation is batch-invariant per row), and every
categorical draw is float64 (:mod:`textdiff.categorical`; there is no other sampling path).

Speed fields:

* ``tokens_per_s``: new positions decoded (batch × max_new_tokens, before cutting at EOS) divided
  by the summed wall time of the sampling loops (``GenerationOutput.seconds``; tokenization, decoding
  and the warm-up call are excluded);
* ``nfe``: denoiser evaluations of sampling steps per batch (mean); ``model_calls`` adds cache
  prefills and guidance branches;
* ``latency_s``: seconds per batch (mean, median); ``latency_per_sample_s`` = latency / batch;
* ``device``, ``batch_size``, ``dtype``, ``threads``, ``warmup`` (whether one untimed call ran first).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..signatures import checked
from .common import device_name


@checked
def sample_texts(
    model,
    process,
    tokenizer,
    *,
    num_samples: int,
    max_new_tokens: int,
    steps: int,
    sampler="ancestral",
    batch_size: int = 8,
    seed: int = 0,
    block_size: Optional[int] = None,
    use_cache=True,
    stop_at_eos: bool = True,
    prompts: Optional[Sequence[Sequence[int]]] = None,
    warmup: bool = True,
    progress=None,
) -> tuple[list[list[int]], list[str], dict]:
    """(token ids per sample, decoded texts, speed record). AR processes decode one token per step
    (block_size 1, exact KV cache) after their start token. ``progress``: a
    :class:`textdiff.progress.Progress` advanced by each batch's samples (tokens: decoded positions)."""
    from ..generation import generate
    from ..samplers.base import Sampler, build_sampler

    if num_samples < 1 or batch_size < 1:
        raise ConfigError(f"num_samples={num_samples} and batch_size={batch_size} must be at least 1")
    ar = not process.is_diffusion
    if ar:
        block_size, steps = 1, max_new_tokens
    base = [list(p) for p in prompts] if prompts is not None else [[] for _ in range(num_samples)]
    if len(base) != num_samples:
        raise ConfigError(f"got {len(base)} prompts for num_samples={num_samples}")
    if ar:
        base = [[process.start_token] + p for p in base]
    s = sampler if isinstance(sampler, Sampler) else build_sampler(sampler, process)
    kwargs = dict(max_new_tokens=max_new_tokens, steps=steps, block_size=block_size, use_cache=use_cache,
                  pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
                  eos_token_id=tokenizer.eos_token_id, stop_at_eos=stop_at_eos)
    if warmup:  # first calls pay for allocation / kernel selection; keep them out of the timing
        generate(model, process, s, base[:1], seed=seed, **{**kwargs, "steps": min(steps, 2)})
    ids, seconds, nfes, calls, sizes = [], [], [], [], []
    for start in range(0, num_samples, batch_size):
        batch = base[start:start + batch_size]
        out = generate(model, process, s, batch, seed=[seed + start + b for b in range(len(batch))], **kwargs)
        ids += [list(g) for g in out.generated]
        seconds.append(out.seconds)
        nfes.append(out.nfe)
        calls.append(out.model_calls)
        sizes.append(len(batch))
        if progress is not None:
            progress.update(len(batch), tokens=len(batch) * max_new_tokens)
    texts = [tokenizer.decode(g, skip_special_tokens=True) for g in ids]
    dev = next(model.parameters()).device
    positions = sum(sizes) * max_new_tokens
    lat = np.array(seconds)
    record = {
        "tokens_per_s": positions / max(float(lat.sum()), 1e-12),
        "kept_tokens_per_s": sum(len(g) for g in ids) / max(float(lat.sum()), 1e-12),
        "nfe": float(np.mean(nfes)),
        "model_calls": float(np.mean(calls)),
        "latency_s": float(lat.mean()),
        "latency_median_s": float(np.median(lat)),
        "latency_per_sample_s": float(lat.sum() / sum(sizes)),
        "batches": len(sizes),
        "batch_size": batch_size,
        "device": str(dev),
        "device_name": device_name(dev),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "eos_cut_samples": sum(1 for g in ids if len(g) < max_new_tokens),
    }
    return ids, texts, record
