"""Attention masks for block diffusion training (BD3-LM, Arriola et al. 2025).

Training runs the denoiser once on ``[x_t ; x0]`` (length 2L, both halves at positions 0..L-1).
With block size L' let, for a token index i in [0, 2L)::

    clean(i) = i >= L              (second half: x0)
    blk(i)   = (i mod L) // L'     (its block)

Query q may attend to key k (True = attend) when any of::

    M_BD  (block diagonal):        blk(q) == blk(k)  and  clean(q) == clean(k)
    M_OBC (offset block causal):   not clean(q)  and  clean(k)  and  blk(k) <  blk(q)
    M_BC  (block causal):          clean(q)  and  clean(k)  and  blk(k) <= blk(q)

So a noisy block sees itself and the CLEAN blocks before it (never its own clean tokens), and the
clean half is an ordinary block-causal model, which is what the KV cache holds at decoding time.
With L' = L the noisy half sees only itself: the full-sequence masked model.

Two forms of the same mask: a dense bool ``[1, 1, 2L, 2L]`` for SDPA and a FlexAttention
``BlockMask`` (its sparse tile size set explicitly with ``flex_tile``).
"""
from __future__ import annotations

import functools

import torch


def block_diffusion_allowed(q_idx: torch.Tensor, k_idx: torch.Tensor, seq_len: int, block_size: int) -> torch.Tensor:
    """The mask rule above on broadcastable integer index tensors (also the FlexAttention ``mask_mod``)."""
    q_clean = q_idx >= seq_len
    k_clean = k_idx >= seq_len
    q_blk = (q_idx % seq_len) // block_size
    k_blk = (k_idx % seq_len) // block_size
    diagonal = (q_blk == k_blk) & (q_clean == k_clean)
    offset_causal = ~q_clean & k_clean & (k_blk < q_blk)
    causal = q_clean & k_clean & (k_blk <= q_blk)
    return diagonal | offset_causal | causal


@functools.lru_cache(maxsize=16)
def _dense(seq_len: int, block_size: int, device: str) -> torch.Tensor:
    idx = torch.arange(2 * seq_len, device=device)
    return block_diffusion_allowed(idx[:, None], idx[None, :], seq_len, block_size)[None, None]


def block_diffusion_mask(seq_len: int, block_size: int, device=None) -> torch.Tensor:
    """Dense bool mask ``[1, 1, 2L, 2L]`` (True = attend) for SDPA. Cached per (L, L', device)."""
    return _dense(int(seq_len), int(block_size), str(torch.device(device or "cpu")))


def flex_available() -> bool:
    """Whether this torch has FlexAttention (``torch.nn.attention.flex_attention``)."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=16)
def _flex(seq_len: int, block_size: int, device: str, flex_tile: int):
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        return block_diffusion_allowed(q_idx, kv_idx, seq_len, block_size)

    n = 2 * seq_len
    return create_block_mask(mask_mod, None, None, n, n, device=device, BLOCK_SIZE=flex_tile)


def block_diffusion_flex_mask(seq_len: int, block_size: int, device=None, flex_tile: int = 128):
    """FlexAttention ``BlockMask`` of the same rule, with sparse tiles of ``flex_tile`` tokens.

    Tiles that are fully masked are skipped by the fused kernel; the tile size is set explicitly
    (FlexAttention's default, 128, is the smallest the GPU kernel supports well; on CPU any size runs).
    """
    return _flex(int(seq_len), int(block_size), str(torch.device(device or "cpu")), int(flex_tile))


def is_flex_mask(mask) -> bool:
    """True for a FlexAttention ``BlockMask`` (without importing flex on old torch)."""
    return type(mask).__name__ == "BlockMask"
