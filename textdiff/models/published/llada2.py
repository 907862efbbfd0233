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

import torch

from .ling import BLOCK_SIZE, LingBlockFamily


class LLaDA2(LingBlockFamily):
    """inclusionAI/LLaDA2.0-mini-preview and -flash-preview (model_type "llada2_moe"); a released LLaDA 2.1
    folder has the same config.json and loads here too (its editing decoding: :mod:`.llada21`)."""

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
        kind = config.get("model_type")
        return kind == "llada2_moe" or (kind != "llada21_moe" and "LLaDA2MoeModelLM" in (config.get("architectures") or []))

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
