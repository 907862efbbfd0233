"""The textdiff denoiser: a DiT-style transformer ``(input_ids [B, L], t, cache) -> logits [B, L, V]``.

It knows nothing about the forward process it serves. Pieces:

* token embedding, rotary positions (computed from ``position_ids``, so left padding and caches
  keep exact relative positions);
* pre-norm blocks: attention (SDPA) and a GELU MLP; with ``time_conditioning`` every norm is
  modulated by adaLN (shift, scale, gate from an embedding of t, zero-initialised as in DiT);
* a structural attention mask from the config: bidirectional, causal (AR) or block-causal (BD3-LM);
  callers may pass their own 4-D boolean mask instead (block-diffusion training on ``[x_t ; x0]``);
* an explicit :class:`~textdiff.models.cache.KVCache` read in every call and extended only with
  ``update_cache=True``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .cache import KVCache, default_positions
from .configuration_textdiff import TextDiffConfig
from .masks import is_flex_mask

try:  # transformers >= 5 guards initialisation of weights that were loaded
    from transformers import initialization as init
except ImportError:  # pragma: no cover - transformers 4.x
    init = nn.init


@dataclass
class TextDiffOutput(ModelOutput):
    logits: Optional[torch.Tensor] = None  # [B, L, V]
    cache: Optional[KVCache] = None
    hidden_states: Optional[torch.Tensor] = None  # [B, L, d] after the final norm


# ---------------------------------------------------------------------------------------------
# Positions and masks
# ---------------------------------------------------------------------------------------------


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float):
    """cos, sin [B, 1, L, Dh] for integer ``positions`` [B, L]."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.float()[..., None] * inv_freq  # [B, L, Dh/2]
    angles = torch.cat([angles, angles], dim=-1)  # [B, L, Dh]
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i + Dh/2}) of ``x`` [B, H, L, Dh] by the position angles."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def structural_mask(kind: str, q_pos: torch.Tensor, k_pos: torch.Tensor, block_size: Optional[int]):
    """Bool [B, 1, Lq, Lk], True = may attend, from absolute positions; None when all True."""
    if kind == "bidirectional":
        return None
    q = q_pos[:, None, :, None]
    k = k_pos[:, None, None, :]
    if kind == "causal":
        return k <= q
    return torch.div(k, block_size, rounding_mode="floor") <= torch.div(q, block_size, rounding_mode="floor")


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


