"""Transformers' own Llama and Qwen2 decoders run as BIDIRECTIONAL textdiff denoisers (LLaDA, Dream).

LLaDA-8B is a Llama-shaped network (RMSNorm, rotary, SwiGLU MLP, no biases, untied output) and
Dream-7B is Qwen2-7B (q/k/v biases); both were trained with full (non-causal) attention. Instead
of a copy of the publishers' modeling files, these classes hold transformers' maintained modules
(``LlamaModel`` / ``Qwen2Model``: SDPA / flash / flex attention dispatch, gradient checkpointing,
``device_map``) and run their decoder layers with

* ``is_causal = False`` on every attention module (also passed per call), and an explicit
  key-padding mask ``[B, 1, L, T + L]`` (bool for SDPA, additive elsewhere; None when nothing is
  masked, so the fused kernels run unmasked); with ``attention = "block_causal"`` (LLaDA 2.0, or
  BD3-LM fine-tuning) it also holds the structural mask: key block <= query block, blocks of
  ``block_size`` absolute positions;
* textdiff's explicit :class:`~textdiff.models.cache.KVCache` (keys/values after rotary, absolute
  positions, validity), read in every call and extended only with ``update_cache=True``;
* ``logits_shift`` (Dream): the logits that predict position i come from the output at i − 1
  (position 0 keeps its own), as Dream was adapted from a next-token model. The denoiser returns
  ALIGNED logits (row i predicts token i), so processes, scoring and training need nothing special;
  a window fed alone must bring the token before it (``config.lookback`` = 1, read by the caches).

Call: ``model(input_ids [B, L], t=None, attention_mask=None, position_ids=None, cache=None,
update_cache=False, logits_to_keep=None) -> TextDiffOutput(logits [B, L | kept, V])``.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
from transformers import (LlamaConfig, LlamaModel, LlamaPreTrainedModel, Qwen2Config, Qwen2Model, Qwen2PreTrainedModel,
                          Qwen3Config, Qwen3Model, Qwen3PreTrainedModel)

from .cache import KVCache, default_positions
from .modeling_textdiff import TextDiffOutput, structural_mask


def _denoiser_fields(config, mask_token_id, logits_shift, attention, block_size=None):
    if attention not in ("bidirectional", "block_causal"):
        raise ValueError(f"attention={attention!r}: these denoisers are bidirectional (LLaDA / Dream) or block-causal")
    if attention == "block_causal" and not block_size:
        raise ValueError("attention='block_causal' needs a block_size")
    if logits_shift not in (0, 1):
        raise ValueError(f"logits_shift={logits_shift} must be 0 or 1")
    config.mask_token_id = mask_token_id
    config.logits_shift = int(logits_shift)
    config.attention = attention  # read by generation / contexts (and by _key_mask: the structural mask)
    config.block_size = int(block_size) if block_size else None


class DenoiserConfigMixin:
    """The names textdiff's caches and contexts read from an HF decoder config."""

    @property
    def num_layers(self) -> int:
        return self.num_hidden_layers

    @property
    def lookback(self) -> int:  # Dream's shift: a window fed alone brings the token before it
        return self.logits_shift


class DiffusionLlamaConfig(DenoiserConfigMixin, LlamaConfig):
    """``LlamaConfig`` of a bidirectional masked-diffusion denoiser (LLaDA)."""

    model_type = "textdiff_llama"

    def __init__(self, mask_token_id: Optional[int] = None, logits_shift: int = 0, attention: str = "bidirectional",
                 block_size: Optional[int] = None, **kwargs):
        _denoiser_fields(self, mask_token_id, logits_shift, attention, block_size)
        super().__init__(**kwargs)


