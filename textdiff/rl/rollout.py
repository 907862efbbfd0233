"""Rollouts: ``num_generations`` completions per prompt through textdiff's own decoding.

Rows are grouped per prompt (TRL's layout): row b holds generation b mod G of prompt b // G, with
G = ``num_generations``. Every row has its own seed (:func:`rollout_seeds`: a function of the run's
seed, the RL step and the GLOBAL prompt index only), and :func:`textdiff.generation.generate` draws a
row's noise from that row's generator alone, so a rollout does not depend on which rows share its
batch, on ``generation_batch_size`` or on the number of processes. Any sampler, block size and
cache mode of ``generate()`` serves (confidence / threshold samplers, exact or approximate caches).

Outputs, in the layout :mod:`textdiff.rl.logprob` reads::

    prompt_ids [B, P]       left-padded with pad_token_id; prompt_mask 1 on real tokens
    completion_ids [B, N]   N = max_completion_length; after the first stop token every position
                            holds stop_token_ids[0] (canonical: blocks skipped by the early stop at
                            EOS and tokens the model wrote after its answer read the same)
    completion_mask [B, N]  1 up to and including the first stop token (all N when there is none)
    truncated [B]           no stop token in the N positions

``tokens_per_s`` counts completion positions decoded per second, B · N / seconds (what a
fixed-length decoder such as d1's produces in the same time).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from ..chat_template import render_chat
from ..errors import ConfigError
from ..generation import generate
from ..generation_io import left_pad


@dataclass
class Rollouts:
    prompt_ids: torch.Tensor  # [B, P] long, left-padded
    prompt_mask: torch.Tensor  # [B, P] long, 1 on prompt tokens
    completion_ids: torch.Tensor  # [B, N] long
    completion_mask: torch.Tensor  # [B, N] long, 1 up to and including the first stop token
    truncated: torch.Tensor  # [B] bool: no stop token within N
    texts: list[str]  # decoded completions (stop token and specials dropped); [] without a tokenizer
    seeds: list[int]  # the per-row seeds used
    num_generations: int
    seconds: float = 0.0  # wall-clock time of the generate() calls
    nfe: int = 0  # denoiser evaluations of sampling steps, summed over the calls
    model_calls: int = 0
    extras: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_ids.numel() / max(self.seconds, 1e-9)

    @property
    def lengths(self) -> torch.Tensor:
        """[B] tokens of each completion (stop token included)."""
        return self.completion_mask.sum(1)


def rollout_seeds(seed: int, step: int, prompt_indices: Sequence[int], num_generations: int) -> list[int]:
    """One seed per row (prompt-major, G rows per prompt) from (seed, step, global prompt index,
    generation index) alone."""
    return [(int(seed) * 1_000_003 + int(step) * 65_537 + int(i) * 257 + g + 1) % (2**62)
            for i in prompt_indices for g in range(num_generations)]


def prompt_texts(rows: Sequence[dict], tokenizer, prompt_field: str = "prompt") -> tuple[list[str], bool]:
    """(prompt strings, conversational?) of dataset rows: a string column is used as it is, a list of
    chat messages is rendered by the tokenizer's chat template with the assistant header appended
    (TRL's conversational prompts)."""
    texts, chat = [], None
    for i, row in enumerate(rows):
        if prompt_field not in row:
            raise ConfigError(f"dataset row {i} has no {prompt_field!r} column (rl.prompt_field); columns: {sorted(row)}")
        p = row[prompt_field]
        is_chat = isinstance(p, list)
        if chat is not None and is_chat != chat:
            raise ConfigError(f"dataset row {i}: prompts mix plain text and chat messages; use one kind")
        chat = is_chat
        if is_chat:
            if not getattr(tokenizer, "chat_template", None):
                raise ConfigError("the prompts are chat messages but the tokenizer has no chat template; "
                                  "use a tokenizer with one or give plain-text prompts")
            texts.append(render_chat(tokenizer, p, add_generation_prompt=True))
        elif isinstance(p, str):
            texts.append(p)
        else:
            raise ConfigError(f"dataset row {i}: {prompt_field!r} must be a string or a list of chat messages, "
                              f"got {type(p).__name__}")
    return texts, bool(chat)


def encode_prompts(texts: Sequence[str], tokenizer, max_prompt_length: Optional[int] = None) -> list[list[int]]:
    """Token ids of prompt strings (no special tokens added: a chat template writes its own),
    cut to their LAST ``max_prompt_length`` tokens."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return [x[-max_prompt_length:] if max_prompt_length else x for x in ids]


def as_completions(texts: Sequence[str], conversational: bool) -> list:
    """Completions as reward functions receive them: strings, or [{"role": "assistant", "content": text}]."""
    return [[{"role": "assistant", "content": t}] for t in texts] if conversational else list(texts)


def stop_mask(completion_ids: torch.Tensor, stop_token_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(completion_mask [B, N] long: 1 up to and including the first stop token; truncated [B] bool)."""
    is_stop = torch.isin(completion_ids, torch.as_tensor(list(stop_token_ids), device=completion_ids.device))
    B, N = completion_ids.shape
    has = is_stop.any(1)
    first = torch.where(has, is_stop.int().argmax(1), torch.full((B,), N - 1, device=completion_ids.device))
    mask = torch.arange(N, device=completion_ids.device)[None] <= first[:, None]
    return mask.long(), ~has


@torch.no_grad()
def rollout(model, process, sampler, prompts: Sequence[Sequence[int]], seeds: Sequence[int], *, num_generations: int,
            max_completion_length: int, steps: int, stop_token_ids: Sequence[int], block_size: Optional[int] = None,
            use_cache="auto", pad_token_id: int = 0, generation_batch_size: Optional[int] = None, tokenizer=None,
            denoise=None) -> Rollouts:
    """``num_generations`` completions of every prompt (token-id lists), one seed per row
    (``len(prompts) · num_generations`` seeds, :func:`rollout_seeds`)."""
    G, N = int(num_generations), int(max_completion_length)
    if G < 1:
        raise ConfigError(f"num_generations={num_generations} must be at least 1")
    if not stop_token_ids:
        raise ConfigError("rollouts need at least one stop token id (the tokenizer's EOS) to mark where a completion ends")
    rows = [list(p) for p in prompts for _ in range(G)]  # [B] prompt-major
    if len(seeds) != len(rows):
        raise ConfigError(f"got {len(seeds)} seeds for {len(rows)} rows ({len(prompts)} prompts x {G}); give one per row")
    chunk = int(generation_batch_size or len(rows))
    eos = int(stop_token_ids[0])
    pieces, seconds, nfe, calls = [], 0.0, 0, 0
    for lo in range(0, len(rows), chunk):
        part = rows[lo: lo + chunk]
        started = time.perf_counter()
        out = generate(model, process, sampler, part, max_new_tokens=N, steps=steps, block_size=block_size,
                       use_cache=use_cache, seed=list(seeds[lo: lo + chunk]), pad_token_id=pad_token_id,
                       eos_token_id=eos, stop_at_eos=block_size is not None, denoise=denoise)
        seconds += time.perf_counter() - started
        nfe, calls = nfe + out.nfe, calls + out.model_calls
        new = out.sequences[:, max(len(p) for p in part):]  # [b, <= N] (fewer after an early stop at EOS)
        pieces.append(torch.nn.functional.pad(new.cpu(), (0, N - new.shape[1]), value=eos))  # blocks skipped by the early stop
    completion_ids = torch.cat(pieces, 0)  # [B, N]
    completion_mask, truncated = stop_mask(completion_ids, stop_token_ids)
    completion_ids = torch.where(completion_mask.bool(), completion_ids, torch.full_like(completion_ids, eos))
    prompt_ids, prompt_valid = left_pad(rows, pad_token_id, "cpu")
    texts = []
    if tokenizer is not None:
        kept = [ids[: n - (0 if cut else 1)] for ids, n, cut in
                zip(completion_ids.tolist(), completion_mask.sum(1).tolist(), truncated.tolist())]
        texts = tokenizer.batch_decode(kept, skip_special_tokens=True)
    return Rollouts(prompt_ids=prompt_ids, prompt_mask=prompt_valid.long(), completion_ids=completion_ids,
                    completion_mask=completion_mask, truncated=truncated, texts=texts, seeds=list(seeds),
                    num_generations=G, seconds=seconds, nfe=nfe, model_calls=calls)
