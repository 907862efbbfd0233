"""Shared by the Ling-based block-diffusion families (LLaDA 2.0, LLaDA 2.1): the BailingMoeV2
network on transformers' GLM-4-MoE, its rename table and its block process.

Both releases ship the same network (``modeling_llada2_moe.py``); see :mod:`.llada2` for the layout,
the formula and the rename table. A family subclasses :class:`LingBlockFamily` and declares its
name, ``matches`` and released decoding.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from ..weights import Rename, Split
from .decoder import DecoderFamily
from .moe import expert_stacks, find_mask_token_id, stop_token_ids

MASK_TOKEN, EOT_TOKEN = "<|mask|>", "<|role_end|>"
BLOCK_SIZE = 32  # the block length LLaDA 2.0 was trained and decodes with
ATTENTION, SELF_ATTN = r"model\.layers\.(\d+)\.attention\.", r"model.layers.\1.self_attn."


def glm4_moe_config(cfg: dict, mask_id: int, label: str = "LLaDA 2.0"):
    """The DiffusionGlm4MoeConfig of a LLaDA 2.x config.json (one-line error for what it cannot express)."""
    from ..modeling_moe import DiffusionGlm4MoeConfig

    kind = cfg.get("model_type", "llada2_moe")

    def _refuse(key, value, want):
        raise ConfigError(f"this {label} config (model_type {kind!r}) sets {key}={value!r}; textdiff converts only "
                          f"{want} (the publisher's modeling_llada2_moe.py semantics)")

    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                           "num_experts", "num_experts_per_tok", "moe_intermediate_size") if cfg.get(k) is None]
    if missing:
        raise ConfigError(f"this {label} config.json (model_type {kind!r}) lacks {', '.join(missing)}; "
                          "the file is incomplete")
    heads, kv, d = int(cfg["num_attention_heads"]), int(cfg["num_key_value_heads"]), int(cfg["hidden_size"])
    E, k = int(cfg["num_experts"]), int(cfg["num_experts_per_tok"])
    groups, top_groups = int(cfg.get("n_group", 8)), int(cfg.get("topk_group", 4))
    if kv <= 0 or heads % kv:
        _refuse("num_key_value_heads", kv, f"a positive divisor of num_attention_heads={heads}")
    if groups <= 0 or E % groups or E // groups < 2 or not 0 < top_groups <= groups or k > top_groups * (E // groups):
        _refuse("n_group / topk_group", (groups, top_groups), f"groups of >= 2 of the {E} experts holding the top-{k}")
    if cfg.get("num_shared_experts") is None:
        _refuse("num_shared_experts", None, "a number (0 or more) of shared experts")
    if cfg.get("use_sliding_window"):
        _refuse("use_sliding_window", True, "full attention inside the block mask")
    if cfg.get("norm_head"):
        _refuse("norm_head", True, "norm_head=false (the modeling code has no normalised head)")
    scaling = cfg.get("rope_scaling")
    if scaling not in (None, {}) and (scaling.get("rope_type") or scaling.get("type")) != "default":
        _refuse("rope_scaling", scaling, "plain rotary (rope_scaling=null)")
    first_dense = int(cfg.get("first_k_dense_replace", 0))
    if first_dense > 0 and not cfg.get("intermediate_size"):
        _refuse("intermediate_size", cfg.get("intermediate_size"), "a width for the first_k_dense_replace dense layers")
    factor = float(cfg.get("partial_rotary_factor", 0.5))  # the config class's default
    head_dim = int(cfg.get("head_dim") or d // heads)
    if int(head_dim * factor) % 2 or int(head_dim * factor) <= 0:
        _refuse("partial_rotary_factor", factor, f"an even, positive rotary width of head_dim={head_dim}")
    theta = float(cfg.get("rope_theta", 10000.0))
    return DiffusionGlm4MoeConfig(
        vocab_size=int(cfg["vocab_size"]), hidden_size=d, num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim, hidden_act=cfg.get("hidden_act", "silu"),
        intermediate_size=int(cfg.get("intermediate_size") or cfg["moe_intermediate_size"]),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 16384)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_parameters={"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": factor},
        partial_rotary_factor=factor, attention_bias=bool(cfg.get("use_qkv_bias", False)),
        o_proj_bias=bool(cfg.get("use_bias", True)), use_qk_norm=bool(cfg.get("use_qk_norm", True)),
        moe_intermediate_size=int(cfg["moe_intermediate_size"]), n_routed_experts=E, num_experts_per_tok=k,
        n_shared_experts=int(cfg["num_shared_experts"]), n_group=groups, topk_group=top_groups,
        routed_scaling_factor=float(cfg.get("routed_scaling_factor", 2.5)), norm_topk_prob=k > 1,
        first_k_dense_replace=first_dense, tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention="block_causal", block_size=BLOCK_SIZE, mask_token_id=int(mask_id),
        pad_token_id=cfg.get("pad_token_id"), eos_token_id=cfg.get("eos_token_id"), bos_token_id=cfg.get("bos_token_id"),
    )


class LingBlockFamily(DecoderFamily):
    """The LLaDA 2.x network, renames, block process and stop tokens; subclasses declare the rest."""

    @classmethod
    def network(cls, config: dict, tokenizer, source: str):
        from ..modeling_moe import DiffusionGlm4MoeModel

        mask_id = find_mask_token_id(config, tokenizer, (MASK_TOKEN,), cls.tokenizer_default)
        return DiffusionGlm4MoeModel, glm4_moe_config(config, mask_id, cls.label)
    @classmethod
    def renames(cls, config: dict, network) -> list:
        """Fused [q heads; k heads; v heads] rows split, attention names moved to ``self_attn``, the
        router bias renamed, the routed experts stacked; the rest are transformers' own names."""
        Dh = network.head_dim
        sizes = (network.num_attention_heads * Dh, network.num_key_value_heads * Dh, network.num_key_value_heads * Dh)
        return [
            Rename(r"model\.word_embeddings\.weight", "model.embed_tokens.weight"),
            Rename(r"(.*\.mlp\.gate)\.expert_bias", r"\1.e_score_correction_bias"),
            Split(ATTENTION + r"query_key_value\.(weight|bias)", tuple(SELF_ATTN + f"{p}_proj.\\2" for p in "qkv"), sizes=sizes),
            Rename(ATTENTION + r"dense\.(weight|bias)", SELF_ATTN + r"o_proj.\2"),
            Rename(ATTENTION + r"query_layernorm\.(weight|bias)", SELF_ATTN + r"q_norm.\2"),
            Rename(ATTENTION + r"key_layernorm\.(weight|bias)", SELF_ATTN + r"k_norm.\2"),
            Rename(ATTENTION + r"(\w+)\.(weight|bias)", SELF_ATTN + r"\2.\3"),
            *expert_stacks(network.n_routed_experts),
            Rename(r".*"),
        ]

    @classmethod
    def process(cls, config: dict, network) -> dict:
        return {"name": "block", "block_size": BLOCK_SIZE, "schedule": {"name": "loglinear"}}

    @classmethod
    def notes(cls, folder: Path, config: dict, tokenizer, aside: dict) -> dict:
        return {**super().notes(folder, config, tokenizer, aside), "stop_token_ids": stop_token_ids(tokenizer, config, EOT_TOKEN)}
