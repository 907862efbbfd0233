"""``generate()``: the only place the denoiser is called during sampling.

Layout of one batch: every row is ``[left padding | prompt | N new positions]``. The new positions
start from the process prior (all [MASK] for masked diffusion); prompt and padding are frozen, and so
are the non-mask positions of an infilling ``template``.

The OUTER loop walks over windows of new positions: one window of N positions (full-sequence
diffusion), or blocks of ``block_size`` positions left to right (block diffusion / semi-AR). The
INNER loop runs any sampler on the current window::

    for window in windows:                        # blocks, left to right
        sampler.set_timesteps(steps_per_window)
        sampler.begin(x[window], generator)        # state-dependent grids (first-hitting)
        for t, s in sampler.pairs():
            if sampler.finished(x[window]): break  # e.g. no [MASK] left
            logits = context.logits(x, window, t)  # the model call (with or without a KV cache)
            x[window] = sampler.step(logits, t, s, x[window]).x_s   # frozen positions restored
        context.commit(x, window)                   # exact cache: append the clean block's keys/values

How the model sees the context is a :class:`~textdiff.contexts.Context` strategy chosen by
``make_context`` (the single hook for caches). Samplers never see blocks or caches. For a process
whose clean positions carry over (``clean_logits_unused``: masked / block diffusion, SUBS) the loop
passes the window's [MASK] positions as ``rows=``, so the output layer runs on those rows only (no
sampler reads the logits of a clean position there; ``tests/test_noise_rows.py``).

Counting: ``nfe`` counts the denoiser evaluations of sampling steps (one per step that was not
skipped by the cached-NFE rule or an early exit); ``model_calls`` counts every network forward,
including KV-cache prefill / commit calls and both branches of classifier-free guidance.

Reproducibility: ``seed=int`` gives row b the generator seeded with ``seed + b`` (or pass one seed
per row); each row draws all its noise from its own generator, so a row's result does not depend on
the other rows of the batch (batch invariance), up to floating-point differences of batched kernels.

Streaming: ``callback(StepInfo)`` after every step, or iterate ``stream(...)`` (same arguments),
which yields the :class:`StepInfo` objects and keeps the final :class:`GenerationOutput` in
``.output``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence, Union

import torch

from .categorical import make_generators
from . import arguments, bounds
from .contexts import make_context
from .errors import ConfigError, IncompatibleError
from .generation_io import (DecodingPlan, GenerationOutput, Layout, StepInfo, _Counted, _model_call,  # noqa: F401
                            left_pad)  # (importable here)
from .signatures import check_keywords, checked, forwarded

# ---------------------------------------------------------------------------------------------
# Generators and times
# ---------------------------------------------------------------------------------------------


def _generators(seed, generator, batch_size, device):
    if generator is not None:
        if isinstance(generator, (list, tuple)) and len(generator) != batch_size:
            raise ConfigError(f"got {len(generator)} generators for {batch_size} prompts; give one per prompt")
        return generator
    if seed is None:
        return None
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [int(seed) + b for b in range(batch_size)]
    if len(seeds) != batch_size:
        raise ConfigError(f"got {len(seeds)} seeds for {batch_size} prompts; give one per prompt or a single int")
    return make_generators(seeds, device="cpu")


def _fork(gens):
    """Per-row generators for one window, seeded by one draw from each row's generator.

    The loop stops a window early once EVERY row is finished, so a row decoded alone may take fewer
    steps (and draws) than in a batch; forking per window keeps its later windows batch-invariant.
    A single shared generator is returned as is.
    """
    if not isinstance(gens, (list, tuple)):
        return gens
    return [torch.Generator(device=g.device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)))
            for g in gens]


def _device(model):
    if getattr(model, "hf_device_map", None):  # spread with device_map: the embedding's execution device
        from .models.dispatch import input_device

        return input_device(model)
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _as_time(t, B: int, device, dtype) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t.to(device=device, dtype=dtype).reshape(B)
    return torch.full((B,), float(t), device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# generate()
# ---------------------------------------------------------------------------------------------


def positions_needed(prompt_len: int, new_tokens: int, block_size: Optional[int] = None) -> int:
    """Positions one decoding needs: the longest prompt rounded up to whole windows (the first new
    token of every row sits at the same block-aligned position), then the N new positions. THE context
    rule: :func:`generate` refuses a call needing more than the model's ``max_position_embeddings``
    (unless ``max_context`` slides the cache); the server admits requests by it (through the
    :mod:`textdiff.layouts` of the model)."""
    align = block_size or 1
    return -(-int(prompt_len) // align) * align + int(new_tokens)


def check_context(config, prompt_len: int, new_tokens: int, plan: DecodingPlan) -> None:
    """Raise when the decoding does not fit in the model's context (see :func:`positions_needed`)."""
    limit = getattr(config, "max_position_embeddings", None)
    need = positions_needed(prompt_len, new_tokens, plan.block_size)
    if plan.max_context is None and limit is not None and need > limit:
        raise ConfigError(
            f"prompt ({prompt_len} tokens) + max_new_tokens ({new_tokens}) needs {need} positions, which exceeds the "
            f"model's context of {limit}; shorten the prompt or max_new_tokens (or set max_context)"
        )


