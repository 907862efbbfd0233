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
from ..signatures import checked
from .common import generator_for


@dataclass
class ConditionalScore:
    nll: float  # nats: an upper bound on −log p(answer | prompt) (exact for AR)
    stderr: float  # Monte-Carlo standard error of nll (0 for AR)
    answer_tokens: int
    prompt_tokens: int  # after left truncation


def _context_limit(model, seq_len: Optional[int]) -> Optional[int]:
    return seq_len or getattr(getattr(model, "config", None), "max_position_embeddings", None)


def _pair_rows(model, process, prompt_ids, answer_ids, mc_samples: int, seed: int, index: int, seq_len: Optional[int]):
    """The K rows of one (prompt, answer) pair: x0 [K, P + A], frozen [K, P + A], times, generators."""
    answer = list(answer_ids)
    if not answer:
        raise DataError("the answer is empty; conditional likelihood needs at least one answer token")
    limit = _context_limit(model, seq_len)
    prompt = list(prompt_ids)
    if limit is not None:
        if len(answer) > limit:
            raise DataError(f"the answer has {len(answer)} tokens, more than the model's context of {limit}")
        prompt = prompt[max(0, len(prompt) + len(answer) - limit):]
    exact = not process.is_diffusion
    K = 1 if exact else int(mc_samples)
    if K < 1:
        raise ConfigError(f"mc_samples={mc_samples} must be at least 1")
    x0 = torch.tensor([prompt + answer] * K, dtype=torch.long)  # [K, P + A]
    frozen = torch.zeros_like(x0, dtype=torch.bool)
    frozen[:, : len(prompt)] = True
    g = generator_for(seed, index)
    u = torch.rand((), generator=g, dtype=torch.float64)
    t = ((torch.arange(K, dtype=torch.float64) + u) / K).float()  # stratified [K]
    if process.block_size and not exact:
        t = t[:, None].expand(K, x0.shape[1]).contiguous()  # block diffusion takes per-token times [K, P + A]
    noise = [generator_for(seed, index, k + 1) for k in range(K)]
    return {"x0": x0, "frozen": frozen, "t": t, "noise": noise, "exact": exact, "prompt": len(prompt), "answer": len(answer)}


@torch.no_grad()
def conditional_nll_batch(
    model,
    process,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    mc_samples: int = 32,
    seed: int = 0,
    indices: Optional[Sequence[int]] = None,
    seq_len: Optional[int] = None,
    batch_size: Optional[int] = None,
    on_done=None,
) -> list[ConditionalScore]:
    """:func:`conditional_nll` of many pairs, their K·len(pairs) rows run ``batch_size`` rows per
    forward (rows of equal length only: no padding). Pair i's noise is keyed by ``indices[i]``
    (default i), so every score equals the one-pair call's, whatever the batch size.
    ``on_done(pair_index)`` is called as each pair's last row is scored (progress bars)."""
    from .elbo import _model_device

    device = _model_device(model)
    indices = list(range(len(pairs))) if indices is None else list(indices)
    built = [_pair_rows(model, process, p, a, mc_samples, seed, idx, seq_len) for (p, a), idx in zip(pairs, indices)]
    rows = [(i, k) for i, b in enumerate(built) for k in range(b["x0"].shape[0])]  # (pair, draw)
    rows.sort(key=lambda r: (built[r[0]]["x0"].shape[1], r[0]))  # equal lengths together, pairs in order
    per_draw = [torch.empty(b["x0"].shape[0], dtype=torch.float64) for b in built]
    left = [b["x0"].shape[0] for b in built]
    size = int(batch_size) if batch_size else max(left, default=1)
    start = 0
    while start < len(rows):
        L = built[rows[start][0]]["x0"].shape[1]
        stop = start
        while stop < len(rows) and stop - start < size and built[rows[stop][0]]["x0"].shape[1] == L:
            stop += 1
        chunk = rows[start:stop]
        x0 = torch.stack([built[i]["x0"][k] for i, k in chunk]).to(device)  # [n, L]
        frozen = torch.stack([built[i]["frozen"][k] for i, k in chunk]).to(device)  # [n, L]
        t = torch.stack([built[i]["t"][k] for i, k in chunk]).to(device)  # [n] or [n, L]
        exact = built[chunk[0][0]]["exact"]
        terms = nelbo_terms(model, process, x0, t=t, frozen=frozen if not exact else None,
                            loss_mask=None if not exact else (~frozen).float(),
                            generator=[built[i]["noise"][k] for i, k in chunk])
        totals = terms.loss.double().sum(1).cpu()  # [n]
        for (i, k), v in zip(chunk, totals):
            per_draw[i][k] = v
            left[i] -= 1
            if left[i] == 0 and on_done is not None:
                on_done(i)
        start = stop
    scores = []
    for b, draws in zip(built, per_draw):
        x0, frozen = b["x0"][:1].to(device), b["frozen"][:1].to(device)
        prior = float((process.prior_loss(x0).double() * (~frozen).double()).sum())
        K = draws.numel()
        stderr = float(draws.std(unbiased=True) / K ** 0.5) if K > 1 else 0.0
        scores.append(ConditionalScore(nll=float(draws.mean()) + prior, stderr=stderr, answer_tokens=b["answer"],
                                       prompt_tokens=b["prompt"]))
    return scores


