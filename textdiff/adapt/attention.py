"""Attention-mask annealing from causal to the target, and where the shifted logits are read.

**Layouts.** The masked target runs the network on x_t alone (Q = K = L rows). The block target runs
BD3-LM's one-pass layout ``[x_t ; x0]`` (Q = K = 2L rows, both halves at positions 0..L-1) under the
rule of :mod:`textdiff.models.masks`: a noisy block sees itself and the clean blocks before it, the
clean half is block-causal. For a row index i let pos(i) = i mod L. Call a pair (q, k) *future* when
pos(k) > pos(q): a key the AR model never let query q see. In the target mask the future pairs are
exactly those inside one block of one half (the whole row for the masked target).

**The annealed mask** at progress p = min(1, step / anneal_steps) (p = 1 when anneal_steps = 0)::

    allowed_p(q, k) = target(q, k)  and  ( pos(k) <= pos(q)  or  reveal(q, k) < p )

with reveal(q, k) in [0, 1) fixed per pair (``band`` opens the nearest keys first instead). So p = 0 gives exactly causal attention (for the block
target: a noisy query sees the clean blocks before it and its own block's keys up to itself; the
clean half is plainly causal), p = 1 gives exactly the target mask, and a pair once open stays open
(the masks grow with p). Given clean input (x_t = x0) at p = 0 every row computes what the AR model
computes (by induction over layers: its visible keys are the same tokens at the same positions), so
with the shift the next-token loss is the AR model's (``tests/test_adapt_prototype.py``).

``anneal_rule`` picks reveal(q, k):

* ``random``: a hash of (seed, q, k) to [0, 1): each future key opens at a uniform random time; at
  progress p a fraction ~p of them is open (DiffuLLaMA's rule in expectation, but nested over steps);
* ``fresh``: DiffuLLaMA's own rule: the hash also takes the step, so each step draws a fresh
  Bernoulli(p) pattern (DiffuLLaMA uses p = (step + 1) / anneal_steps; we use step / anneal_steps so
  that step 0 is exactly causal);
* ``band``: deterministic, nearest keys first: a query sees the ⌊p D⌋ keys right after it, D the
  largest future distance of the target (L − 1 masked, L' − 1 block).

The mask never depends on the shift: the shift only says which output row predicts a token
(:func:`read_index`). No leak either way: the row that predicts token i never sees x0_i unmasked.

**Reading the logits** (:func:`read_index`): without the shift, token i is read at row i (the noisy
half for the block layout). With the shift, token i (i >= 1) is read at the row of position i − 1:
row i − 1 (masked), or for the block layout row i − 1 of the noisy half inside a block and, at a
block's first token (i mod L' = 0), row L + i − 1: the CLEAN copy of the previous position, which
sees exactly the clean blocks before i. That is what cached block decoding has at hand (the last
row of the pass that commits a block), so training and decoding agree; reading the noisy row i − 1
instead (Fast-dLLM v2's training, a plain shift over 2L rows) conditions the block's first token on
a noisy previous block, which decoding never shows. Token 0 has no predecessor: it keeps row 0
(Dream's convention).
"""
from __future__ import annotations

import functools
from typing import Literal, Optional

import torch

from ..errors import ConfigError
from ..models.masks import block_diffusion_allowed

Target = Literal["masked", "block"]
Rule = Literal["random", "fresh", "band"]

_HASH_BITS = 24  # reveal(q, k) takes 2^24 values: p is resolved to 6e-8


def anneal_progress(step: int, anneal_steps: int) -> float:
    """p = min(1, step / anneal_steps) in [0, 1]; 1 when ``anneal_steps`` is 0 (no annealing)."""
    if anneal_steps <= 0:
        return 1.0
    return min(1.0, max(0.0, step / anneal_steps))


def _check(seq_len: int, target: str, block_size: Optional[int]) -> int:
    """The number of rows of the layout (L or 2L); one-line errors for a bad block size."""
    if target == "masked":
        return seq_len
    if target != "block":
        raise ConfigError(f"adapt.target={target!r}; use masked or block")
    if not block_size or block_size < 1 or seq_len % block_size:
        raise ConfigError(f"block size {block_size} must divide the sequence length {seq_len}; pick a divisor of data.seq_len")
    return 2 * seq_len


