"""LLaDA-MoE (Zhu et al. 2025): LLaDA-MoE-7B-A1B-Base / -Instruct, on transformers' Qwen3-MoE.

Layout (``inclusionAI/LLaDA-MoE-7B-A1B-*``): ``config.json`` with ``architectures:
["LLaDAMoEModelLM"]`` (``model_type`` "llada" on the hub, "lladamoe" in the publisher's config
class) and Qwen/OLMoE-style keys (``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``,
``dense_intermediate_size``, ``expert_intermediate_size``, ``shared_expert_intermediate_size``,
``num_experts``, ``num_experts_per_tok``, ``moe_layer_freq``, ``qk_layernorm``,
``moe_router_enable_expert_bias``, ``rope_theta``, ``partial_rotary_factor``), sharded safetensors
with an index, and the tokenizer files (its mask token is ``<|mdm_mask|>``; the config carries no
mask id).

The network (the publisher's ``modeling_lladamoe.py``) is a FULL-attention OLMoE-style decoder:
per-head q/k RMSNorm, rotary, SwiGLU; layer i is dense where ``moe_layer_freq[i] == 0`` and sparse
otherwise: ``y = Σ_{e ∈ topk(p)} p_e E_e(x) (+ S(x))`` with ``p = softmax(W_r x) (+ b)``; the
publisher's router never renormalises the k weights and does not read ``norm_topk_prob``,
``routed_scaling_factor`` or the router groups, so neither does the conversion.
:class:`~textdiff.models.modeling_moe.DiffusionQwen3MoeModel` expresses it exactly.

Tensor names (layer i, expert j)::

    model.embed_tokens / model.norm / lm_head / model.layers.i.{self_attn,*_layernorm}.*  -> the same
    model.layers.i.mlp.{gate,up,down}_proj          -> the same (dense layer)
    model.layers.i.mlp.gate                         -> model.layers.i.mlp.gate (router W_r [E, d])
    model.layers.i.mlp.expert_bias                  -> model.layers.i.mlp.gate.expert_bias
    model.layers.i.mlp.experts.j.{gate,up}_proj     -> model.layers.i.mlp.experts.gate_up_proj[j] = [gate; up]
    model.layers.i.mlp.experts.j.down_proj          -> model.layers.i.mlp.experts.down_proj[j]
    model.layers.i.shared_expert.*                  -> model.layers.i.mlp.shared_expert.*

Decoding (the model card: LLaDA's ``generate.py``): semi-autoregressive blocks of 32 tokens,
low-confidence remasking, temperature 0.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch

from ...errors import ConfigError
from ..modeling_moe import DiffusionQwen3MoeConfig, DiffusionQwen3MoeModel
from . import Family, LoadOptions, Published, register
from ._hf import load_weights, published_tokenizer, read_tokenizer

DEFAULT_HUB_ID = "inclusionAI/LLaDA-MoE-7B-A1B-Instruct"
MASK_TOKEN, EOT_TOKEN = "<|mdm_mask|>", "<|role_end|>"
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")
_SHARED = re.compile(r"^model\.layers\.(\d+)\.shared_expert\.(.+)$")
_BIAS = re.compile(r"^model\.layers\.(\d+)\.mlp\.expert_bias$")


def is_llada_moe(config: dict) -> bool:
    archs = config.get("architectures") or []
    return "LLaDAMoEModelLM" in archs or config.get("model_type") == "lladamoe" or \
        (config.get("model_type") == "llada" and "expert_intermediate_size" in config)


def _refuse(key, value, want):
    raise ConfigError(f"this LLaDA-MoE config sets {key}={value!r}; textdiff converts only {want} "
                      "(the publisher's modeling_lladamoe.py semantics of the released checkpoints)")


def qwen3_moe_config(cfg: dict, mask_token_id: int) -> DiffusionQwen3MoeConfig:
    """The DiffusionQwen3MoeConfig of a LLaDA-MoE config.json (one-line error for what it cannot express)."""
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_experts",
                           "num_experts_per_tok", "expert_intermediate_size", "moe_layer_freq") if k not in cfg]
    if missing:
        raise ConfigError(f"this LLaDA-MoE config.json lacks {', '.join(missing)}; the file is incomplete")
    layers, heads, d = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"]), int(cfg["hidden_size"])
    freq = list(cfg["moe_layer_freq"])
    if len(freq) != layers:
        _refuse("moe_layer_freq", freq, f"one entry per layer ({layers})")
    if not cfg.get("qk_layernorm"):
        _refuse("qk_layernorm", cfg.get("qk_layernorm"), "qk_layernorm=true")
    if cfg.get("clip_qkv") is not None:
        _refuse("clip_qkv", cfg["clip_qkv"], "clip_qkv=null")
    if float(cfg.get("partial_rotary_factor", -1)) != 1.0:
        _refuse("partial_rotary_factor", cfg.get("partial_rotary_factor"), "partial_rotary_factor=1 (rotary on every head dim)")
    scaling = cfg.get("rope_scaling")
    if scaling not in (None, {}) and (scaling.get("rope_type") or scaling.get("type")) != "default":
        _refuse("rope_scaling", scaling, "plain rotary (rope_scaling=null)")
    if cfg.get("moe_router_score_function") not in (None, "softmax"):
        _refuse("moe_router_score_function", cfg["moe_router_score_function"], "'softmax'")
    if d % heads:
        _refuse("num_attention_heads", heads, f"a divisor of hidden_size={d}")
    dense = any(f == 0 for f in freq)
    if dense and int(cfg.get("dense_intermediate_size", -1)) <= 0:
        _refuse("dense_intermediate_size", cfg.get("dense_intermediate_size"), "a positive width for the dense layers")
    shared = cfg.get("shared_expert_intermediate_size")
    if shared is not None and int(shared) <= 0:
        _refuse("shared_expert_intermediate_size", shared, "null or a positive width")
    return DiffusionQwen3MoeConfig(
        vocab_size=int(cfg["vocab_size"]), hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads), hidden_act=cfg.get("hidden_act", "silu"),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)), attention_bias=bool(cfg.get("attention_bias", False)),
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg["rope_theta"])},
        intermediate_size=int(cfg["dense_intermediate_size"]) if dense else int(cfg["expert_intermediate_size"]),
        moe_intermediate_size=int(cfg["expert_intermediate_size"]), num_experts=int(cfg["num_experts"]),
        num_experts_per_tok=int(cfg["num_experts_per_tok"]), norm_topk_prob=False, decoder_sparse_step=1,
        mlp_only_layers=[i for i, f in enumerate(freq) if f == 0], use_sliding_window=False,
        shared_expert_intermediate_size=int(shared) if shared is not None else None,
        router_expert_bias=bool(cfg.get("moe_router_enable_expert_bias")),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), mask_token_id=int(mask_token_id),
        pad_token_id=cfg.get("pad_token_id"), eos_token_id=cfg.get("eos_token_id"), bos_token_id=cfg.get("bos_token_id"),
    )


class ExpertStacker:
    """Stacks each sparse layer's per-expert projections ``model.layers.i.mlp.experts.j.{gate,up,down}_proj``
    into transformers' fused [E, 2I, d] (rows [gate; up]) / [E, d, I] tensors once all 3E arrived;
    ``rename(name)`` maps every other tensor. A ``convert(name, tensor)`` for :func:`~._hf.load_weights`."""

    def __init__(self, experts: int, width: int, hidden: int, rename, source: str):
        self.E, self.I, self.d = experts, width, hidden
        self.rename, self.source = rename, source
        self.pending: dict[int, dict] = {}

    def __call__(self, name: str, tensor: torch.Tensor):
        m = _EXPERT.match(name)
        if m is None:
            return self.rename(name, tensor)
        layer, j, part = int(m.group(1)), int(m.group(2)), m.group(3)
        want = (self.d, self.I) if part == "down" else (self.I, self.d)
        if j >= self.E or tuple(tensor.shape) != want:
            raise ConfigError(f"{self.source}: tensor {name!r} has shape {list(tensor.shape)} but the config gives "
                              f"{list(want)} (of {self.E} experts); config.json does not match the weights")
        got = self.pending.setdefault(layer, {})
        got[(j, part)] = tensor
        if len(got) < 3 * self.E:
            return []
        del self.pending[layer]
        gate_up = torch.stack([torch.cat([got[(e, "gate")], got[(e, "up")]], 0) for e in range(self.E)])  # [E, 2I, d]
        down = torch.stack([got[(e, "down")] for e in range(self.E)])  # [E, d, I]
        prefix = f"model.layers.{layer}.mlp.experts."
        return [(prefix + "gate_up_proj", gate_up), (prefix + "down_proj", down)]


def rename(name: str, tensor: torch.Tensor):
    """LLaDA-MoE's names outside the routed experts: the router bias and the shared expert move into
    the sparse block; the rest are transformers' own (unknown ones are reported by the shape check)."""
    if _BIAS.match(name):
        return [(name.replace(".mlp.expert_bias", ".mlp.gate.expert_bias"), tensor)]
    s = _SHARED.match(name)
    if s is not None:
        return [(f"model.layers.{s.group(1)}.mlp.shared_expert.{s.group(2)}", tensor)]
    return [(name, tensor)]