@checked
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
    batch_size: Optional[int] = None,
) -> ConditionalScore:
    """NELBO of ``answer_ids`` given ``prompt_ids`` (token-id lists). ``index`` keys the noise of
    this pair (with ``seed``), so a pair's score does not depend on which others are scored.
    ``batch_size``: rows per forward (default all K draws in one)."""
    return conditional_nll_batch(model, process, [(prompt_ids, answer_ids)], mc_samples=mc_samples, seed=seed,
                                 indices=[index], seq_len=seq_len, batch_size=batch_size)[0]


@torch.no_grad()
def greedy_matches(model, process, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, steps: Optional[int] = None,
                   pad_token_id: int = 0, batch_size: int = 16, on_done=None) -> list[bool]:
    """:func:`greedy_match` of many pairs, ``batch_size`` prompts (ragged, left-padded) per decoding
    call among pairs whose answers have the same length. Greedy decoding is batch-invariant, so
    each result equals the one-pair call's."""
    from ..generation import generate
    from ..samplers.base import build_sampler

    ar = not process.is_diffusion
    sampler = build_sampler({"name": "ancestral", "temperature": 0.0}, process)
    out: list[Optional[bool]] = [None] * len(pairs)
    groups: dict[int, list[int]] = {}
    for i, (_, a) in enumerate(pairs):
        groups.setdefault(len(a), []).append(i)
    for n, members in groups.items():
        for lo in range(0, len(members), max(1, int(batch_size))):
            chunk = members[lo: lo + max(1, int(batch_size))]
            prompts = [([process.start_token] if ar else []) + list(pairs[i][0]) for i in chunk]  # AR: no position −1
            res = generate(model, process, sampler, prompts, max_new_tokens=n, steps=steps or n,
                           block_size=1 if ar else None, seed=0, pad_token_id=pad_token_id, stop_at_eos=False)
            for i, got in zip(chunk, res.generated):
                out[i] = got == list(pairs[i][1])
                if on_done is not None:
                    on_done(i)
    return [bool(x) for x in out]


@checked
def greedy_match(model, process, prompt_ids: Sequence[int], answer_ids: Sequence[int], *, steps: Optional[int] = None,
                 pad_token_id: int = 0) -> bool:
    """True when greedy decoding (ancestral sampler, temperature 0) of len(answer) positions after the
    prompt reproduces the answer. AR models decode one token per step with the exact KV cache."""
    return greedy_matches(model, process, [(prompt_ids, answer_ids)], steps=steps, pad_token_id=pad_token_id)[0]
