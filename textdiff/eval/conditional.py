"""Monte-Carlo conditional likelihood: score an answer given a prompt (LLaDA-style).

For a masked diffusion model, LLaDA (Nie et al. 2025, Eq. 3 / their conditional form) bounds

    −log p_θ(answer | prompt) ≤ E_t E_{x_t} [ Σ_{l in answer} w(t) [x_t^l = MASK] (−log p_θ(x0^l | prompt, x_t)) ]

where only answer tokens are corrupted and the prompt stays clean. This is exactly the NELBO of
:func:`textdiff.objective.nelbo_terms` with the prompt ``frozen`` (the same code as training and SFT),
so the estimator works for every process: for the AR process it is the exact conditional NLL
(one draw suffices). The K draws of t for one pair are stratified, t_k = (k + u) / K, and the pair
is evaluated as one batch of K identical rows (no padding, so a bidirectional model never sees a
pad token). A prompt longer than the model's context is cut from the left.

(LLaDA's lower-variance variant, which masks exactly l ~ U{1..|answer|} tokens with weight |answer|/l,
is not used: it needs a model call outside the shared loss code.)

``greedy_match`` answers lm-eval's "is the answer the greedy continuation?" by decoding the answer
positions with the ancestral sampler at temperature 0 through :func:`textdiff.generation.generate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..errors import ConfigError, DataError
from ..objective import nelbo_terms
from .common import generator_for


@dataclass
class ConditionalScore:
    nll: float  # nats: an upper bound on −log p(answer | prompt) (exact for AR)
    stderr: float  # Monte-Carlo standard error of nll (0 for AR)
    answer_tokens: int
    prompt_tokens: int  # after left truncation


def _context_limit(model, seq_len: Optional[int]) -> Optional[int]:
    return seq_len or getattr(getattr(model, "config", None), "max_position_embeddings", None)


@torch.no_grad()
def conditional_nll(
    model,
    process,
    prompt_ids: Sequence[int],
    answer_ids: Sequence[int],
    *,
    mc_samples: int = 32,
    seed: int = 0,
    index: int = 0,
    seq_len: Optional[int] = None,
) -> ConditionalScore:
    """NELBO of ``answer_ids`` given ``prompt_ids`` (token-id lists). ``index`` keys the noise of
    this pair (with ``seed``), so a pair's score does not depend on which others are scored."""
    answer = list(answer_ids)
    if not answer:
        raise DataError("the answer is empty; conditional likelihood needs at least one answer token")
    limit = _context_limit(model, seq_len)
    prompt = list(prompt_ids)
    if limit is not None:
        if len(answer) > limit:
            raise DataError(f"the answer has {len(answer)} tokens, more than the model's context of {limit}")
        prompt = prompt[max(0, len(prompt) + len(answer) - limit):]
    exact = not getattr(process, "is_diffusion", True)
    K = 1 if exact else int(mc_samples)
    if K < 1:
        raise ConfigError(f"mc_samples={mc_samples} must be at least 1")
    from .elbo import _model_device

    device = _model_device(model)
    x0 = torch.tensor([prompt + answer] * K, dtype=torch.long, device=device)  # [K, P + A]
    frozen = torch.zeros_like(x0, dtype=torch.bool)
    frozen[:, : len(prompt)] = True
    g = generator_for(seed, index)
    u = torch.rand((), generator=g, dtype=torch.float64)
    t = ((torch.arange(K, dtype=torch.float64) + u) / K).float().to(device)  # stratified [K]
    if getattr(process, "block_size", None) and not exact:
        t = t[:, None].expand(K, x0.shape[1]).contiguous()  # block diffusion takes per-token times
    noise = [generator_for(seed, index, k + 1) for k in range(K)]
    terms = nelbo_terms(model, process, x0, t=t, frozen=frozen if not exact else None,
                        loss_mask=None if not exact else (~frozen).float(), generator=noise)
    per_draw = terms.loss.double().sum(1)  # [K]
    prior = float((process.prior_loss(x0[:1]).double() * (~frozen[:1]).double()).sum())
    nll = float(per_draw.mean()) + prior
    stderr = float(per_draw.std(unbiased=True) / K ** 0.5) if K > 1 else 0.0
    return ConditionalScore(nll=nll, stderr=stderr, answer_tokens=len(answer), prompt_tokens=len(prompt))


@torch.no_grad()
def greedy_match(model, process, prompt_ids: Sequence[int], answer_ids: Sequence[int], *, steps: Optional[int] = None,
                 pad_token_id: int = 0) -> bool:
    """True when greedy decoding (ancestral sampler, temperature 0) of len(answer) positions after the
    prompt reproduces the answer. AR models decode one token per step with the exact KV cache."""
    from ..generation import generate
    from ..registry import build_sampler

    answer = list(answer_ids)
    prompt = list(prompt_ids)
    ar = not getattr(process, "is_diffusion", True)
    if ar:
        prompt = [process.start_token] + prompt  # the AR loop has no position −1
    sampler = build_sampler({"name": "ancestral", "temperature": 0.0}, process)
    out = generate(model, process, sampler, [prompt], max_new_tokens=len(answer), steps=steps or len(answer),
                   block_size=1 if ar else None, seed=0, pad_token_id=pad_token_id, stop_at_eos=False)
    return out.generated[0] == answer