def tokenizer_object(folder: Path, options: LoadOptions, default: str = DEFAULT_HUB_ID):
    """The caller's tokenizer object, else the caller's / the folder's / the default tokenizer folder read."""
    from transformers import PreTrainedTokenizerFast

    return read_tokenizer(folder, options, default, PreTrainedTokenizerFast)


def mask_token_id(config: dict, tokenizer, tokens=(MASK_TOKEN, "<|mask|>"), default: str = DEFAULT_HUB_ID) -> int:
    """config.json's mask_token_id, else the tokenizer's mask token, else the first of ``tokens`` it has."""
    if config.get("mask_token_id") is not None:
        return int(config["mask_token_id"])
    if tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    for token in tokens:
        found = tokenizer.convert_tokens_to_ids(token)
        if isinstance(found, int) and found != tokenizer.unk_token_id:
            return found
    raise ConfigError(f"neither config.json nor the tokenizer names a mask token (this model's is {tokens[0]}); "
                      f"pass the tokenizer this model was released with ({default})")


def stop_token_ids(tokenizer, config: dict) -> list[int]:
    """The tokenizer's EOS, config.json's eos ids and the chat template's end of turn ``<|role_end|>``."""
    eos = config.get("eos_token_id")
    ids = [tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos]), tokenizer.convert_tokens_to_ids(EOT_TOKEN)]
    out = []
    for i in ids:
        if isinstance(i, int) and i != tokenizer.unk_token_id and i < len(tokenizer) and i not in out:
            out.append(i)
    return out


