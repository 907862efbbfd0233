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

Rename table (layer i, expert j; :meth:`LLaDAMoE.renames`)::

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

from pathlib import Path

from ...errors import ConfigError
from ..weights import Rename
from .decoder import DecoderFamily
from .moe import expert_stacks, find_mask_token_id, stop_token_ids

MASK_TOKEN, EOT_TOKEN = "<|mdm_mask|>", "<|role_end|>"


def is_llada_moe(config: dict) -> bool:
    archs = config.get("architectures") or []
    return "LLaDAMoEModelLM" in archs or config.get("model_type") == "lladamoe" or \
        (config.get("model_type") == "llada" and "expert_intermediate_size" in config)


def _refuse(key, value, want):
    raise ConfigError(f"this LLaDA-MoE config sets {key}={value!r}; textdiff converts only {want} "
                      "(the publisher's modeling_lladamoe.py semantics of the released checkpoints)")


def qwen3_moe_config(cfg: dict, mask_token_id: int):
    """The DiffusionQwen3MoeConfig of a LLaDA-MoE config.json (one-line error for what it cannot express)."""
    from ..modeling_moe import DiffusionQwen3MoeConfig

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


class LLaDAMoE(DecoderFamily):
    """inclusionAI/LLaDA-MoE-7B-A1B-Base and -Instruct (architectures ["LLaDAMoEModelLM"])."""

    name, label = "llada_moe", "LLaDA-MoE"
    tokenizer_default = "inclusionAI/LLaDA-MoE-7B-A1B-Instruct"
    # the model card's generate(): low_confidence remasking, temperature 0, blocks of 32
    sampler = {"name": "confidence", "ordering": "confidence", "commit_schedule": "linear", "temperature": 0.0}
    generation = {"block_size": 32}
    protocol = "LLaDA generate.py: steps = gen_length, block_length 32, low-confidence remasking"

    @classmethod
    def matches(cls, config: dict) -> bool:
        return is_llada_moe(config)

    @classmethod
    def network(cls, config: dict, tokenizer, source: str):
        from ..modeling_moe import DiffusionQwen3MoeModel

        mask_id = find_mask_token_id(config, tokenizer, (MASK_TOKEN, "<|mask|>"), cls.tokenizer_default)
        return DiffusionQwen3MoeModel, qwen3_moe_config(config, mask_id)

    @classmethod
    def renames(cls, config: dict, network) -> list:
        """The routed experts stacked; the router bias and the shared expert move into the sparse block;
        the rest are transformers' own names."""
        return [*expert_stacks(network.num_experts),
                Rename(r"model\.layers\.(\d+)\.mlp\.expert_bias", r"model.layers.\1.mlp.gate.expert_bias"),
                Rename(r"model\.layers\.(\d+)\.shared_expert\.(.+)", r"model.layers.\1.mlp.shared_expert.\2"),
                Rename(r".*")]

    @classmethod
    def process(cls, config: dict, network) -> dict:
        return {"name": "masked", "schedule": {"name": "loglinear"}}

    @classmethod
    def notes(cls, folder: Path, config: dict, tokenizer, aside: dict) -> dict:
        return {**super().notes(folder, config, tokenizer, aside), "stop_token_ids": stop_token_ids(tokenizer, config, EOT_TOKEN)}