@dataclass
class _Rows:
    """The batch the loop decodes: rows ``[left padding | prompt | N new positions]`` and what goes with them."""

    x: torch.Tensor  # [B, P + N] current tokens
    frozen: torch.Tensor  # [B, P + N] prompt, padding and template tokens: never changed
    valid: torch.Tensor  # [B, P + N] False on left padding
    prompt_valid: torch.Tensor  # [B, P]
    lengths: torch.Tensor  # [B] prompt lengths
    gens: object  # per-row generators (or one shared generator, or None)
    windows: list = field(default_factory=list)  # [(lo, hi)] row coordinates, left to right
    steps_per: int = 1  # sampler steps per window
    read: Optional[Callable] = None  # x_win -> [B, W] bool: positions whose logits the sampler reads (None: all)

    @property
    def P(self) -> int:
        return self.prompt_valid.shape[1]


def _run(model, process, sampler, prompts, plan: DecodingPlan):
    """Validate and set up eagerly (errors raise here); return the loop as a generator that yields
    :class:`StepInfo` and returns :class:`GenerationOutput`."""
    from .samplers.base import Sampler, build_sampler

    if not isinstance(sampler, Sampler):  # a name, mapping or config: build it for this process
        sampler = build_sampler(sampler, process)
    device = _device(model)
    prompts, plan = _checked(prompts, plan)
    template, marker = _template(plan, process, len(prompts), device)
    if template is not None:
        plan = replace(plan, max_new_tokens=template.shape[1])
    if plan.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={plan.max_new_tokens} must be at least 1")
    B, N = len(prompts), plan.max_new_tokens
    bounds.check_steps(plan.steps, N)  # before any allocation: the time grid alone is 8 bytes a step
    bounds.check_memory(B, min(plan.block_size or N, N), process.vocab_size, device, item_bytes=bounds.logit_bytes(model))
    gens = _generators(plan.seed, plan.generator, B, device)
    rows = _initial_rows(process, prompts, plan, template, marker, gens, device)
    config = getattr(model, "config", None)
    _check_block(config, plan.block_size)
    check_context(config, rows.P, plan.max_new_tokens, plan)
    start = positions_needed(rows.P, 0, plan.block_size) if rows.P else 0
    positions = torch.cumsum(rows.valid.long(), 1) - 1 - rows.lengths[:, None] + start  # [B, T]
    positions = torch.where(rows.valid, positions, torch.zeros_like(positions)).clamp_min(0)
    ctx, counted = _context(model, process, plan, rows, positions, start)
    N, P = plan.max_new_tokens, rows.P
    rows.windows = [(P + lo, P + min(lo + (plan.block_size or N), N)) for lo in range(0, N, plan.block_size or N)]
    rows.steps_per = max(1, plan.steps // len(rows.windows))
    # a process whose clean positions carry over (SUBS) reads no logits there: compute the noise rows only
    rows.read = process.is_noise if process.clean_logits_unused and not sampler.reads_committed else None
    return _loop(sampler, ctx, counted, rows, plan)


def _checked(prompts, plan: DecodingPlan):
    """(prompts as token-id lists, plan) after the argument checks."""
    batch_size = arguments.integer("batch_size", plan.batch_size, minimum=1, optional=True)
    if prompts is None:
        prompts = [[] for _ in range(batch_size or 1)]
    if isinstance(prompts, str) or (hasattr(prompts, "__len__") and len(prompts) and isinstance(prompts[0], int)):
        raise ConfigError("prompts must be a list of token-id lists, e.g. [[5, 8, 13]]; tokenize strings first")
    prompts = arguments.token_lists("prompts", prompts)
    if len(prompts) == 0:
        raise ConfigError("no prompts given; pass a list of prompts (use [[]] for unconditional samples)")
    arguments.generation(max_new_tokens=None if plan.template is not None else plan.max_new_tokens, steps=plan.steps,
                         block_size=plan.block_size, max_context=plan.max_context, pad_token_id=plan.pad_token_id,
                         eos_token_id=None if isinstance(plan.eos_token_id, (list, tuple)) else plan.eos_token_id,
                         infill_id=plan.infill_id, stop_at_eos=plan.stop_at_eos,
                         use_cache=plan.use_cache, denoise=plan.denoise, lookback=plan.lookback)
    if isinstance(plan.eos_token_id, (list, tuple)):  # several tokens end an answer
        for i, e in enumerate(plan.eos_token_id):
            arguments.integer(f"eos_token_id[{i}]", e, minimum=0)
    arguments.flag("pad_after_eos", plan.pad_after_eos)
    if plan.generator is None:
        plan = replace(plan, seed=arguments.seeds("seed", plan.seed, count=len(prompts)))
    return prompts, plan


def _template(plan: DecodingPlan, process, B: int, device):
    """(template [B, N] or None, the id marking its blanks)."""
    if plan.template is None:
        return None, None
    marker = process.mask_id if plan.infill_id is None else plan.infill_id
    if marker is None:
        raise ConfigError("this process has no mask token; pass infill_id= to mark the template's blanks")
    try:
        template = torch.as_tensor(plan.template, dtype=torch.long, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"template must be [N] or [B, N] token ids (a tensor or lists of ints), got "
                          f"{type(plan.template).__name__}") from None
    if template.dim() == 1:
        template = template[None].expand(B, -1)
    if template.dim() != 2 or template.shape[0] != B:
        raise ConfigError(f"template must be [N] or [{B}, N] token ids, got shape {list(template.shape)}")
    return template, marker


def _initial_rows(process, prompts, plan: DecodingPlan, template, marker, gens, device) -> _Rows:
    """Left-padded prompts followed by N positions drawn from the process prior (template tokens kept)."""
    B, N = len(prompts), plan.max_new_tokens
    prompt_ids, prompt_valid = left_pad(prompts, plan.pad_token_id, device)  # [B, P]
    bad = prompt_valid & ((prompt_ids < 0) | (prompt_ids >= process.vocab_size))
    if bool(bad.any()):
        raise ConfigError(f"prompt token id {int(prompt_ids[bad][0])} is outside the vocabulary [0, {process.vocab_size})")
    new = process.prior((B, N), device=device, generator=gens)  # [B, N]
    frozen_new = torch.zeros(B, N, dtype=torch.bool, device=device)
    if template is not None:
        frozen_new = template != marker
        new = torch.where(frozen_new, template, new)
    x = torch.cat([prompt_ids, new], dim=1)  # [B, T]
    frozen = torch.cat([torch.ones_like(prompt_valid), frozen_new], dim=1)  # prompt + template are fixed
    valid = torch.cat([prompt_valid, torch.ones(B, N, dtype=torch.bool, device=device)], dim=1)
    return _Rows(x=x, frozen=frozen, valid=valid, prompt_valid=prompt_valid, lengths=prompt_valid.sum(1), gens=gens)


def _check_block(config, block_size: Optional[int]) -> None:
    """A block-causal model decodes in windows that are whole blocks or whole fractions of one."""
    model_block = getattr(config, "block_size", None)
    if block_size is not None and getattr(config, "attention", "bidirectional") == "block_causal" and model_block:
        if block_size % model_block and model_block % block_size:
            raise ConfigError(f"block_size={block_size} does not fit the model's block size {model_block}")


def _context(model, process, plan: DecodingPlan, rows: _Rows, positions, start: int):
    """(the context strategy of :mod:`textdiff.contexts`, the counted model call)."""
    call = plan.denoise or _model_call(model, process)
    if hasattr(call, "setup"):
        prompt = torch.zeros_like(rows.valid)
        prompt[:, :rows.P] = rows.prompt_valid
        call.setup(Layout(valid=rows.valid, positions=positions, prompt=prompt, first_new_position=start,
                          process=process, model=model))
    counted = _Counted(call)
    ctx = make_context(model, process, counted, rows.valid, positions, block_size=plan.block_size,
                       cache=plan.use_cache, max_context=plan.max_context, lookback=plan.lookback)
    return ctx, counted


def _before(row: list, stops: list) -> list:
    """``row`` up to (without) its first token in ``stops``."""
    hits = [i for i, tok in enumerate(row) if tok in stops]
    return row[: hits[0]] if hits else row


@torch.no_grad()
def _loop(sampler, ctx, counted, rows: _Rows, plan: DecodingPlan):
    """The sampling loop: yields :class:`StepInfo` after every step, returns :class:`GenerationOutput`.

    ``rows.read(x_win) -> [B, W]`` bool: the positions whose logits the sampler can read (None: all);
    the context computes only those rows (the others are zeros). ``plan.eos_token_id``: one id or a list;
    ``plan.pad_after_eos``: after each block, every token after a row's first EOS becomes ``pad_token_id``."""
    x, frozen, P, read = rows.x, rows.frozen, rows.P, rows.read
    eos_token_id = plan.eos_token_id if plan.stop_at_eos else None
    B, device = x.shape[0], x.device
    eos = None if eos_token_id is None else torch.as_tensor(
        [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), dtype=torch.long, device=device)
    nfe, taken, started = 0, 0, time.perf_counter()
    skips = sampler.skips_unchanged
    for lo, hi in rows.windows:
        gens = _fork(rows.gens)  # a row's noise in later windows must not depend on other rows' step counts
        sampler.set_timesteps(rows.steps_per, device=device)
        start = sampler.begin(x[:, lo:hi], generator=gens)  # a sampler may draw the window's start itself
        if start is not None:
            x[:, lo:hi] = torch.where(frozen[:, lo:hi], x[:, lo:hi], start)
        cached_logits, last_x = None, None
        for t_f, s_f in sampler.pairs():
            x_win = x[:, lo:hi]
            if sampler.finished(x_win):
                break
            t64, s64 = _as_time(t_f, B, device, torch.float64), _as_time(s_f, B, device, torch.float64)
            reuse = skips and last_x is not None and torch.equal(x_win, last_x)
            if reuse:
                logits = cached_logits
            else:
                ctx.inputs = sampler.denoiser_inputs()  # e.g. self-conditioning logits
                logits = ctx.logits(x, lo, hi, t64.float(), rows=None if read is None else read(x_win))  # [B, hi - lo, V]
                nfe += 1
            out = sampler.step(logits, t64, s64, x_win, generator=gens)
            x_new = torch.where(frozen[:, lo:hi], x_win, out.x_s)
            if skips:
                cached_logits, last_x = logits, x_win.clone()
            x[:, lo:hi] = x_new
            taken += 1
            yield StepInfo(x=x.clone(), window=(lo, hi), t=t_f, s=s_f, nfe=nfe, x0_pred=out.x0_pred)
        x[:, lo:hi] = torch.where(frozen[:, lo:hi], x[:, lo:hi], sampler.end(x[:, lo:hi]))
        ctx.commit(x, lo, hi)
        if eos_token_id is not None and plan.block_size is not None:
            ended = torch.isin(x[:, P:hi], eos)  # [B, hi - P]
            if plan.pad_after_eos:  # finished rows: every token after the first EOS is padding
                x[:, P:hi] = x[:, P:hi].masked_fill((ended.cumsum(1) - ended.long()) > 0, plan.pad_token_id)
            if bool(ended.any(1).all()):
                x = x[:, :hi]
                break
    seconds = time.perf_counter() - started

    generated = x[:, P:].tolist()
    if eos_token_id is not None:
        generated = [_before(row, eos.tolist()) for row in generated]
    return GenerationOutput(
        sequences=x, generated=generated, nfe=nfe, seconds=seconds, lengths=[len(g) for g in generated],
        prompt_lengths=rows.lengths.tolist(), model_calls=counted.calls, steps=taken,
    )


@checked
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
    use_cache: Union[bool, str] = True,
    max_context: Optional[int] = None,
    lookback: Optional[int] = None,
    seed: Union[int, Sequence[int], None] = None,
    generator=None,
    pad_token_id: int = 0,
    eos_token_id: Union[int, Sequence[int], None] = None,
    stop_at_eos: bool = True,
    pad_after_eos: bool = False,
    template: Optional[torch.Tensor] = None,
    infill_id: Optional[int] = None,
    callback: Optional[Callable[[StepInfo], None]] = None,
    denoise: Optional[Callable] = None,
) -> GenerationOutput:
    """Sample new tokens after each prompt (or fill a template).

    model: the denoiser (``model(ids, t=..., attention_mask=..., position_ids=..., cache=...,
        update_cache=...)``); only its parameters' device and ``config`` are read when ``denoise``
        is given.
    process: the forward process the model serves. sampler: a Sampler, or a name / mapping / config
        to build one for ``process`` (``"first_hitting"``, ``{"name": "confidence", "ordering": "margin"}``).
    prompts: token-id lists (may differ in length; may be empty); or None with ``batch_size``.
    max_new_tokens: N, the number of new positions per row.
    steps: sampler steps in total; with blocks, split evenly across blocks (at least 1 each).
    block_size: generate blocks of this many tokens left to right (None: one window of N).
    use_cache: True (= "auto": an exact KV cache with blocks and a block-causal / causal model),
        False (= "none"), or a mode of :func:`textdiff.contexts.make_context`: "exact", or the
        APPROXIMATE "prefix" / "dual" caches for bidirectional models decoded in blocks.
    max_context: slide the cache window to at most this many tokens (beyond the training context).
    lookback: with the "prefix" / "dual" caches, the tokens before a window fed again with it at every
        step (default: the model's ``config.lookback``, 1 for Dream, whose logits at i come from i − 1);
        0 leaves the token before the block in the stale cache, as Fast-dLLM's Dream decoding does.
    seed: an int (row b uses seed + b) or one seed per row; gives batch-invariant results.
    generator: a torch.Generator (repeatable, not batch-invariant) or one per row.
    eos_token_id, stop_at_eos: cut each row before its first EOS (an id, or a list of ids that all end
        an answer); with blocks, stop once every row has produced an EOS.
    pad_after_eos: with blocks, after each block replace every token after a row's first EOS by
        ``pad_token_id`` (finished rows are padded, as DiffusionGemma's ``generate`` does).
    template: [N] or [B, N] ids with ``infill_id`` (default ``process.mask_id``) where tokens must be
        generated (infilling at arbitrary positions); other positions are frozen.
    callback: called with a :class:`StepInfo` after every step (streaming); see also :func:`stream`.
    denoise: replace the model call (guidance wrappers, oracle denoisers); same signature as
        ``_model_call``'s result; an object with ``setup(layout)`` is told the :class:`Layout` first.
    """
    if callback is not None and not callable(callback):
        raise ConfigError(f"callback must be callable (it receives a StepInfo), got {type(callback).__name__}")
    plan = DecodingPlan(max_new_tokens=max_new_tokens, steps=steps, batch_size=batch_size, block_size=block_size,
                        use_cache=use_cache, max_context=max_context, lookback=lookback, seed=seed, generator=generator,
                        pad_token_id=pad_token_id, eos_token_id=eos_token_id, stop_at_eos=stop_at_eos, template=template,
                        infill_id=infill_id, denoise=denoise, pad_after_eos=pad_after_eos)
    stream_ = GenerationStream(_run(model, process, sampler, prompts, plan))
    for info in stream_:
        if callback is not None:
            callback(info)
    return stream_.output


