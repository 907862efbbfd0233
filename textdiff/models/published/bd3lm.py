"""BD3-LM (Arriola et al. 2025): ``kuleshov-group/bd3lm-owt-block_size{4,8,16}``.

Layout: ``config.json`` of the export's ``BD3LMConfig`` (``model_type: "bd3lm"``, ``architectures:
["BD3LM"]``; fields ``block_size`` (L'), ``vocab_size`` (50258), ``model_length`` (1024),
``hidden_dim``, ``cond_dim``, ``n_blocks``, ``n_heads``, ``adaln``, ``cross_attn``, ``causal``,
``time_conditioning``, ``var_min``, ``sampling_eps_min`` / ``sampling_eps_max``, ``attn_backend``)
and ``model.safetensors``: the DiT under ``backbone.`` (converted by :mod:`._dit`) plus two scalars
``sampling_eps_min`` / ``sampling_eps_max``, the clipped mask-rate band [β, ω] the training run's
variance search settled on (kept in ``Published.notes``; a fine-tuning recipe's ``clipped`` schedule).

The export's three forward paths are textdiff's block-causal DiT (``attention="block_causal"``):

* training (``cross_attn``): one pass over ``[x_t ; x0]`` (2n tokens, both halves at positions
  0..n−1) under the block-diffusion mask; this is ``BlockProcess.model_inputs`` and its mask;
* sampling without a cache: a prefix under the block-causal mask (block ⌊i/L'⌋ sees blocks ≤ its own);
* sampling with its KV cache: the noisy block against the cached keys / values of the clean blocks
  before it, a block's entries stored once it is decoded; textdiff's exact ``BlockCache``.

Time: with adaLN and ``time_conditioning: false`` (the released models) σ is fed as zeros
(``time_input = "zero"``); ``adaln: false`` has no time path at all. Process: block diffusion with L'
and the log-linear schedule, SUBS inside each block; ``lm.score`` is the block NELBO (the sum over
blocks of the masked NELBO of each block given the clean blocks before it). Default sampler:
first-hitting inside each block (BD3-LM's ``sampling.first_hitting: True``), decoded block by block
with the exact KV cache (``lm.generate`` uses L' as its block size). Not loaded: ``causal: true`` (the
AR baseline) and time-conditioned BD3-LMs (the export feeds one σ per row, textdiff one per block).
"""
from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError
from .dit import DiTFamily, check_vocab, dit_config, dit_renames, fields

FIELDS = ("block_size", "vocab_size", "model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads")
EPS_KEYS = ("sampling_eps_min", "sampling_eps_max")


class BD3LM(DiTFamily):
    """BD3-LM's Hugging Face export (``BD3LMConfig`` / ``BD3LM``)."""

    name, label = "bd3lm", "BD3-LM"
    tokenizer_default = "gpt2"
    sampler = {"name": "first_hitting"}

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "bd3lm" or "BD3LM" in (config.get("architectures") or [])

    @classmethod
    def dit(cls, config: dict, tokenizer, source: str):
        f = fields(config, FIELDS, source)
        block, n = f.pop("block_size"), f["model_length"]
        adaln = bool(config.get("adaln", True))
        if config.get("causal", False):
            raise ConfigError(f"{source} is BD3-LM's autoregressive baseline (causal: true), not a block-diffusion model; "
                              "textdiff loads the block-diffusion checkpoints")
        if not config.get("cross_attn", True):
            raise ConfigError(f"{source} has cross_attn: false, a layout no BD3-LM release uses; expected the "
                              "[x_t ; x0] block-diffusion model")
        if adaln and config.get("time_conditioning", False):
            raise ConfigError(f"{source} is time-conditioned (one σ per row), which textdiff's block process "
                              "(one t per block) cannot feed exactly; only the released time-free models load")
        if not isinstance(block, int) or block < 1 or n % block:
            raise ConfigError(f"{source}: block_size={block!r} does not divide model_length={n}; config.json is damaged")
        mask_id = check_vocab(tokenizer, f["vocab_size"], source)
        return dit_config(**f, dropout=config.get("dropout", 0.1), adaln=adaln, mask_token_id=mask_id,
                          attention="block_causal", block_size=block, source=source)

    @classmethod
    def renames(cls, config: dict, network) -> list:
        return dit_renames(network, cls.prefix, aside=EPS_KEYS if config.get("var_min", True) else ())

    @classmethod
    def process(cls, config: dict, network) -> dict:
        return {"name": "block", "block_size": network.block_size, "schedule": {"name": "loglinear", "eps": 1e-3},
                "time_conditioning": bool(network.time_conditioning), "time_input": "zero"}

    @classmethod
    def notes(cls, folder: Path, config: dict, tokenizer, aside: dict) -> dict:
        notes = {"layout": "BD3-LM Hugging Face export (backbone.*)", "block_size": config["block_size"]}
        if aside:
            notes["clipped_mask_rates"] = [float(aside[k]) for k in EPS_KEYS if k in aside]
        return notes
