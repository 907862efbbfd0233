"""Dream (Ye et al. 2025): Dream-v0-Base-7B and Dream-v0-Instruct-7B, on transformers' Qwen2.

Layout (``Dream-org/Dream-v0-*-7B``): ``config.json`` with ``model_type: "Dream"`` (Qwen2 keys:
``hidden_size``, ``num_attention_heads``, ``num_key_value_heads`` (GQA), ``rope_theta`` = 1e6,
``rms_norm_eps``, ``mask_token_id`` = 151666), sharded safetensors with an index, and Qwen2's BPE
tokenizer files (``<|endoftext|>`` = 151643, ``<|im_end|>`` = 151645, ChatML template).

The network is Qwen2-7B (q/k/v biases, no o_proj bias, SwiGLU, RMSNorm, rotary) with FULL
attention; its tensor names are Qwen2's own (``model.layers.i.self_attn.q_proj`` ...,
``model.norm``, ``lm_head``), so the mapping is the identity. Dream was initialised from an AR
model and keeps its shift: the logits that predict position i are the output at i − 1 (position 0
keeps its own); the denoiser applies that shift (``logits_shift = 1``) and returns aligned logits.

Decoding (the publisher's ``diffusion_generate``): one window over the whole answer, the
``entropy`` ordering (commit the lowest-entropy predictions first, alg_temp 0), the time grid
1 → ε = 1e-3 with k = ⌊n (1 − s / t)⌋ per step, temperature 0.2 and top_p 0.95 (their README); the
scores come from the temperature-scaled, filtered probabilities, as in Dream's ``sample_tokens``
(``score_from = "sampling"``).
"""
from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from ..weights import Drop, Rename
from .decoder import DecoderFamily, qwen2_network_config
from .family import LoadOptions


def qwen2_config(cfg: dict):
    """The DiffusionQwen2Config of a Dream config.json (one-line error for what it cannot express)."""
    if cfg.get("use_sliding_window"):
        raise ConfigError("this Dream config sets use_sliding_window=true; the released models attend to the full row, "
                          "textdiff converts only that")
    scaling = cfg.get("rope_scaling")
    if scaling not in (None, {}) and (scaling.get("rope_type") or scaling.get("type")) != "default":
        raise ConfigError(f"this Dream config sets rope_scaling={scaling!r}; textdiff converts only plain rotary")
    if cfg.get("mask_token_id") is None:
        raise ConfigError("this Dream config.json has no mask_token_id; the folder is incomplete")
    return qwen2_network_config(cfg, mask_token_id=int(cfg["mask_token_id"]), logits_shift=1)


class Dream(DecoderFamily):
    """Dream-org/Dream-v0-Base-7B and Dream-v0-Instruct-7B (model_type "Dream")."""

    name, label = "dream", "Dream"
    supports_device_map = True
    tokenizer_default = "Dream-org/Dream-v0-Instruct-7B"
    sampler = {"name": "confidence", "ordering": "entropy", "temperature": 0.2, "top_p": 0.95,
               "commit_rounding": "floor", "time_eps": 1e-3, "score_from": "sampling"}
    #: with its approximate caches (prefix / dual), Fast-dLLM's Dream decoding unless the caller says otherwise:
    #: blocks of 32 (its evaluations' block_length), the token before a block kept in the stale cache
    #: (lookback 0) and the block's leftmost [MASK] committed at the cache-refresh forward
    generation = {"cached": {"block_size": 32, "lookback": 0, "first_commit": "leftmost"}}
    stop_tokens = ("<|im_end|>", "<|endoftext|>")
    protocol = "Dream diffusion_generate: alg='entropy', alg_temp=0, eps=1e-3, steps = max_new_tokens"

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "Dream" or "DreamModel" in (config.get("architectures") or [])

    @classmethod
    def tokenizer_class_for(cls, folder: Path, options: LoadOptions):
        """tokenizer.json -> the generic fast tokenizer; bare vocab.json + merges.txt -> Qwen2's BPE
        (Dream's own DreamTokenizer class is remote code: never imported)."""
        from transformers import PreTrainedTokenizerFast

        where = Path(options.tokenizer) if isinstance(options.tokenizer, (str, Path)) else Path(folder)
        if not (where / "tokenizer.json").is_file() and (where / "vocab.json").is_file():
            from transformers import Qwen2Tokenizer

            return Qwen2Tokenizer
        return PreTrainedTokenizerFast

    @classmethod
    def network(cls, config: dict, tokenizer, source: str):
        from ..modeling_bidirectional import DiffusionQwen2Model

        return DiffusionQwen2Model, qwen2_config(config)

    @classmethod
    def renames(cls, config: dict, network) -> list:
        """Dream's names are Qwen2's; a tied checkpoint's stored lm_head (if any) is dropped."""
        return [Drop(r"lm_head\.weight")] * bool(network.tie_word_embeddings) + [Rename(r".*")]

    @classmethod
    def process(cls, config: dict, network) -> dict:
        return {"name": "masked", "schedule": {"name": "loglinear"}}