@register("family", "llada_moe")
class LLaDAMoEFamily(Family):
    """inclusionAI/LLaDA-MoE-7B-A1B-Base and -Instruct (architectures ["LLaDAMoEModelLM"])."""

    @classmethod
    def matches(cls, config, folder):
        return is_llada_moe(config)

    @classmethod
    def load(cls, folder: Path, config: dict, options: LoadOptions) -> Published:
        raw_tokenizer = tokenizer_object(folder, options)
        net_config = qwen3_moe_config(config, mask_token_id(config, raw_tokenizer))
        stacker = ExpertStacker(net_config.num_experts, net_config.moe_intermediate_size, net_config.hidden_size,
                                rename, "LLaDA-MoE checkpoint")
        model = load_weights(DiffusionQwen3MoeModel, net_config, folder, options, stacker, "LLaDA-MoE checkpoint")
        tokenizer = published_tokenizer(folder, replace(options, tokenizer=raw_tokenizer), DEFAULT_HUB_ID,
                                        net_config.mask_token_id, eos_token=config.get("eos_token_id"))
        return Published(
            model=model, tokenizer=tokenizer,
            process={"name": "masked", "schedule": {"name": "loglinear"}},
            # the model card's generate(): low_confidence remasking, temperature 0, blocks of 32
            sampler={"name": "confidence", "ordering": "confidence", "commit_schedule": "linear", "temperature": 0.0},
            seq_len=net_config.max_position_embeddings,
            notes={"source": str(folder), "generation": {"block_size": 32}, "stop_token_ids": stop_token_ids(tokenizer, config),
                   "protocol": "LLaDA generate.py: steps = gen_length, block_length 32, low-confidence remasking"},
        )
