"""Fast-dLLM v2 (NVIDIA 2025): Fast_dLLM_v2_1.5B / _7B, block diffusion adapted from Qwen2.5.

Layout (``Efficient-Large-Model/Fast_dLLM_v2_*``): ``config.json`` with ``model_type:
"Fast_dLLM_Qwen"``, ``architectures: ["Fast_dLLM_QwenForCausalLM"]``, Qwen2's keys, ``bd_size``
(the diffusion block, 32) and the training switch ``conplemenrary_mask`` (spelt so; ignored here),
sharded safetensors with an index and Qwen2.5's tokenizer with the mask ``|<MASK>|`` (151665;
not in config.json) and EOS / stop token ``<|im_end|>``.

The network is Qwen2.5 (q/k/v biases, RMSNorm, rotary, SwiGLU; transformers' Qwen2 names, so the
rename table is the identity) with a BLOCK-CAUSAL mask in eval mode (query block >= key block,
blocks of ``bd_size``) and a TOKEN SHIFT: the logits that predict position j come from the output
at j − 1 (it was a next-token model). textdiff's denoiser: ``attention = "block_causal"``,
``block_size = bd_size``, ``logits_shift = 1`` (aligned logits; the exact KV cache feeds the token
before each window with it, so the window's first logits are read from the previous block's last
output).

Decoding (``Fast_dLLM_QwenForCausalLM.generate``, the model card's call): blocks of 32 counted from
the sequence start; each block is decoded in sub-blocks of ``small_block_size`` = 8 left to right,
committing every [MASK] of the sub-block whose confidence p(x̂0) exceeds ``threshold`` = 0.9 and at
least the most confident one (argmax at temperature 0; the softmax keeps the [MASK] logit); when a
block is complete, the argmax of its last output is appended as the next block's first token. That
is textdiff's ``threshold`` sampler with ``sub_block = 8``, ``first_commit = "block_start"`` and
``mask_logit = "keep"``; generation stops after the block that holds the stop token.

Not copied: a prompt of exactly one block (P = 32) is neither prefilled nor in the decoded window in
the publisher's code, so its first block is decoded without seeing the prompt; textdiff conditions
on it. The ``use_block_cache`` sub-block cache reuses stale keys of the block (approximate); textdiff
decodes with the exact cache of committed blocks.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from ..weights import Drop, Rename
from .decoder import DecoderFamily, qwen2_network_config
from .moe import find_mask_token_id, stop_token_ids

MASK_TOKEN, EOT_TOKEN = "|<MASK>|", "<|im_end|>"
SUB_BLOCK = 8  # generate's small_block_size in the model card


def qwen25_config(cfg: dict, mask_id: int):
    """The DiffusionQwen2Config of a Fast-dLLM v2 config.json (one-line error for what it cannot express)."""
    def refuse(key, want):
        raise ConfigError(f"this Fast-dLLM v2 config sets {key}={cfg.get(key)!r}; textdiff converts only {want}")

    if cfg.get("use_sliding_window"):
        refuse("use_sliding_window", "full attention inside the block mask")
    scaling = cfg.get("rope_scaling")
    if scaling not in (None, {}) and (scaling.get("rope_type") or scaling.get("type")) != "default":
        refuse("rope_scaling", "plain rotary (rope_scaling=null)")
    block = cfg.get("bd_size", 32)
    if not isinstance(block, int) or block < 1:
        refuse("bd_size", "a positive block length")
    return qwen2_network_config(cfg, attention="block_causal", block_size=block, mask_token_id=int(mask_id), logits_shift=1)


class FastDLLMv2(DecoderFamily):
    """Efficient-Large-Model/Fast_dLLM_v2_1.5B and _7B (model_type "Fast_dLLM_Qwen")."""

    name, label = "fast_dllm_v2", "Fast-dLLM v2"
    supports_device_map = True
    tokenizer_default = "Efficient-Large-Model/Fast_dLLM_v2_7B"
    sampler = {"name": "threshold", "threshold": 0.9, "temperature": 0.0, "sub_block": SUB_BLOCK,
               "first_commit": "block_start", "mask_logit": "keep"}
    generation = {"block_size": 32, "blocks_from": "sequence_start"}
    protocol = ("Fast_dLLM_QwenForCausalLM.generate: block_size 32, small_block_size 8, threshold 0.9, "
                "temperature 0, stop after the block with <|im_end|>")

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "Fast_dLLM_Qwen" or "Fast_dLLM_QwenForCausalLM" in (config.get("architectures") or [])

    @classmethod
    def network(cls, config: dict, tokenizer, source: str):
        from ..modeling_bidirectional import DiffusionQwen2Model

        mask_id = find_mask_token_id(config, tokenizer, (MASK_TOKEN,), cls.tokenizer_default)
        return DiffusionQwen2Model, qwen25_config(config, mask_id)

    @classmethod
    def renames(cls, config: dict, network) -> list:
        """Fast-dLLM v2's names are Qwen2's; a tied checkpoint's stored lm_head (if any) is dropped."""
        return [Drop(r"lm_head\.weight")] * bool(network.tie_word_embeddings) + [Rename(r".*")]

    @classmethod
    def process(cls, config: dict, network) -> dict:
        return {"name": "block", "block_size": int(network.block_size), "schedule": {"name": "loglinear"}}

    @classmethod
    def notes(cls, folder: Path, config: dict, tokenizer, aside: dict) -> dict:
        return {**super().notes(folder, config, tokenizer, aside), "stop_token_ids": stop_token_ids(tokenizer, config, EOT_TOKEN)}