class GenerationStream:
    """Iterator over the :class:`StepInfo` of one generation; ``.output`` is set when it ends."""

    def __init__(self, run):
        self._run = run
        self.output: Optional[GenerationOutput] = None

    def __iter__(self):
        self.output = yield from self._run


def stream(model, process, sampler, prompts=None, **kwargs) -> GenerationStream:
    """Same arguments as :func:`generate` (but no ``callback``): iterate to get every step::

        s = stream(model, process, "ancestral", [[1, 2]], max_new_tokens=16, steps=8, seed=0)
        for info in s:
            show(info.x)
        result = s.output
    """
    if "callback" in kwargs:
        raise ConfigError("stream() yields every step itself; drop the callback argument")
    check_keywords("stream", kwargs, forwarded(stream, generate, ("model", "process", "sampler", "prompts", "callback")))
    return GenerationStream(_run(model, process, sampler, prompts, DecodingPlan(**kwargs)))


def check_compatible(model, process) -> None:
    """Raise if a process cannot be served by this model (time conditioning mismatch)."""
    needs_t = process.time_conditioning
    has_t = bool(getattr(model.config, "time_conditioning", False))
    if needs_t and not has_t:
        raise IncompatibleError(
            "the process is time-conditioned but the model has no time embedding; set process.time_conditioning=false or build the model with time_conditioning"
        )
    if has_t and not needs_t:
        raise IncompatibleError(
            f"the model is time-conditioned but process {process.config.name!r} does not feed t; set process.time_conditioning=true (or use a time-free model)"
        )