def _hash_uniform(q: torch.Tensor, k: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """A deterministic uniform in [0, 1) per (seed, step, q, k) on broadcastable int64 index tensors
    (a multiply-xorshift mix; int64 products wrap around, which is the point)."""
    h = q.long() * 0x9E3779B1 + k.long() * 0x85EBCA77 + (seed * 0xC2B2AE3D + step * 0x27D4EB2F + 0x165667B1)
    for mult in (0x7FEB352D, 0x846CA68B, 0x5BD1E995):
        h = (h ^ (h >> 15)) * mult
    h = h ^ (h >> 16)
    return (h & ((1 << _HASH_BITS) - 1)).double() / (1 << _HASH_BITS)


def annealed_allowed(q_idx: torch.Tensor, k_idx: torch.Tensor, progress: float, seq_len: int, target: Target,
                     block_size: Optional[int] = None, rule: Rule = "random", seed: int = 0, step: int = 0) -> torch.Tensor:
    """The rule of the module docstring on broadcastable integer index tensors (True = attend),
    written elementwise like :func:`~textdiff.models.masks.block_diffusion_allowed` so that it can
    become a FlexAttention ``mask_mod`` (not tried yet)."""
    if target == "block":
        allowed = block_diffusion_allowed(q_idx, k_idx, seq_len, block_size)
    else:
        allowed = torch.ones(torch.broadcast_shapes(q_idx.shape, k_idx.shape), dtype=torch.bool, device=q_idx.device)
    if progress >= 1.0:
        return allowed
    q_pos, k_pos = q_idx % seq_len, k_idx % seq_len
    past = k_pos <= q_pos
    if progress <= 0.0:
        return allowed & past
    if rule == "band":
        span = (seq_len if target == "masked" else block_size) - 1
        return allowed & (k_pos - q_pos <= int(progress * span + 1e-9))
    if rule not in ("random", "fresh"):
        raise ConfigError(f"adapt.anneal_rule={rule!r}; use random, fresh or band")
    reveal = _hash_uniform(q_idx, k_idx, seed, step if rule == "fresh" else 0)
    return allowed & (past | (reveal < progress))


@functools.lru_cache(maxsize=8)
def _dense(progress: float, seq_len: int, target: str, block_size: Optional[int], rule: str, seed: int, step: int,
           device: str) -> torch.Tensor:
    n = _check(seq_len, target, block_size)
    idx = torch.arange(n, device=device)
    return annealed_allowed(idx[:, None], idx[None, :], progress, seq_len, target, block_size, rule, seed, step)


def annealed_mask(progress: float, seq_len: int, target: Target = "masked", block_size: Optional[int] = None,
                  rule: Rule = "random", seed: int = 0, step: int = 0, device=None) -> torch.Tensor:
    """Bool [Q, Q] (True = attend), Q = L (masked) or 2L (block, ``[x_t ; x0]``), at ``progress`` in [0, 1].

    ``step`` matters only for ``rule="fresh"``; a finished anneal (p = 1) is the target mask for any rule.
    The tensor is cached and shared: do not modify it in place.
    """
    _check(seq_len, target, block_size)
    progress = min(1.0, max(0.0, float(progress)))
    if progress >= 1.0 or rule != "fresh":
        step = 0
    return _dense(progress, int(seq_len), target, None if target == "masked" else int(block_size), rule, int(seed),
                  int(step), str(torch.device(device or "cpu")))


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Bool [Q, K] -> additive float [1, 1, Q, K]: 0 where allowed, the dtype's minimum elsewhere.

    Hand a transformers model this form: its eager attention ADDS a 4-D mask to the scores, so a
    bool mask there silently masks nothing (True adds 1.0); SDPA takes either form."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def read_index(seq_len: int, target: Target = "masked", block_size: Optional[int] = None, shift: bool = True) -> torch.Tensor:
    """Long [L]: the model output row whose logits predict token i (see the module docstring)."""
    _check(seq_len, target, block_size)
    i = torch.arange(seq_len)
    if not shift:
        return i  # the noisy half comes first in the block layout
    prev = (i - 1).clamp_min(0)
    if target == "block":
        starts = (i % block_size == 0) & (i > 0)
        prev = torch.where(starts, seq_len + i - 1, prev)  # a block's first token: the clean previous row
    return prev


def read_logits(logits: torch.Tensor, seq_len: int, target: Target = "masked", block_size: Optional[int] = None,
                shift: bool = True) -> torch.Tensor:
    """Logits [B, Q, V] of the layout -> [B, L, V], row i predicting token i."""
    return logits[:, read_index(seq_len, target, block_size, shift).to(logits.device)]
