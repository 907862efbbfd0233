"""Log-probabilities of rollouts under a masked diffusion policy: the two estimators RL needs.

A masked diffusion LM has no left-to-right factorisation, so π_θ(y | c) of a completion y given a
prompt c is not one forward away. Rows are laid out as generation lays them out::

    ids   [B, P + N] = [ left padding | prompt c | completion (N positions) ]
    valid [B, P + N]   False on the left padding
    completion_mask [B, N]: the tokens of y (up to and including the first EOS); the positions after
                            it are never scored and always shown to the network as [MASK]

Keeping the unscored tail masked makes both estimates concern the marginal π_θ(y | c) (a masked
model's conditionals marginalise every position it still sees as [MASK]).

**One-step per-token estimate** (diffu-GRPO, d1, Zhao et al. 2025)::

    x̃ = [ c with each token masked w.p. p_mask_prompt | all [MASK] ]           (one forward)
    log π_θ(y_l | c) ≈ log p_θ(y_l | x̃)                        for every completion position l

A mean-field proxy (it ignores the other completion tokens); masking the prompt at random makes the
μ inner updates see different views of the same rollout (d1's regulariser). The draws come from
``generator``: the loop passes the SAME generators for the old, reference and current policy within
one inner iteration, so their ratio compares like with like.

**Sequence ELBO** (ESPO, Ou et al. 2025; GDPO, Rojas et al. 2025; LLaDA's likelihood, Nie et al. 2025).
For masked diffusion with any schedule, in the mask-rate variable t (schedule-invariant)::

    log π_θ(y | c) ≥ ELBO(y | c) = E_{t ~ U(0,1)} E_{M ~ t} [ (1/t) Σ_{l ∈ M} log p_θ(y_l | y_{¬M}, c) ]
                                = Σ_{S ⊆ y, S ≠ ∅} (|S| − 1)! (n − |S|)! / n! · Σ_{l ∈ S} log p_θ(y_l | y_{¬S}, c)

(n = |y|; the second line is the average over the n! orders of an any-order autoregressive model,
so with a time-free denoiser ELBO = E_order[log Π_i p_θ(y_σ(i) | y_σ(<i))] ≤ log E_order[Π_i ...]
by Jensen: equality when every order gives the same product, as for the exact denoiser of a
distribution). The estimator here draws the NUMBER masked, not a rate (LLaDA's lower-variance form,
the same expectation)::

    x = ⌊t (n + 1)⌋ ~ U{0, ..., n},  S = a uniformly random x-subset of y,
    ELBO ≈ (n + 1) / x · Σ_{l ∈ S} log p_θ(y_l | y_{¬S}, c)       (0 when x = 0)

``t_samples`` = K draws per row, averaged; ``antithetic``: t_k = (k + u) / K with one u per row
(stratified); ``coupled`` (DiffuCoder's coupled sampling, ESPO's variance reduction): each subset S
is paired with its complement y \\ S (n − x tokens, also ~ U{0..n}) and the two estimates are
averaged, so every token of y is scored exactly once per pair (2K forwards in all). DiffuCoder
couples masks inside a token-level estimate (rates t ∈ [0.2, 0.8], averaged with a fully masked
pass); here the pair enters the sequence ELBO, as in ESPO. Measured at equal forwards (2 per row,
``tests/test_rl_logprob.py``): a coupled pair has 0.3-0.8× the variance of two independent draws for
an exact denoiser and a mildly random network, but 1.6× for a wildly random one; stratified t
(``antithetic``) with 2 draws is sometimes lower still. Not a theorem: measure on your model.

Both estimators are pure functions of a ``denoise`` callable (:data:`Denoiser`; :func:`policy_denoiser`
makes one from a model), the process (its [MASK] id and how it reads logits: SUBS, [MASK] never
predicted), the ids and masks, and the generators.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..categorical import Generator, make_generators, uniform
from ..contexts import takes_logits_to_keep
from ..errors import ConfigError, IncompatibleError

#: (x_t [B, T], t [B] mask rate in [0, 1], valid [B, T] bool, keep: int) -> logits [B, keep, V] of the last keep positions
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class TokenLogProbs:
    logp: torch.Tensor  # [B, N] log p_θ(y_l | x̃) at scored positions, 0 elsewhere (differentiable)
    entropy: torch.Tensor  # [B, N] entropy of p_θ(· | x̃) at scored positions, 0 elsewhere (no grad)


@dataclass
class SequenceLogProbs:
    elbo: torch.Tensor  # [B] ELBO estimate of log π_θ(y | c) (differentiable)
    samples: torch.Tensor  # [B, K] the K (pair) estimates averaged into ``elbo`` (no grad)
    num_tokens: torch.Tensor  # [B] n = |y|, the scored tokens
    entropy: torch.Tensor  # [B] mean entropy of p_θ at the masked scored positions (no grad)


# ---------------------------------------------------------------------------------------------
# The model call
# ---------------------------------------------------------------------------------------------


def positions_of(valid: torch.Tensor) -> torch.Tensor:
    """[B, T] positions as generation gives them without blocks: the completions of all rows start at
    the same position P (the padded prompt width), each prompt right before it; 0 on padding."""
    P_len = valid.long().sum(1, keepdim=True)  # [B, 1] valid tokens per row
    pos = valid.long().cumsum(1) - 1 + (valid.shape[1] - P_len)
    return torch.where(valid, pos, torch.zeros_like(pos))


def policy_denoiser(model, process) -> Denoiser:
    """The :data:`Denoiser` of ``model`` serving the absorbing ``process``: attention over the valid
    positions, the positions of :func:`positions_of`, only the last ``keep`` rows through the output
    layer (when the model takes ``logits_to_keep``). A time-conditioned network is fed the process
    time whose mask rate is t (t_from_alpha(1 − t) of its schedule, through ``network_time``)."""
    if not getattr(process, "needs_mask_token", False) or process.mask_id is None:
        raise IncompatibleError(f"RL log-probabilities need an absorbing process with a [MASK] token "
                                f"(masked / block diffusion), not {process.config.name!r}")
    if getattr(process, "required_attention", None) == "block_causal":
        raise IncompatibleError("RL log-probabilities of block-causal models ([x_t ; x0] rows) are not wired yet; "
                                "use a masked-diffusion (bidirectional) model")
    accepts = takes_logits_to_keep(model)

    def denoise(x_t, t, valid, keep):
        kwargs = {"attention_mask": valid.long(), "position_ids": positions_of(valid)}
        if process.time_conditioning:
            t_proc = process.schedule.t_from_alpha(1.0 - t.double()).clamp(0.0, 1.0).to(torch.float32)
            kwargs["t"] = process.network_time(t_proc)
        if accepts:
            kwargs["logits_to_keep"] = keep
        out = model(x_t, **kwargs)
        logits = out.logits if hasattr(out, "logits") else out
        return logits[:, -keep:]  # [B, keep, V]

    return denoise


def mask_generators(seed: int, step: int, iteration: int, rows) -> list[torch.Generator]:
    """One generator per row for the masks of inner iteration ``iteration`` of RL step ``step``:
    row r's draws depend only on (seed, step, iteration, r), never on the batch it sits in (global
    row indices make DDP ranks draw what one process draws)."""
    mix = lambda r: (int(seed) * 1_000_003 + int(step) * 10_007 + int(iteration) * 101 + int(r) * 7_919 + 17) % (2**63 - 1)
    return make_generators([mix(r) for r in rows])


# ---------------------------------------------------------------------------------------------
# Reading the logits
# ---------------------------------------------------------------------------------------------


def token_logprobs(process, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_θ(target) [n], entropy [n]) from logits rows [n, V] at still-masked positions, read
    the process's way (SUBS: the [MASK] logit is −∞). float32 or wider; the entropy has no grad."""
    lg = process.x0_logits_rows(logits)  # [n, V] a float32+ copy with [MASK] at −∞
    log_z = torch.logsumexp(lg, dim=-1)  # [n]
    logp = lg.gather(1, targets[:, None])[:, 0] - log_z
    with torch.no_grad():
        p = torch.softmax(lg, dim=-1)
        entropy = log_z - torch.where(p > 0, p * lg, torch.zeros_like(p)).sum(-1)
    return logp, entropy