class DiffusionQwen2Config(DenoiserConfigMixin, Qwen2Config):
    """``Qwen2Config`` of a bidirectional masked-diffusion denoiser (Dream: ``logits_shift=1``)."""

    model_type = "textdiff_qwen2"

    def __init__(self, mask_token_id: Optional[int] = None, logits_shift: int = 0, attention: str = "bidirectional",
                 block_size: Optional[int] = None, **kwargs):
        _denoiser_fields(self, mask_token_id, logits_shift, attention, block_size)
        super().__init__(**kwargs)


class DiffusionQwen3Config(DenoiserConfigMixin, Qwen3Config):
    """``Qwen3Config`` of a block-diffusion denoiser (SDAR / TraDo: ``attention="block_causal"``)."""

    model_type = "textdiff_qwen3"

    def __init__(self, mask_token_id: Optional[int] = None, logits_shift: int = 0, attention: str = "bidirectional",
                 block_size: Optional[int] = None, **kwargs):
        _denoiser_fields(self, mask_token_id, logits_shift, attention, block_size)
        super().__init__(**kwargs)


def _dense_mask(block_mask) -> torch.Tensor:
    """A FlexAttention ``BlockMask`` as the bool [1, 1, Q, KV] mask it stands for (its ``mask_mod``
    evaluated at every query / key pair), for the decoder layers' SDPA / eager attention."""
    from torch.nn.attention.flex_attention import create_mask

    q_len, kv_len = block_mask.seq_lengths
    return create_mask(block_mask.mask_mod, 1, 1, q_len, kv_len, device=block_mask.kv_num_blocks.device)


class _CacheView:
    """The ``cache.update(k, v, layer_idx)`` interface transformers' attention modules call, over a
    textdiff :class:`KVCache`: returns [past ; new] keys/values [B, Hkv, T + L, Dh]; appends the new
    ones only when the call updates the cache."""

    def __init__(self, cache: KVCache, update: bool):
        self.cache = cache
        self.update_cache = update

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        past_k, past_v = self.cache.layer(layer_idx)
        if self.update_cache:
            self.cache.append_layer(layer_idx, key_states, value_states)
        if past_k is None:
            return key_states, value_states
        return torch.cat([past_k, key_states], dim=2), torch.cat([past_v, value_states], dim=2)


