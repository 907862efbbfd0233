"""LLaDA 2.0 (inclusionAI 2025): LLaDA2.0-mini-preview / -flash-preview, on transformers' GLM-4-MoE.

Layout (``inclusionAI/LLaDA2.0-*``): ``config.json`` with ``model_type: "llada2_moe"``,
``architectures: ["LLaDA2MoeModelLM"]`` and BailingMoeV2 keys (``hidden_size``, ``head_dim``,
``num_attention_heads``, ``num_key_value_heads``, ``use_qkv_bias``, ``use_bias``, ``use_qk_norm``,
``partial_rotary_factor``, ``num_experts``, ``num_shared_experts``, ``num_experts_per_tok``,
``n_group``, ``topk_group``, ``routed_scaling_factor``, ``moe_intermediate_size``,
``first_k_dense_replace``), sharded safetensors with an index and Ling's tokenizer files (its mask
token ``<|mask|>``, EOS ``<|endoftext|>``; the config carries no mask id).

The network (the publisher's ``modeling_llada2_moe.py``): fused ``query_key_value`` ([q; k; v]
heads), per-head q/k RMSNorm, rotary on the first ``partial_rotary_factor · head_dim`` dims of each
head, SwiGLU; layers ``>= first_k_dense_replace`` are sparse::

    s = sigmoid(W_r x)  (float32);   pick = group_topk(s + b)   (top ``topk_group`` of ``n_group`` groups,
    each scored by the sum of its two best; then the k best experts inside them)
    w = s[pick] / Σ s[pick]  (k > 1)  · routed_scaling_factor;   y = Σ w_e E_e(x) + S(x)

which is term for term transformers' ``Glm4MoeModel`` (``norm_topk_prob = k > 1``;
``e_score_correction_bias`` = b); its ``attention`` is BLOCK-CAUSAL: blocks of 32 positions,
bidirectional inside a block, attending to every earlier block (the mask the publisher's
``generate`` builds), so the denoiser is ``attention = "block_causal"``, ``block_size = 32`` and
the process is textdiff's block diffusion (BD3-LM's NELBO, exact KV cache of earlier blocks).
The publisher's code does not read ``norm_head`` or ``use_sliding_window`` (refused when set).

Rename table (layer i, expert j; :meth:`LLaDA2.renames`)::

    model.word_embeddings                      -> model.embed_tokens
    model.layers.i.attention.query_key_value   -> model.layers.i.self_attn.{q,k,v}_proj  (rows split)
    model.layers.i.attention.dense             -> model.layers.i.self_attn.o_proj
    model.layers.i.attention.query_layernorm   -> model.layers.i.self_attn.q_norm   (key_layernorm -> k_norm)
    model.layers.i.mlp.gate.expert_bias        -> model.layers.i.mlp.gate.e_score_correction_bias
    model.layers.i.mlp.experts.j.*             -> model.layers.i.mlp.experts.{gate_up_proj, down_proj}[j]
    (norms, dense MLPs, router weight, shared_experts, model.norm, lm_head: the same)

Decoding (``LLaDA2MoeModelLM.generate``, the model card's settings): blocks of 32, 32 steps per
block, temperature 0, threshold 0.95 (commit every masked position more confident than that, at
least the scheduled one per step: textdiff's ``threshold`` sampler), stop after the block that
holds EOS. Its blocks are counted from the start of the sequence, so the first decoded block also
holds the prompt's tail (the tokens after its last whole block); ``generation_defaults``
``blocks_from = "sequence_start"`` makes ``DiffusionLM.generate`` decode that way (the tail is a
frozen part of the first window), token for token with the publisher's generate and with the exact
KV cache of the whole blocks before it. (Plain :func:`textdiff.generation.generate` starts a fresh
block after the prompt: the same decoding when the prompt length is a multiple of 32.) With fewer
steps than the block length the publisher commits at least its even split of the block per step;
the sampler's ``min_commit = "even_split"`` does the same (one per step at the released 32).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ...errors import ConfigError
from ..weights import Rename, Split
from .decoder import DecoderFamily
from .moe import expert_stacks, find_mask_token_id, stop_token_ids

MASK_TOKEN, EOT_TOKEN = "<|mask|>", "<|role_end|>"
BLOCK_SIZE = 32  # the block length LLaDA 2.0 was trained and decodes with
ATTENTION, SELF_ATTN = r"model\.layers\.(\d+)\.attention\.", r"model.layers.\1.self_attn."


def _refuse(key, value, want):
    raise ConfigError(f"this LLaDA 2.0 config (model_type 'llada2_moe') sets {key}={value!r}; textdiff converts only "
                      f"{want} (the publisher's modeling_llada2_moe.py semantics)")


def glm4_moe_config(cfg: dict, mask_id: int):
    """The DiffusionGlm4MoeConfig of a LLaDA 2.0 config.json (one-line error for what it cannot express)."""
    from ..modeling_moe import DiffusionGlm4MoeConfig

    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                           "num_experts", "num_experts_per_tok", "moe_intermediate_size") if cfg.get(k) is None]
    if missing:
        raise ConfigError(f"this LLaDA 2.0 config.json (model_type 'llada2_moe') lacks {', '.join(missing)}; "
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


class LLaDA2(DecoderFamily):
    """inclusionAI/LLaDA2.0-mini-preview and -flash-preview (model_type "llada2_moe")."""

    name, label = "llada2", "LLaDA 2.0"
    tokenizer_default = "inclusionAI/LLaDA2.0-mini-preview"
    # generate(): temperature 0, threshold 0.95, steps = block length (one scheduled commit per step)
    sampler = {"name": "threshold", "threshold": 0.95, "temperature": 0.0, "min_commit": "even_split"}
    generation = {"block_size": BLOCK_SIZE, "blocks_from": "sequence_start"}
    protocol = ("LLaDA2MoeModelLM.generate: block_length 32, steps 32 per block, threshold 0.95, "
                "temperature 0, stop after the block with EOS")
    writes_back = True  # SGLang and vLLM serve LLaDA 2.0: textdiff convert --to published

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "llada2_moe" or "LLaDA2MoeModelLM" in (config.get("architectures") or [])

    @classmethod
    def network(cls, config: dict, tokenizer, source: str):
        from ..modeling_moe import DiffusionGlm4MoeModel

        mask_id = find_mask_token_id(config, tokenizer, (MASK_TOKEN,), cls.tokenizer_default)
        return DiffusionGlm4MoeModel, glm4_moe_config(config, mask_id)

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

    @classmethod
    def write_back(cls, tensors: dict, config: dict) -> dict:
        """The inverse of :meth:`renames`: q / k / v rows fused again into ``query_key_value``, the
        attention names moved back under ``attention``, the router bias renamed, each layer's stacked
        experts split into ``experts.j.{gate,up,down}_proj`` (``gate_up_proj`` rows are [gate; up])."""
        back = [(r"model\.embed_tokens\.weight", "model.word_embeddings.weight"),
                (r"(.*\.mlp\.gate)\.e_score_correction_bias", r"\1.expert_bias"),
                (SELF + r"o_proj\.(weight|bias)", BACK + r"dense.\2"),
                (SELF + r"q_norm\.(weight|bias)", BACK + r"query_layernorm.\2"),
                (SELF + r"k_norm\.(weight|bias)", BACK + r"key_layernorm.\2"),
                (SELF + r"(\w+)\.(weight|bias)", BACK + r"\2.\3")]
        out = {}
        for name, t in tensors.items():
            fused = re.fullmatch(SELF + r"([qkv])_proj\.(weight|bias)", name)
            experts = re.fullmatch(r"(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)", name)
            if fused:
                if fused.group(2) == "q":
                    i, kind = fused.group(1), fused.group(3)
                    parts = [tensors[f"model.layers.{i}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                    out[f"model.layers.{i}.attention.query_key_value.{kind}"] = torch.cat(parts, 0)
            elif experts:
                for j in range(t.shape[0]):  # t: [E, 2I, d] (gate_up) or [E, d, I] (down)
                    if experts.group(2) == "gate_up_proj":
                        gate, up = t[j].chunk(2, 0)
                        out[f"{experts.group(1)}.{j}.gate_proj.weight"] = gate.clone()
                        out[f"{experts.group(1)}.{j}.up_proj.weight"] = up.clone()
                    else:
                        out[f"{experts.group(1)}.{j}.down_proj.weight"] = t[j].clone()
            else:
                out[next((re.sub(p, r, name) for p, r in back if re.fullmatch(p, name)), name)] = t
        return out


SELF, BACK = r"model\.layers\.(\d+)\.self_attn\.", r"model.layers.\1.attention."
