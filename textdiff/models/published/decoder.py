"""Shared by the large published LMs (LLaDA, Dream, LLaDA-MoE, LLaDA 2.0): transformers' decoders
run bidirectionally (:mod:`textdiff.models.modeling_bidirectional`, :mod:`textdiff.models.modeling_moe`),
their tokenizer read from data files only and given the model's mask / EOS / PAD tokens.

Weights go through :func:`textdiff.models.weights.load_weights` like every family's (meta device,
each tensor straight to its device or ``device_map`` part, one-line errors).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ...errors import ConfigError
from .family import Family, LoadOptions, read_tokenizer


def _load(where: Path, tokenizer_class):
    """``tokenizer_class.from_pretrained`` (data files only; AutoTokenizer would read config.json's
    auto_map and ask to run the folder's code)."""
    try:
        return tokenizer_class.from_pretrained(str(where))
    except Exception as e:  # noqa: BLE001 - missing / damaged tokenizer files
        raise ConfigError(f"cannot load the tokenizer in {str(where)!r} ({type(e).__name__}: {str(e).splitlines()[0][:100]}); "
                          "pass tokenizer=<folder with the released tokenizer files>") from None


def read_decoder_tokenizer(folder: Path, options: LoadOptions, default: str, tokenizer_class):
    """:func:`~.family.read_tokenizer` for the large families: the folder counts as a tokenizer folder
    with tokenizer.json / tokenizer_config.json, read with ``tokenizer_class``."""
    return read_tokenizer(folder, options, default, lambda where: _load(where, tokenizer_class),
                          files=("tokenizer.json", "tokenizer_config.json"))


def set_special_tokens(tokenizer, mask_token_id: int, default: str, eos_token=None):
    """The tokenizer with its mask token set to the model's ``mask_token_id`` (e.g. LLaDA's
    ``<|mdm_mask|>``), an EOS token (config.json's ``eos_token`` id when it has none) and a PAD token."""
    in_range = 0 <= int(mask_token_id) < len(tokenizer)
    mask = tokenizer.convert_ids_to_tokens(int(mask_token_id)) if in_range else None
    if mask is None or not in_range:
        raise ConfigError(f"the tokenizer has no token with the model's mask id {mask_token_id}; "
                          f"pass the tokenizer this model was released with ({default})")
    if tokenizer.mask_token_id != mask_token_id:
        tokenizer.mask_token = mask
    if tokenizer.eos_token is None and isinstance(eos_token, int) and eos_token < len(tokenizer):
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_token)
    if tokenizer.eos_token is None:
        raise ConfigError("the tokenizer has no EOS token; pass the tokenizer this model was released with")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class DecoderFamily(Family):
    """A transformers decoder run bidirectionally; the tokenizer is read with ``tokenizer_class``
    (default: the generic fast tokenizer) and given the network's mask token."""

    tokenizer_class: ClassVar[Any] = None

    @classmethod
    def tokenizer_class_for(cls, folder: Path, options: LoadOptions):
        from transformers import PreTrainedTokenizerFast

        return cls.tokenizer_class or PreTrainedTokenizerFast

    @classmethod
    def tokenizer(cls, folder: Path, config: dict, options: LoadOptions):
        return read_decoder_tokenizer(folder, options, cls.tokenizer_default, cls.tokenizer_class_for(folder, options))

    @classmethod
    def finish_tokenizer(cls, tokenizer, config: dict, network):
        return set_special_tokens(tokenizer, network.mask_token_id, cls.tokenizer_default, eos_token=config.get("eos_token_id"))


def qwen2_network_config(cfg: dict, **extra):
    """The DiffusionQwen2Config of a Qwen2-shaped ``config.json`` (Dream, Fast-dLLM v2): its sizes,
    plain rotary and no sliding window, the token ids it names, then the family's ``extra`` fields."""
    from ..modeling_bidirectional import DiffusionQwen2Config

    heads = int(cfg["num_attention_heads"])
    return DiffusionQwen2Config(
        vocab_size=int(cfg["vocab_size"]), hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]), num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=heads, num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        hidden_act=cfg.get("hidden_act", "silu"), max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000.0))},
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), use_sliding_window=False,
        pad_token_id=cfg.get("pad_token_id"), bos_token_id=cfg.get("bos_token_id"), eos_token_id=cfg.get("eos_token_id"),
        **extra,
    )
