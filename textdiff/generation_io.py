"""What :func:`textdiff.generation.generate` hands out and takes in: the options of one call
(:class:`DecodingPlan`, built once and passed down), its output records (:class:`GenerationOutput`,
the streamed :class:`StepInfo`, the :class:`Layout` a guidance wrapper is told), left padding of prompts, and the wrappers that turn a denoiser into the one model call
the sampling loop makes (:func:`_model_call`) and count its forwards (:class:`_Counted`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch

from .contexts import apply_keep, call_keeping, takes_logits_to_keep

# ---------------------------------------------------------------------------------------------
# Inputs and outputs
# ---------------------------------------------------------------------------------------------


@dataclass
class DecodingPlan:
    """The options of one :func:`textdiff.generation.generate` call (its keyword arguments, documented
    there), built once by ``generate`` / ``stream`` and handed to the set-up and the loop."""

    max_new_tokens: int = 128  # N (a template's width replaces it)
    steps: int = 128  # sampler steps in total, split evenly across windows
    batch_size: Optional[int] = None  # rows when no prompts are given
    block_size: Optional[int] = None  # window width (None: one window of N)
    use_cache: Union[bool, str] = True
    max_context: Optional[int] = None
    lookback: Optional[int] = None
    seed: Union[int, Sequence[int], None] = None
    generator: Any = None
    pad_token_id: int = 0
    eos_token_id: Union[int, Sequence[int], None] = None  # one id or several (each ends a row)
    stop_at_eos: bool = True
    template: Optional[Any] = None  # [N] or [B, N] ids, blanks marked by infill_id (default process.mask_id)
    infill_id: Optional[int] = None
    denoise: Optional[Callable] = None  # replaces the model call (guidance, oracles)
    pad_after_eos: bool = False  # after each block, tokens after a row's first EOS become pad_token_id


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # [B, P + N] final rows (left-padded prompts + new tokens)
    generated: list[list[int]]  # per row: the new tokens (cut before EOS when stop_at_eos)
    nfe: int  # denoiser evaluations of sampling steps
    seconds: float  # wall-clock time of the sampling loop
    lengths: list[int] = field(default_factory=list)  # len(generated[b])
    prompt_lengths: list[int] = field(default_factory=list)
    model_calls: int = 0  # every network forward (cache prefill / commit and guidance branches included)
    steps: int = 0  # sampler steps taken (including those whose model call was skipped)


@dataclass
class StepInfo:
    """What a streaming consumer receives after every sampler step."""

    x: torch.Tensor  # [B, P + N] a snapshot of the current rows
    window: tuple[int, int]  # [lo, hi) of the window in row coordinates
    t: Union[float, torch.Tensor]  # the step's time (float, or [B] for per-row grids)
    s: Union[float, torch.Tensor]
    nfe: int
    x0_pred: Optional[torch.Tensor] = None  # [B, hi - lo] the sampler's guess, when it gives one


@dataclass
class Layout:
    """What a ``denoise`` wrapper with a ``setup(layout)`` method learns about one call (guidance)."""

    valid: torch.Tensor  # [B, T] False on left padding
    positions: torch.Tensor  # [B, T] absolute positions
    prompt: torch.Tensor  # [B, T] True on prompt tokens
    first_new_position: int  # positions >= this are generated (or template) tokens
    process: Any = None
    model: Any = None


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


def _model_call(model, process):
    """Wrap the model as (ids, t, mask, pos, cache, update, logits_to_keep=0) -> logits; t only if
    the process needs it. ``logits_to_keep`` (HF semantics, see :mod:`textdiff.contexts`) reaches
    a model whose forward names it; other models compute every row and are cut afterwards."""
    accepts = takes_logits_to_keep(model)

    def denoise(ids, t, attention_mask, position_ids, cache, update_cache, logits_to_keep=0, **inputs):
        kwargs = {}
        if process.time_conditioning:
            kwargs["t"] = process.network_time(t)
        if accepts and not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
            kwargs["logits_to_keep"] = logits_to_keep
        out = model(ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                    update_cache=update_cache, **kwargs, **inputs)
        logits = out.logits if hasattr(out, "logits") else out
        if logits.shape[1] == ids.shape[1] and not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
            logits = apply_keep(logits, logits_to_keep)
        return logits

    return denoise


class _Counted:
    """Counts network forwards of a denoise callable (``forwards_per_call`` of wrappers, else 1)."""

    def __init__(self, denoise):
        self.denoise = denoise
        self.calls = 0
        self.accepts = takes_logits_to_keep(denoise)

    def __call__(self, *args, logits_to_keep=0, **inputs):
        self.calls += int(getattr(self.denoise, "forwards_per_call", 1))
        return call_keeping(self.denoise, args, logits_to_keep, self.accepts, inputs)