def _check(prompt_ids, prompt_mask, completion_ids, completion_mask):
    if prompt_ids.shape != prompt_mask.shape or completion_ids.shape != completion_mask.shape:
        raise ConfigError(f"ids and masks disagree: prompt {list(prompt_ids.shape)} vs {list(prompt_mask.shape)}, "
                          f"completion {list(completion_ids.shape)} vs {list(completion_mask.shape)}")
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ConfigError(f"{prompt_ids.shape[0]} prompt rows for {completion_ids.shape[0]} completion rows")


# ---------------------------------------------------------------------------------------------
# diffu-GRPO: the one-step per-token estimate
# ---------------------------------------------------------------------------------------------


def one_step_logprobs(denoise: Denoiser, process, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                      completion_ids: torch.Tensor, completion_mask: torch.Tensor, p_mask_prompt: float = 0.15,
                      generator: Generator = None) -> TokenLogProbs:
    """d1's estimate log p_θ(y_l | x̃) for every scored completion position (module docstring).

    prompt_ids / prompt_mask [B, P] (left-padded; 1 = real token), completion_ids / completion_mask
    [B, N]; ``generator``: one per row (batch-independent draws) or one for all.
    """
    _check(prompt_ids, prompt_mask, completion_ids, completion_mask)
    if not 0.0 <= p_mask_prompt <= 1.0:
        raise ConfigError(f"p_mask_prompt={p_mask_prompt} must be in [0, 1]")
    B, N = completion_ids.shape
    device, mask_id = completion_ids.device, process.mask_id
    real = prompt_mask.bool()
    P = prompt_ids.shape[1]
    # row b's k-th prompt token uses its k-th draw, whatever the padding width P (batch independence)
    first = P - real.sum(1, keepdim=True)  # [B, 1] left padding per row
    slot = (torch.arange(P, device=device)[None] - first).clamp_min(0)  # [B, P]
    hide = real & (uniform((B, P), generator, device).gather(1, slot) < p_mask_prompt)  # [B, P]
    x_t = torch.cat([torch.where(hide, torch.full_like(prompt_ids, mask_id), prompt_ids),
                     torch.full_like(completion_ids, mask_id)], dim=1)  # [B, P + N]
    valid = torch.cat([real, torch.ones_like(completion_mask, dtype=torch.bool)], dim=1)
    logits = denoise(x_t, torch.ones(B, device=device), valid, N)  # [B, N, V]
    scored = completion_mask.bool()
    logp, entropy = token_logprobs(process, logits[scored], completion_ids[scored])
    out_lp = torch.zeros(B, N, device=device, dtype=logp.dtype).masked_scatter(scored, logp)
    out_h = torch.zeros(B, N, device=device, dtype=entropy.dtype).masked_scatter(scored, entropy)
    return TokenLogProbs(logp=out_lp, entropy=out_h)


