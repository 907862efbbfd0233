"""SDAR (JetAstra 2025) and TraDo (Gen-Verse 2025, SDAR after TraceRL): block diffusion from Qwen3.

Layout (``JetLM/SDAR-*-Chat``, ``Gen-Verse/TraDo-*-Instruct``): ``config.json`` with ``model_type:
"sdar"``, ``architectures: ["SDARForCausalLM"]`` and Qwen3's keys (``head_dim``, ``num_key_value_heads``,
``rms_norm_eps``, ``rope_theta``, ``attention_bias``, ``tie_word_embeddings``) plus training-only
keys (``fuse_cross_entropy``, ``attn_implementation``, ``ep_size``, ``micro_forward``, ...; ignored),
safetensors (one file or shards + index) and Qwen's tokenizer with the mask token ``<|MASK|>``
(the config carries no mask id). The network is Qwen3 term for term (q/k RMSNorm per head before
rotary, SwiGLU, no biases) with the tensor names of transformers' Qwen3, so the rename table is
the identity. Its attention in ``block_diffusion_generate`` is BLOCK-CAUSAL with the decoding block
(``block_length``, 4 for the released chat models): textdiff's ``attention = "block_causal"``,
``block_size = 4``, the block process and the exact KV cache of committed blocks.

Decoding (``block_diffusion_generate``, dLLM-RL's ``generate.py`` "adapted from SDAR"): blocks of 4
counted from the sequence start (the prompt's tail is frozen in the first block), 4 steps per block,
``low_confidence_dynamic``: sample x̂0 ~ softmax(l / T) (T = 1, top-k / top-p off) at every position
of the block, commit every [MASK] whose p̃(x̂0) > 0.85 and at least the step's even share of the
block (textdiff's ``threshold`` sampler with ``min_commit = "even_split"``, ``score_from =
"sampling"``); the softmax keeps the [MASK] logit (``mask_logit = "keep"``); TraDo's README uses
threshold 0.9. ``low_confidence_static`` is the ``confidence`` sampler (linear schedule).
SDAR has no greedy mode; ``rng = "torch"`` draws as its code does (one float32 multinomial over the
block per step) for parity tests; textdiff's per-row float64 draws are the default.

Not copied: when fewer [MASK]s remain in the block than the step's share k, the publisher's
``torch.topk`` over the confidences (−∞ off the masks) also picks non-[MASK] positions and
overwrites prompt or committed tokens with fresh samples. textdiff commits only [MASK]s; the two
agree on every run that never has fewer masks than k (always at k = 1, i.e. steps = block length).
"""
from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from ..weights import Drop, Rename
from .decoder import DecoderFamily
from .moe import find_mask_token_id, stop_token_ids

MASK_TOKEN, EOT_TOKEN = "<|MASK|>", "<|im_end|>"
BLOCK_SIZE = 4  # block_diffusion_generate's block_length for the released chat models

#: block_diffusion_generate's defaults (SDAR) and TraDo's README (threshold 0.9)
SDAR_DECODING = {"name": "threshold", "threshold": 0.85, "temperature": 1.0, "min_commit": "even_split",
                 "score_from": "sampling", "mask_logit": "keep"}
TRADO_DECODING = {**SDAR_DECODING, "threshold": 0.9}


def qwen3_config(cfg: dict, mask_id: int, label: str):
    """The DiffusionQwen3Config of an SDAR config.json (one-line error for what it cannot express)."""
    from ..modeling_bidirectional import DiffusionQwen3Config

    def refuse(key, want):
        raise ConfigError(f"this {label} config sets {key}={cfg.get(key)!r}; textdiff converts only {want}")

    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
               if cfg.get(k) is None]
    if missing:
        raise ConfigError(f"this {label} config.json lacks {', '.join(missing)}; the file is incomplete")
    if cfg.get("use_sliding_window"):
        refuse("use_sliding_window", "full attention inside the block mask")
    scaling = cfg.get("rope_scaling")
    if scaling not in (None, {}) and (scaling.get("rope_type") or scaling.get("type")) != "default":
        refuse("rope_scaling", "plain rotary (rope_scaling=null)")
    heads = int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or heads)
    if kv <= 0 or heads % kv:
        refuse("num_key_value_heads", f"a positive divisor of num_attention_heads={heads}")
    return DiffusionQwen3Config(
        vocab_size=int(cfg["vocab_size"]), hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]), num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=heads, num_key_value_heads=kv,
        head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads), hidden_act=cfg.get("hidden_act", "silu"),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)), rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000.0))},
        attention_bias=bool(cfg.get("attention_bias", False)), tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        use_sliding_window=False, sliding_window=None, attention="block_causal", block_size=BLOCK_SIZE,
        mask_token_id=int(mask_id), pad_token_id=cfg.get("pad_token_id"), bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
    )


class SDAR(DecoderFamily):
    """JetLM/SDAR-*-Chat and Gen-Verse/TraDo-*-Instruct (model_type "sdar")."""

    name, label = "sdar", "SDAR"
    supports_device_map = True
    tokenizer_default = "JetLM/SDAR-4B-Chat"
    sampler = dict(SDAR_DECODING)
    generation = {"block_size": BLOCK_SIZE, "blocks_from": "sequence_start"}
    protocol = ("block_diffusion_generate: block_length 4, denoising_steps 4, low_confidence_dynamic, "
                "confidence_threshold 0.85 (TraDo: 0.9), temperature 1.0, top_k 0, top_p 1.0")

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "sdar" or "SDARForCausalLM" in (config.get("architectures") or [])

    @classmethod
    def network(cls, config: dict, tokenizer, source: str):
        from ..modeling_bidirectional import DiffusionQwen3Model

        mask_id = find_mask_token_id(config, tokenizer, (MASK_TOKEN,), cls.tokenizer_default)
        return DiffusionQwen3Model, qwen3_config(config, mask_id, cls.label)

    @classmethod
    def renames(cls, config: dict, network) -> list:
        """SDAR's names are transformers' Qwen3's; a tied checkpoint's stored lm_head (if any) is dropped."""
        return [Drop(r"lm_head\.weight")] * bool(network.tie_word_embeddings) + [Rename(r".*")]

    @classmethod
    def process(cls, config: dict, network) -> dict:
        return {"name": "block", "block_size": BLOCK_SIZE, "schedule": {"name": "loglinear"}}

    @classmethod
    def notes(cls, folder: Path, config: dict, tokenizer, aside: dict) -> dict:
        return {**super().notes(folder, config, tokenizer, aside), "stop_token_ids": stop_token_ids(tokenizer, config, EOT_TOKEN)}
