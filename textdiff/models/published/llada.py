"""LLaDA (Nie et al. 2025): LLaDA-8B-Base / -Instruct and LLaDA-1.5, on transformers' Llama.

Layout (``GSAI-ML/LLaDA-8B-*``): ``config.json`` with ``model_type: "llada"`` (OLMo-style keys:
``d_model``, ``n_heads``, ``n_kv_heads``, ``n_layers``, ``mlp_hidden_size``, ``block_type``,
``rope_theta``, ``rms_norm_eps``, ``weight_tying``, ``mask_token_id`` = 126336), sharded
safetensors with ``model.safetensors.index.json``, and the tokenizer files (a Llama-3 style chat
template; ``<|endoftext|>`` = 126081, ``<|eot_id|>`` = 126348).

The network is a Llama with FULL attention: RMSNorm (float32 statistics, weight applied after the
cast back, as LlamaRMSNorm), rotary on every head (inv_freq = θ^(−2i/Dh), halves rotated),
no biases, an untied output projection ``ff_out``. Block ``"llama"`` has separate q/k/v and
``ff_proj`` (gate, SiLU) / ``up_proj`` / ``ff_out`` (down) projections; block ``"sequential"`` fuses
them (``att_proj`` = [q; k; v], ``ff_proj`` = [up; gate] for SwiGLU) and is split on loading.

Tensor names (block i)::

    model.transformer.wte                 -> model.embed_tokens
    model.transformer.blocks.i.q_proj     -> model.layers.i.self_attn.q_proj   (k_proj, v_proj alike)
    model.transformer.blocks.i.attn_out   -> model.layers.i.self_attn.o_proj
    model.transformer.blocks.i.ff_proj    -> model.layers.i.mlp.gate_proj
    model.transformer.blocks.i.up_proj    -> model.layers.i.mlp.up_proj
    model.transformer.blocks.i.ff_out     -> model.layers.i.mlp.down_proj
    model.transformer.blocks.i.attn_norm  -> model.layers.i.input_layernorm
    model.transformer.blocks.i.ff_norm    -> model.layers.i.post_attention_layernorm
    model.transformer.ln_f                -> model.norm
    model.transformer.ff_out              -> lm_head

Decoding (the publishers' ``generate.py``): semi-autoregressive blocks of 32 tokens, low-confidence
remasking (commit the most probable predictions, LLaDA's even split per step), temperature 0.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ...errors import ConfigError
from ..modeling_bidirectional import DiffusionLlamaConfig, DiffusionLlamaModel
from . import Family, LoadOptions, Published, register
from ._hf import load_weights, published_tokenizer

#: config values this conversion cannot express exactly (key -> the only supported value)
_REQUIRED = {"alibi": False, "rope": True, "include_bias": False, "attention_layer_norm": False,
             "scale_logits": False, "input_emb_norm": False, "block_group_size": 1, "layer_norm_type": "rms"}
_RENAME = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
           "attn_out": "self_attn.o_proj", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
           "ff_out": "mlp.down_proj", "attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm"}
_BLOCK = re.compile(r"^model\.transformer\.blocks\.(\d+)\.(\w+)\.weight$")
EOT_TOKEN, EOS_TOKEN = "<|eot_id|>", "<|endoftext|>"
DEFAULT_HUB_ID = "GSAI-ML/LLaDA-8B-Instruct"


#: LLaDA's mixture-of-experts successors (their own families: llada_moe.py, llada2.py)
MOE_TYPES = {"lladamoe": "LLaDA-MoE", "llada2_moe": "LLaDA 2.0"}


def llama_config(cfg: dict) -> DiffusionLlamaConfig:
    """The DiffusionLlamaConfig of a LLaDA config.json (one-line error for what it cannot express)."""
    kind = cfg.get("model_type")
    if kind in MOE_TYPES or "num_experts" in cfg or "d_model" not in cfg:
        name = MOE_TYPES.get(kind, "a mixture-of-experts LLaDA" if "num_experts" in cfg else "an unknown LLaDA variant")
        raise ConfigError(f"this folder holds {name} (model_type {kind!r}) whose keys match neither the dense LLaDA-8B / "
                          "1.5 layout (d_model, n_layers, ...) nor LLaDA-MoE's (expert_intermediate_size, moe_layer_freq, ...)")
    missing = [k for k in ("n_heads", "n_layers", "vocab_size") if k not in cfg]
    if missing:
        raise ConfigError(f"this LLaDA config.json lacks {', '.join(missing)}; the file is incomplete")
    for key, value in _REQUIRED.items():
        if key in cfg and cfg[key] != value:
            raise ConfigError(f"this LLaDA config sets {key}={cfg[key]!r}; textdiff converts only {key}={value!r} "
                              "(the released LLaDA-8B / 1.5 layout)")
    if cfg.get("include_qkv_bias"):
        raise ConfigError("this LLaDA config sets include_qkv_bias=true, which the released checkpoints do not use; not supported")
    block = cfg.get("block_type", "sequential")
    act = cfg.get("activation_type", "swiglu")
    if (block, act) not in (("llama", "silu"), ("sequential", "swiglu")):
        raise ConfigError(f"LLaDA block_type={block!r} with activation_type={act!r} is not supported; "
                          "use 'llama' + 'silu' (LLaDA-8B) or 'sequential' + 'swiglu'")
    d, heads = int(cfg["d_model"]), int(cfg["n_heads"])
    kv = 1 if cfg.get("multi_query_attention") else int(cfg.get("n_kv_heads") or heads)
    hidden = int(cfg.get("mlp_hidden_size") or cfg.get("mlp_ratio", 4) * d)
    vocab = int(cfg.get("embedding_size") or cfg["vocab_size"])  # logits cover the padded embedding
    if cfg.get("mask_token_id") is None:
        raise ConfigError("this LLaDA config.json has no mask_token_id; the folder is incomplete")
    return DiffusionLlamaConfig(
        vocab_size=vocab, hidden_size=d, intermediate_size=hidden if block == "llama" else hidden // 2,
        num_hidden_layers=int(cfg["n_layers"]), num_attention_heads=heads, num_key_value_heads=kv,
        hidden_act="silu", max_position_embeddings=int(cfg.get("max_sequence_length", 4096)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000.0))},
        tie_word_embeddings=bool(cfg.get("weight_tying", False)), attention_bias=False, mlp_bias=False,
        mask_token_id=int(cfg["mask_token_id"]), pad_token_id=cfg.get("pad_token_id"),
        eos_token_id=cfg.get("eos_token_id"), bos_token_id=None,
    )


def convert_tensor(name: str, tensor: torch.Tensor, config: DiffusionLlamaConfig):
    """[(textdiff name, tensor)] for one LLaDA tensor; [] for tensors without a counterpart."""
    if name == "model.transformer.wte.weight":
        return [("model.embed_tokens.weight", tensor)]
    if name == "model.transformer.ln_f.weight":
        return [("model.norm.weight", tensor)]
    if name == "model.transformer.ff_out.weight":
        return [("lm_head.weight", tensor)]
    m = _BLOCK.match(name)
    if m is None:
        return [(name, tensor)]  # unknown: reported by the shape check as unexpected
    prefix, part = f"model.layers.{m.group(1)}.", m.group(2)
    if part == "att_proj":  # fused [q; k; v] rows (block "sequential")
        dh = config.hidden_size // config.num_attention_heads
        q, k, v = tensor.split([config.num_attention_heads * dh, config.num_key_value_heads * dh,
                                config.num_key_value_heads * dh], dim=0)
        return [(prefix + "self_attn.q_proj.weight", q), (prefix + "self_attn.k_proj.weight", k),
                (prefix + "self_attn.v_proj.weight", v)]
    if part == "ff_proj" and tensor.shape[0] == 2 * config.intermediate_size:  # fused SwiGLU [up; gate]
        up, gate = tensor.chunk(2, dim=0)
        return [(prefix + "mlp.up_proj.weight", up), (prefix + "mlp.gate_proj.weight", gate)]
    if part in _RENAME:
        return [(prefix + _RENAME[part] + ".weight", tensor)]
    return [(name, tensor)]


@register("family", "llada")
class LLaDAFamily(Family):
    """GSAI-ML/LLaDA-8B-Base, LLaDA-8B-Instruct, LLaDA-1.5 (model_type "llada")."""

    supports_device_map = True

    @classmethod
    def matches(cls, config, folder):
        archs = config.get("architectures") or []
        from .llada_moe import is_llada_moe  # LLaDA-MoE and LLaDA 2.0 have their own families

        moe = is_llada_moe(config) or config.get("model_type") == "llada2_moe" or "LLaDA2MoeModelLM" in archs
        return (config.get("model_type") in ("llada", *MOE_TYPES) or any(a.startswith("LLaDA") for a in archs)) and not moe

    @classmethod
    def load(cls, folder: Path, config: dict, options: LoadOptions) -> Published:
        net_config = llama_config(config)
        model = load_weights(DiffusionLlamaModel, net_config, folder, options,
                             lambda n, t: convert_tensor(n, t, net_config), "LLaDA checkpoint")
        from transformers import PreTrainedTokenizerFast

        tokenizer = published_tokenizer(folder, options, DEFAULT_HUB_ID, net_config.mask_token_id,
                                        eos_token=config.get("eos_token_id"), tokenizer_class=PreTrainedTokenizerFast)
        stop = [i for i in (tokenizer.convert_tokens_to_ids(EOT_TOKEN), tokenizer.convert_tokens_to_ids(EOS_TOKEN))
                if isinstance(i, int) and i != tokenizer.unk_token_id and i is not None]
        return Published(
            model=model, tokenizer=tokenizer,
            process={"name": "masked", "schedule": {"name": "loglinear"}},
            # generate.py: low_confidence remasking, temperature 0, blocks of 32
            sampler={"name": "confidence", "ordering": "confidence", "commit_schedule": "linear", "temperature": 0.0},
            seq_len=net_config.max_position_embeddings,
            notes={"source": str(folder), "generation": {"block_size": 32}, "stop_token_ids": stop,
                   "protocol": "LLaDA generate.py: steps = gen_length, block_length 32, low-confidence remasking"},
        )