# ---------------------------------------------------------------------------------------------
# The sequence ELBO
# ---------------------------------------------------------------------------------------------


def elbo_masks(completion_mask: torch.Tensor, t_samples: int = 1, antithetic: bool = True, coupled: bool = True,
               generator: Generator = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The draws of :func:`elbo_logprobs`: (masks [S, B, N] bool, weights [S, B], pair [S]) with
    S = K (2K when ``coupled``). Mask s hides ``x`` of the n scored tokens of each row
    (x = ⌊t (n + 1)⌋, a uniform subset); weights[s] = (n + 1) / x (0 when x = 0); ``pair[s]`` = the
    index k of the draw it belongs to (a mask and its complement share one)."""
    if t_samples < 1:
        raise ConfigError(f"elbo_t_samples={t_samples} must be at least 1")
    B, N = completion_mask.shape
    device = completion_mask.device
    scored = completion_mask.bool()
    n = scored.sum(1).double()  # [B]
    K = int(t_samples)
    offset = uniform((B,), generator, device)  # [B] one per row
    masks, weights, pair = [], [], []
    for k in range(K):
        t = (k + offset) / K if antithetic else (offset if k == 0 else uniform((B,), generator, device))
        x = torch.floor(t * (n + 1)).clamp(max=n)  # [B] ~ U{0..n}
        keys = uniform((B, N), generator, device).masked_fill(~scored, float("inf"))  # [B, N]
        rank = keys.argsort(1).argsort(1).double()  # [B, N] 0 = smallest key
        hidden = scored & (rank < x[:, None])
        draws = [(hidden, x)] + ([(scored & ~hidden, n - x)] if coupled else [])
        for m, count in draws:
            masks.append(m)
            weights.append(torch.where(count > 0, (n + 1) / count.clamp_min(1), torch.zeros_like(n)))
            pair.append(k)
    return torch.stack(masks), torch.stack(weights).float(), torch.tensor(pair)


def elbo_logprobs(denoise: Denoiser, process, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                  completion_ids: torch.Tensor, completion_mask: torch.Tensor, t_samples: int = 1,
                  antithetic: bool = True, coupled: bool = True, generator: Generator = None) -> SequenceLogProbs:
    """ELBO estimate of log π_θ(y | c) per row (module docstring): one forward over the S stacked
    masked copies [S·B, P + N]; the prompt is the clean condition, unscored positions stay [MASK]."""
    _check(prompt_ids, prompt_mask, completion_ids, completion_mask)
    B, N = completion_ids.shape
    device, mask_id = completion_ids.device, process.mask_id
    masks, weights, pair = elbo_masks(completion_mask, t_samples, antithetic, coupled, generator)
    S = masks.shape[0]
    shown = ~masks & completion_mask.bool()[None]  # [S, B, N] scored tokens left visible
    completion_t = torch.where(shown, completion_ids[None], torch.full_like(completion_ids[None], mask_id))
    x_t = torch.cat([prompt_ids[None].expand(S, -1, -1), completion_t], dim=2).reshape(S * B, -1)  # [S·B, P + N]
    valid = torch.cat([prompt_mask.bool(), torch.ones_like(completion_mask, dtype=torch.bool)], dim=1)
    rate = (masks | ~completion_mask.bool()[None]).float().mean(2).reshape(S * B)  # [S·B] mask rate of the completion
    logits = denoise(x_t, rate, valid.repeat(S, 1), N).reshape(S, B, N, -1)  # [S, B, N, V]
    logp, entropy = token_logprobs(process, logits[masks], completion_ids[None].expand(S, -1, -1)[masks])
    per_token = torch.zeros(S, B, N, device=device, dtype=logp.dtype).masked_scatter(masks, logp)
    estimates = per_token.sum(2) * weights.to(per_token.dtype)  # [S, B]
    K = int(pair.max()) + 1
    per_pair = torch.zeros(K, B, device=device, dtype=estimates.dtype).index_add(0, pair.to(device), estimates)
    per_pair = per_pair / (S // K)  # a coupled pair averages its two halves
    with torch.no_grad():
        h = torch.zeros(S, B, N, device=device, dtype=entropy.dtype).masked_scatter(masks, entropy)
        mean_h = h.sum((0, 2)) / masks.sum((0, 2)).clamp_min(1)
    return SequenceLogProbs(elbo=per_pair.mean(0), samples=per_pair.detach().T, num_tokens=completion_mask.sum(1),
                            entropy=mean_h)


def exact_elbo_weights(n: int) -> torch.Tensor:
    """w(k) = (k − 1)! (n − k)! / n! for k = 1..n ([n] float64): the ELBO's weight of one masked
    set of size k (module docstring), for oracle checks by enumeration."""
    from math import factorial

    return torch.tensor([factorial(k - 1) * factorial(n - k) / factorial(n) for k in range(1, n + 1)], dtype=torch.float64)