class TimestepEmbedding(nn.Module):
    """c [B] or [B, L] -> conditioning vector [B, 1 | L, cond_dim] (sinusoidal features + MLP).

    features = [cos(s · c · f_j), sin(s · c · f_j)], f_j = 10000^(−j / 128), j < 128, with
    s = ``time_scale`` (1000 for textdiff's t, 1 for the publishers' σ); output SiLU(MLP(features)).
    """

    def __init__(self, cond_dim: int, freq_dim: int = 256, time_scale: float = 1000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_scale = float(time_scale)
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 1:
            t = t[:, None]  # [B, 1]
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = self.time_scale * t.float()[..., None] * freqs  # [B, L|1, half]
        feats = torch.cat([args.cos(), args.sin()], dim=-1)
        return F.silu(self.mlp(feats.to(self.mlp[0].weight.dtype)))


_compiled_flex = None


def flex_attend(q, k, v, block_mask):
    """FlexAttention [B, H, L, Dh] with a ``BlockMask``; fused (compiled) on GPU, unfused on CPU."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if q.device.type != "cuda" or torch.compiler.is_compiling():
        if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
            raise ValueError("FlexAttention has no backward on CPU; train with process.attention_backend='sdpa' (or 'auto') on CPU")
        return flex_attention(q, k, v, block_mask=block_mask)
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)


def eager_attention(q, k, v, mask, is_causal: bool, dropout: float = 0.0):
    """softmax(Q Kᵀ / √Dh) V with the softmax in float32; q [B, H, L, Dh], k and v [B, H, T, Dh].

    Without gradients (sampling, evaluation) the sums over keys run in float64 and are rounded once
    (:func:`exact_attention`): the result no longer depends on how many masked (padding) keys a row
    carries (a row decoded in a padded batch gives the logits it gives alone), and keys with equal
    values give exactly equal outputs (the exact ties the confidence samplers rank by position).
    """
    exact = not torch.is_grad_enabled() and dropout == 0.0 and q.dtype in (torch.float32, torch.float64)
    if is_causal:
        L, T = q.shape[-2], k.shape[-2]
        mask = torch.ones(L, T, dtype=torch.bool, device=q.device).tril(T - L)
    if exact:
        return exact_attention(q, k, v, mask)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)  # [B, H, L, T]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    if dropout > 0:
        probs = F.dropout(probs, p=dropout)
    return probs @ v  # [B, H, L, Dh]


#: entries of a query chunk's score block in :func:`exact_attention` (cache-resident temporaries)
EXACT_CHUNK = 1 << 20


def exact_attention(q, k, v, mask):
    """Batch-invariant attention for inference: per query, e_j = exp(s_j − max s) elementwise in the
    inputs' precision (a masked key gives exactly 0), then Z = Σ_j e_j and Σ_j e_j v_j in float64 and
    out = (Σ_j e_j v_j) / Z rounded once. Every output is a function of its own (query, key) values
    alone, up to float64 rounding (about 1e-16) far below the final float32 rounding, so padding keys,
    the batch and the layout do not change it. Query rows go in chunks of about :data:`EXACT_CHUNK`
    score entries, so the float64 temporaries stay in cache. q [B, H, L, Dh], k, v [B, H, T, Dh]."""
    B, H, L, Dh = q.shape
    T = k.shape[-2]
    qq = q.reshape(B * H, L, Dh)
    kt = k.reshape(B * H, T, Dh).transpose(1, 2)  # [BH, Dh, T]
    vv = v.reshape(B * H, T, Dh).to(torch.float64)  # [BH, T, Dh]
    m4 = None if mask is None else mask.expand(B, H, L, T)  # bool, True = attend
    out = torch.empty(B * H, L, Dh, dtype=v.dtype, device=v.device)
    rows = max(1, EXACT_CHUNK // max(1, B * H * T))
    scale = Dh ** -0.5
    for i in range(0, L, rows):
        sc = torch.bmm(qq[:, i:i + rows], kt).mul_(scale)  # [BH, r, T]
        if m4 is not None:
            sc.masked_fill_(~m4[:, :, i:i + rows].reshape(B * H, -1, T), float("-inf"))
        e = sc.sub_(sc.amax(-1, keepdim=True)).exp_()  # [BH, r, T], 0 at masked keys
        z = e.sum(-1, keepdim=True, dtype=torch.float64)  # [BH, r, 1]
        out[:, i:i + rows] = torch.bmm(e.to(torch.float64), vv).div_(z)
    return out.view(B, H, L, Dh)


class Attention(nn.Module):
    def __init__(self, config: TextDiffConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.dropout = config.dropout
        self.backend = getattr(config, "attn_backend", "auto")

    def forward(self, x, rope, mask, cache: Optional[KVCache], layer_idx: int, update_cache: bool, is_causal: bool):
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim)  # [B, L, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, Dh]
        cos, sin = rope
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k_all, v_all = k, v
        if cache is not None:
            past_k, past_v = cache.layer(layer_idx)
            if past_k is not None:
                k_all = torch.cat([past_k, k], dim=2)  # [B, H, T + L, Dh]
                v_all = torch.cat([past_v, v], dim=2)
            if update_cache:
                cache.append_layer(layer_idx, k, v)
        dropout = self.dropout if self.training else 0.0
        if is_flex_mask(mask):  # FlexAttention BlockMask (block-diffusion training)
            out = flex_attend(q, k_all, v_all, mask)
        elif self.backend == "eager" or (self.backend == "auto" and x.device.type == "cpu"):
            out = eager_attention(q, k_all, v_all, mask, is_causal, dropout)
        else:
            out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, is_causal=is_causal, dropout_p=dropout)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))  # [B, H, L, Dh] -> [B, L, D]


class MLP(nn.Module):
    def __init__(self, config: TextDiffConfig):
        super().__init__()
        inner = int(config.mlp_ratio * config.hidden_size)
        self.fc = nn.Linear(config.hidden_size, inner, bias=True)
        self.out = nn.Linear(inner, config.hidden_size, bias=True)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.drop(self.out(F.gelu(self.fc(x), approximate="tanh")))


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class Block(nn.Module):
    """Pre-norm transformer block; adaLN-Zero modulation when the model is time-conditioned."""

    def __init__(self, config: TextDiffConfig):
        super().__init__()
        eps = getattr(config, "layer_norm_eps", 1e-5)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=eps, bias=False)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=eps, bias=False)
        self.mlp = MLP(config)
        self.adaLN = nn.Linear(config.cond_dim, 6 * config.hidden_size) if config.time_conditioning else None
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, cond, rope, mask, cache, layer_idx, update_cache, is_causal):
        if self.adaLN is None:
            x = x + self.drop(self.attn(self.norm1(x), rope, mask, cache, layer_idx, update_cache, is_causal))
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(cond).chunk(6, dim=-1)  # each [B, 1|L, d]
        h = self.attn(modulate(self.norm1(x), shift1, scale1), rope, mask, cache, layer_idx, update_cache, is_causal)
        x = x + gate1 * self.drop(h)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class TextDiffPreTrainedModel(PreTrainedModel):
    config_class = TextDiffConfig
    base_model_prefix = "textdiff"
    _supports_sdpa = True
    _no_split_modules = ["Block"]

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "zero_init", False):
                init.zeros_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)


class TextDiffModel(TextDiffPreTrainedModel):
    """Denoiser network: ``forward(input_ids, t=None, cache=None) -> TextDiffOutput(logits [B, L, V])``."""

    _tied_weights_keys = {"lm_head.weight": "embed.weight"}

    def __init__(self, config: TextDiffConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        time_scale = getattr(config, "time_scale", 1000.0)
        self.time_embed = TimestepEmbedding(config.cond_dim, time_scale=time_scale) if config.time_conditioning else None
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
        self.norm_f = nn.LayerNorm(config.hidden_size, eps=getattr(config, "layer_norm_eps", 1e-5), bias=False)
        self.final_adaLN = nn.Linear(config.cond_dim, 2 * config.hidden_size) if config.time_conditioning else None
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=getattr(config, "lm_head_bias", False))
        for block in self.blocks:  # adaLN-Zero: every modulated block starts as the identity
            if block.adaLN is not None:
                block.adaLN.zero_init = True
        if self.final_adaLN is not None:
            self.final_adaLN.zero_init = True
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def set_input_embeddings(self, value):
        self.embed = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def default_positions(self, input_ids, attention_mask, cache):
        """[B, L] absolute positions: left padding is skipped, a cache offsets them."""
        return default_positions(input_ids, attention_mask, cache)

    def forward(
        self,
        input_ids: torch.Tensor,
        t: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
        update_cache: bool = False,
        logits_to_keep=0,
        **kwargs,
    ) -> TextDiffOutput:
        """
        input_ids: [B, L] tokens (x_t for diffusion, x for AR).
        t: [B] or [B, L] diffusion time; required iff ``config.time_conditioning``.
        attention_mask: [B, L] (1 = real token, 0 = padding) or a bool [B|1, 1, L, T+L] mask
            (True = may attend) that replaces the structural one, or a FlexAttention ``BlockMask``
            (then ``position_ids`` are required and no cache is used).
        position_ids: [B, L]; default from the padding and the cache.
        cache: a KVCache read (and, with ``update_cache``, extended) by this call.
        logits_to_keep: which positions go through the output layer (Hugging Face's convention):
            0 = all [B, L, V]; an int k = the last k [B, k, V]; a 1-D long tensor of positions
            [B, len, V]. ``hidden_states`` always has every position.
        """
        B, L = input_ids.shape
        cfg = self.config
        if self.time_embed is not None and t is None:
            raise ValueError("this denoiser is time-conditioned: pass t (a [B] or [B, L] tensor of times in [0, 1])")
        if position_ids is None:
            position_ids = self.default_positions(input_ids, attention_mask, cache)
        # rotary attention only sees relative positions: bound the span (a sliding cache may go far)
        first = position_ids.min()
        if cache is not None and cache.length > 0 and bool(cache.valid.any()):
            first = torch.minimum(first, cache.positions[cache.valid].min())
        if not torch.compiler.is_compiling() and int(position_ids.max() - first) >= cfg.max_position_embeddings:
            raise ValueError(
                f"positions span {int(position_ids.max() - first) + 1} > max_position_embeddings={cfg.max_position_embeddings}; "
                "use shorter inputs or a sliding cache window"
            )
        mask, is_causal = self._attention_mask(attention_mask, position_ids, cache)
        if cache is not None and update_cache:
            valid = attention_mask.bool() if attention_mask is not None and attention_mask.dim() == 2 else \
                torch.ones(B, L, dtype=torch.bool, device=input_ids.device)
            cache.append_positions(position_ids, valid)

        x = self.embed(input_ids)  # [B, L, d]
        cond = self.time_embed(t.to(x.device)) if self.time_embed is not None else None  # [B, 1|L, c]
        rope = rotary_tables(position_ids, cfg.hidden_size // cfg.num_heads, cfg.rope_theta)
        for i, block in enumerate(self.blocks):
            x = block(x, cond, rope, mask, cache, i, update_cache, is_causal)
        x = self.norm_f(x)
        if self.final_adaLN is not None:
            shift, scale = self.final_adaLN(cond).chunk(2, dim=-1)
            x = modulate(x, shift, scale)
        if isinstance(logits_to_keep, torch.Tensor):
            rows = x[:, logits_to_keep.to(x.device)]  # [B, len, d]
        else:
            rows = x[:, -int(logits_to_keep):] if logits_to_keep else x  # [B, k | L, d]
        logits = self.lm_head(rows)  # [B, L | kept, V]
        return TextDiffOutput(logits=logits, cache=cache, hidden_states=x)

    def _attention_mask(self, attention_mask, position_ids, cache):
        """Combine the structural mask, key padding and the cache into one SDPA mask."""
        cfg = self.config
        if is_flex_mask(attention_mask):
            return attention_mask, False
        if attention_mask is not None and attention_mask.dim() == 4:
            return attention_mask.bool(), False
        has_cache = cache is not None and cache.length > 0
        pad = attention_mask is not None and not bool(attention_mask.all())
        if not has_cache and not pad and cfg.attention == "causal":
            return None, True  # the fast fused causal path
        k_pos = position_ids
        k_valid = attention_mask.bool() if attention_mask is not None else torch.ones_like(position_ids, dtype=torch.bool)
        if has_cache:
            k_pos = torch.cat([cache.positions, position_ids], dim=1)  # [B, T + L]
            k_valid = torch.cat([cache.valid, k_valid], dim=1)
        mask = structural_mask(cfg.attention, position_ids, k_pos, cfg.block_size)
        if (pad or has_cache) and not bool(k_valid.all()):  # (no data-dependent branch otherwise: compiles whole)
            key_mask = k_valid[:, None, None, :]  # [B, 1, 1, T + L]
            mask = key_mask if mask is None else mask & key_mask
            if attention_mask is not None:  # padded queries may look anywhere (their output is ignored)
                mask = mask | ~attention_mask.bool()[:, None, :, None]
        return mask, False
