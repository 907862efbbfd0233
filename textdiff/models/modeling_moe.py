"""Transformers' own Qwen3-MoE decoder run as a BIDIRECTIONAL textdiff denoiser (LLaDA-MoE).

LLaDA-MoE-7B-A1B is an OLMoE-style mixture of experts whose layers are, term for term, Qwen3-MoE
layers: RMSNorm pre-norms, per-HEAD q/k RMSNorm before rotary (OLMoE normalises the whole
projection instead, so its module does not fit), full rotary, SwiGLU experts, a softmax router
over all experts with top-k selection and NO renormalisation of the k weights, and dense SwiGLU
layers where ``moe_layer_freq`` is 0 (Qwen3-MoE's ``mlp_only_layers``). Two things Qwen3-MoE does
not have are added here, each off by default:

* ``shared_expert_intermediate_size``: an always-on SwiGLU expert added, unweighted, to the routed
  output of every sparse layer: ``y = Σ_{e ∈ topk} w_e E_e(x) + S(x)``;
* ``router_expert_bias``: a per-expert bias b added to the softmax probabilities BEFORE the top-k
  and kept in the weights: ``p = softmax(W_r x) + b``, ``(w, e) = topk(p, k)`` (the publisher's router).

Everything else is :mod:`textdiff.models.modeling_bidirectional`'s denoiser call (``is_causal =
False``, the explicit :class:`~textdiff.models.cache.KVCache`, ``logits_to_keep``); the attention
kernels (SDPA / flash / flex) and the fused expert kernels come from transformers.

Call: ``model(input_ids [B, L], t=None, attention_mask=None, position_ids=None, cache=None,
update_cache=False, logits_to_keep=None) -> TextDiffOutput(logits [B, L | kept, V])``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import Glm4MoeConfig, Glm4MoeModel, Glm4MoePreTrainedModel, Qwen3MoeConfig, Qwen3MoeModel, Qwen3MoePreTrainedModel
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeMLP, Qwen3MoeSparseMoeBlock, Qwen3MoeTopKRouter

from .modeling_bidirectional import DenoiserConfigMixin, _BidirectionalDenoiser, _denoiser_fields


class DiffusionQwen3MoeConfig(DenoiserConfigMixin, Qwen3MoeConfig):
    """``Qwen3MoeConfig`` of a bidirectional masked-diffusion denoiser (LLaDA-MoE), plus the shared
    expert's width (None: none) and the router's expert bias (False: none)."""

    model_type = "textdiff_qwen3_moe"

    def __init__(self, mask_token_id: Optional[int] = None, logits_shift: int = 0, attention: str = "bidirectional",
                 block_size: Optional[int] = None, shared_expert_intermediate_size: Optional[int] = None,
                 router_expert_bias: bool = False, **kwargs):
        _denoiser_fields(self, mask_token_id, logits_shift, attention, block_size)
        self.shared_expert_intermediate_size = shared_expert_intermediate_size
        self.router_expert_bias = bool(router_expert_bias)
        super().__init__(**kwargs)


class _BiasedTopKRouter(Qwen3MoeTopKRouter):
    """p = softmax(W_r x) + b (float32), then the k largest p are both the choice and the weights."""

    def __init__(self, config):
        super().__init__(config)
        self.expert_bias = nn.Parameter(torch.zeros(self.num_experts))

    def forward(self, hidden_states):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)  # [N, d]
        router_logits = F.linear(hidden_states, self.weight)  # [N, E]
        probs = torch.softmax(router_logits, dim=-1, dtype=torch.float) + self.expert_bias.float()
        top_value, top_index = torch.topk(probs, self.top_k, dim=-1)  # [N, k]
        if self.norm_topk_prob:
            top_value = top_value / top_value.sum(dim=-1, keepdim=True)
        return router_logits, top_value.to(router_logits.dtype), top_index


class _SparseMoeBlock(Qwen3MoeSparseMoeBlock):
    """Qwen3-MoE's routed experts (+ the router's expert bias) (+ an always-on shared expert)."""

    def __init__(self, config: DiffusionQwen3MoeConfig):
        super().__init__(config)
        if config.router_expert_bias:
            self.gate = _BiasedTopKRouter(config)
        width = config.shared_expert_intermediate_size
        self.shared_expert = Qwen3MoeMLP(config, intermediate_size=width) if width else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = super().forward(hidden_states)  # [B, L, d]
        if self.shared_expert is not None:
            out = out + self.shared_expert(hidden_states)
        return out


class _MoeDecoder(Qwen3MoeModel):
    """``Qwen3MoeModel`` whose sparse layers are :class:`_SparseMoeBlock` s."""

    def __init__(self, config: DiffusionQwen3MoeConfig):
        super().__init__(config)
        for layer in self.layers:
            if isinstance(layer.mlp, Qwen3MoeSparseMoeBlock):
                layer.mlp = _SparseMoeBlock(config)


class DiffusionQwen3MoeModel(_BidirectionalDenoiser, Qwen3MoePreTrainedModel):
    """Bidirectional Qwen3-MoE denoiser (LLaDA-MoE-7B-A1B Base / Instruct)."""

    config_class = DiffusionQwen3MoeConfig

    def __init__(self, config: DiffusionQwen3MoeConfig):
        Qwen3MoePreTrainedModel.__init__(self, config)
        self._setup(config, _MoeDecoder)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, _BiasedTopKRouter):
            nn.init.zeros_(module.expert_bias)


# ---- LLaDA 2.0 on GLM-4-MoE ---------------------------------------------------------------------


class DiffusionGlm4MoeConfig(DenoiserConfigMixin, Glm4MoeConfig):
    """``Glm4MoeConfig`` of a masked-diffusion denoiser (LLaDA 2.0: ``attention = "block_causal"``,
    ``block_size = 32``), plus a bias on the attention output projection (``o_proj_bias``, off)."""

    model_type = "textdiff_glm4_moe"

    def __init__(self, mask_token_id: Optional[int] = None, logits_shift: int = 0, attention: str = "bidirectional",
                 block_size: Optional[int] = None, o_proj_bias: bool = False, **kwargs):
        _denoiser_fields(self, mask_token_id, logits_shift, attention, block_size)
        self.o_proj_bias = bool(o_proj_bias)
        super().__init__(**kwargs)


class _Glm4MoeDecoder(Glm4MoeModel):
    """``Glm4MoeModel`` with (optionally) biased o_proj, and the router's score-correction bias held as
    a parameter (no gradient reaches it: it only ranks experts) so loading assigns it like a weight."""

    def __init__(self, config: DiffusionGlm4MoeConfig):
        super().__init__(config)
        for layer in self.layers:
            attn = layer.self_attn
            if config.o_proj_bias:
                attn.o_proj = nn.Linear(attn.o_proj.in_features, attn.o_proj.out_features, bias=True)
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None and "e_score_correction_bias" in gate._buffers:
                bias = gate._buffers.pop("e_score_correction_bias")
                gate.e_score_correction_bias = nn.Parameter(torch.zeros_like(bias), requires_grad=False)


class DiffusionGlm4MoeModel(_BidirectionalDenoiser, Glm4MoePreTrainedModel):
    """Block-causal GLM-4-MoE denoiser (LLaDA 2.0 mini / flash)."""

    config_class = DiffusionGlm4MoeConfig

    def __init__(self, config: DiffusionGlm4MoeConfig):
        Glm4MoePreTrainedModel.__init__(self, config)
        self._setup(config, _Glm4MoeDecoder)


MOE_CLASSES = {"textdiff_qwen3_moe": (DiffusionQwen3MoeConfig, DiffusionQwen3MoeModel),
               "textdiff_glm4_moe": (DiffusionGlm4MoeConfig, DiffusionGlm4MoeModel)}
