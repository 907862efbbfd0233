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

Rename table (block i; :meth:`LLaDA.renames`)::

    model.transformer.wte                 -> model.embed_tokens
    model.transformer.blocks.i.q_proj     -> model.layers.i.self_attn.q_proj   (k_proj, v_proj alike)
    model.transformer.blocks.i.att_proj   -> model.layers.i.self_attn.{q,k,v}_proj   (rows split)
    model.transformer.blocks.i.attn_out   -> model.layers.i.self_attn.o_proj
    model.transformer.blocks.i.ff_proj    -> model.layers.i.mlp.gate_proj  ("sequential": rows split into up_proj, gate_proj)
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

from ...errors import ConfigError
from ..weights import Rename, Split
from .decoder import DecoderFamily

#: config values this conversion cannot express exactly (key -> the only supported value)
_REQUIRED = {"alibi": False, "rope": True, "include_bias": False, "attention_layer_norm": False,
             "scale_logits": False, "input_emb_norm": False, "block_group_size": 1, "layer_norm_type": "rms"}
_RENAME = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
           "attn_out": "self_attn.o_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj",
           "attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm"}
BLOCK, LAYER = r"model\.transformer\.blocks\.(\d+)\.", r"model.layers.\1."
_MOE_ARCHITECTURES = ("LLaDAMoEModelLM", "LLaDA2MoeModelLM")


#: LLaDA's mixture-of-experts successors (their own families: llada_moe.py, llada2.py)
MOE_TYPES = {"lladamoe": "LLaDA-MoE", "llada2_moe": "LLaDA 2.0"}


def llama_config(cfg: dict):
    """The DiffusionLlamaConfig of a LLaDA config.json (one-line error for what it cannot express)."""
    from ..modeling_bidirectional import DiffusionLlamaConfig

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


class LLaDA(DecoderFamily):
    """GSAI-ML/LLaDA-8B-Base, LLaDA-8B-Instruct, LLaDA-1.5 (model_type "llada")."""

    name, label = "llada", "LLaDA"
    supports_device_map = True
    tokenizer_default = "GSAI-ML/LLaDA-8B-Instruct"
    # generate.py: low_confidence remasking, temperature 0, blocks of 32
    sampler = {"name": "confidence", "ordering": "confidence", "commit_schedule": "linear", "temperature": 0.0}
    generation = {"block_size": 32}
    stop_tokens = ("<|eot_id|>", "<|endoftext|>")
    protocol = "LLaDA generate.py: steps = gen_length, block_length 32, low-confidence remasking"

    @classmethod
    def matches(cls, config: dict) -> bool:
        archs = config.get("architectures") or []
        kind = config.get("model_type")
        moe = (kind in MOE_TYPES or any(a in _MOE_ARCHITECTURES for a in archs)
               or (kind == "llada" and "expert_intermediate_size" in config))  # LLaDA-MoE, LLaDA 2.0: their own families
        return (kind == "llada" or any(a.startswith("LLaDA") for a in archs)) and not moe

    @classmethod
    def network(cls, config: dict, tokenizer, source: str):
        from ..modeling_bidirectional import DiffusionLlamaModel

        return DiffusionLlamaModel, llama_config(config)

    @classmethod
    def renames(cls, config: dict, network) -> list:
        dh = network.hidden_size // network.num_attention_heads
        qkv = (network.num_attention_heads * dh, network.num_key_value_heads * dh, network.num_key_value_heads * dh)
        if config.get("block_type", "sequential") == "sequential":  # fused SwiGLU [up; gate]
            ff_proj = Split(BLOCK + r"ff_proj\.weight", (LAYER + "mlp.up_proj.weight", LAYER + "mlp.gate_proj.weight"),
                            sizes=(network.intermediate_size,) * 2)
        else:
            ff_proj = Rename(BLOCK + r"ff_proj\.weight", LAYER + "mlp.gate_proj.weight")
        return [
            Rename(r"model\.transformer\.wte\.weight", "model.embed_tokens.weight"),
            Rename(r"model\.transformer\.ln_f\.weight", "model.norm.weight"),
            Rename(r"model\.transformer\.ff_out\.weight", "lm_head.weight"),
            Split(BLOCK + r"att_proj\.weight", tuple(LAYER + f"self_attn.{p}_proj.weight" for p in "qkv"), sizes=qkv),
            ff_proj,
            *[Rename(BLOCK + part + r"\.weight", LAYER + target + ".weight") for part, target in _RENAME.items()],
            Rename(r".*"),  # anything else keeps its name (reported by the final check unless the network has it)
        ]

    @classmethod
    def process(cls, config: dict, network) -> dict:
        return {"name": "masked", "schedule": {"name": "loglinear"}}