class _BidirectionalDenoiser:
    """The textdiff denoiser call over ``self.model`` (a Llama / Qwen2 decoder) and ``self.lm_head``."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def _setup(self, config, decoder_class):
        self.model = decoder_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        for layer in self.model.layers:
            layer.self_attn.is_causal = False  # flash / flex kernels read the module flag
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def _key_mask(self, attention_mask, position_ids, cache, dtype):
        """None (attend everywhere) or the key-padding mask [B, 1, L, T + L] of this call."""
        if attention_mask is not None and attention_mask.dim() == 4:
            mask = attention_mask.bool()
        else:
            B, L = position_ids.shape
            valid = attention_mask.bool() if attention_mask is not None else None
            keys = valid if valid is not None else torch.ones(B, L, dtype=torch.bool, device=position_ids.device)
            k_pos = position_ids
            if cache is not None and cache.length > 0:
                keys = torch.cat([cache.valid, keys], dim=1)  # [B, T + L]
                k_pos = torch.cat([cache.positions, position_ids], dim=1)
            structural = None  # block-causal (LLaDA 2.0): key block <= query block, from absolute positions
            if self.config.attention == "block_causal":
                structural = structural_mask("block_causal", position_ids, k_pos, self.config.block_size)
            if structural is None and bool(keys.all()):
                return None
            mask = keys[:, None, None, :].expand(B, 1, L, keys.shape[1])
            if structural is not None:
                mask = mask & structural  # [B, 1, L, T + L]
            if valid is not None:  # padded queries may look anywhere (their output is ignored)
                mask = mask | ~valid[:, None, :, None]
        if self.config._attn_implementation == "sdpa":
            return mask
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)

    def forward(
        self,
        input_ids: torch.Tensor,
        t: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
        update_cache: bool = False,
        logits_to_keep: Union[int, torch.Tensor, None] = None,
        **kwargs,
    ) -> TextDiffOutput:
        """
        input_ids: [B, L]. t: ignored (these denoisers are not time-conditioned).
        attention_mask: [B, L] (1 = real token, 0 = left padding) or a bool [B, 1, L, T + L] mask.
        position_ids: [B, L]; default from the padding and the cache.
        cache: a KVCache read (and, with ``update_cache``, extended) by this call.
        logits_to_keep: N (the last N rows) or an index tensor [K] of rows: logits [B, N | K, V].
        """
        B, L = input_ids.shape
        if type(attention_mask).__name__ == "BlockMask":  # block diffusion's FlexAttention mask (CUDA "auto")
            attention_mask = _dense_mask(attention_mask)
        if position_ids is None:
            position_ids = default_positions(input_ids, attention_mask, cache)
        h = self.model.embed_tokens(input_ids)  # [B, L, d]
        mask = self._key_mask(attention_mask, position_ids, cache, h.dtype)
        if cache is not None and update_cache:
            valid = attention_mask.bool() if attention_mask is not None and attention_mask.dim() == 2 else \
                torch.ones(B, L, dtype=torch.bool, device=input_ids.device)
            cache.append_positions(position_ids, valid)
        view = _CacheView(cache, update_cache) if cache is not None else None
        rope = self.model.rotary_emb(h, position_ids)  # cos, sin [B, L, Dh]
        for layer in self.model.layers:
            h = layer(h, attention_mask=mask, position_ids=position_ids, cache=view, position_embeddings=rope,
                      is_causal=False)
        h = self.model.norm(h)
        if self.config.logits_shift:  # row i predicts token i from the output at i - 1 (Dream)
            h = torch.cat([h[:, :1], h[:, :-1]], dim=1)
        if logits_to_keep is not None:
            if isinstance(logits_to_keep, torch.Tensor):
                h = h[:, logits_to_keep.to(h.device)]
            elif logits_to_keep:  # HF: 0 keeps every row
                h = h[:, -int(logits_to_keep):]
        return TextDiffOutput(logits=self.lm_head(h), cache=cache, hidden_states=h)


class DiffusionLlamaModel(_BidirectionalDenoiser, LlamaPreTrainedModel):
    """Bidirectional Llama denoiser (LLaDA-8B Base / Instruct / 1.5)."""

    config_class = DiffusionLlamaConfig
    _no_split_modules = ["LlamaDecoderLayer"]  # device_map="auto" never splits a decoder layer

    def __init__(self, config: DiffusionLlamaConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self._setup(config, LlamaModel)


class DiffusionQwen2Model(_BidirectionalDenoiser, Qwen2PreTrainedModel):
    """Bidirectional Qwen2 denoiser with shifted logits (Dream-v0 Base / Instruct 7B)."""

    config_class = DiffusionQwen2Config
    _no_split_modules = ["Qwen2DecoderLayer"]

    def __init__(self, config: DiffusionQwen2Config):
        Qwen2PreTrainedModel.__init__(self, config)
        self._setup(config, Qwen2Model)


class DiffusionQwen3Model(_BidirectionalDenoiser, Qwen3PreTrainedModel):
    """Qwen3 denoiser (q/k RMSNorm per head; SDAR / TraDo attend block-causally)."""

    config_class = DiffusionQwen3Config
    _no_split_modules = ["Qwen3DecoderLayer"]

    def __init__(self, config: DiffusionQwen3Config):
        Qwen3PreTrainedModel.__init__(self, config)
        self._setup(config, Qwen3Model)


NATIVE_CLASSES = {"textdiff_llama": (DiffusionLlamaConfig, DiffusionLlamaModel),
                  "textdiff_qwen2": (DiffusionQwen2Config, DiffusionQwen2Model),
                  "textdiff_qwen3": (DiffusionQwen3Config, DiffusionQwen3Model)}
