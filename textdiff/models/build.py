"""Build the denoiser a recipe asks for (the textdiff transformer, or a saved model to fine-tune)."""
from __future__ import annotations

from typing import Optional

from ..config import ModelConfig
from ..errors import ConfigError
from .configuration_textdiff import TextDiffConfig
from .modeling_textdiff import TextDiffModel


def denoiser_config(cfg: ModelConfig, vocab_size: int, process, seq_len: int, mask_id: Optional[int]) -> TextDiffConfig:
    """A TextDiffConfig from the recipe's model section and what the process requires."""
    attention = process.required_attention or cfg.attention
    block_size = process.block_size or cfg.block_size
    max_len = cfg.max_seq_len or seq_len
    if seq_len > max_len:
        raise ConfigError(f"data.seq_len={seq_len} exceeds model.max_seq_len={max_len}; raise model.max_seq_len or lower data.seq_len")
    return TextDiffConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout, max_position_embeddings=max_len,
        time_conditioning=process.time_conditioning, cond_dim=cfg.cond_dim, rope_theta=cfg.rope_theta,
        attention=attention, block_size=block_size if attention == "block_causal" else None,
        mask_token_id=mask_id, tie_word_embeddings=cfg.tie_word_embeddings,
        time_scale=cfg.time_scale, lm_head_bias=cfg.lm_head_bias, layer_norm_eps=cfg.layer_norm_eps,
    )


def load_denoiser(path: str, vocab_size: Optional[int] = None):
    """A saved textdiff denoiser (a model folder or a checkpoint), read strictly; embeddings grow if the
    tokenizer gained tokens."""
    from pathlib import Path

    from .format import PUBLISHED, folder_kind, read_network

    kind = folder_kind(path)
    if kind == PUBLISHED:
        raise ConfigError(f"{path!r} is not a saved textdiff model folder; point it at a run's final/ folder")
    return read_network(Path(path), kind, vocab_size=vocab_size)


def adapt_attention(model, process) -> None:
    """Fine-tune across attention kinds: a block-diffusion model (BD3-LM) from a full-sequence
    masked checkpoint shares every weight; only the structural mask (config) changes."""
    need = process.required_attention
    if need is None or not hasattr(model.config, "attention"):
        return
    if need == "block_causal":  # also across block sizes (BD3-LM L' = 4 from its L' = 1024 pre-training)
        model.config.block_size = process.block_size
    model.config.attention = need


def check_model_process(model, process, seq_len: int) -> None:
    """Raise a one-line error when the model cannot serve the process at this length."""
    from ..generation import check_compatible

    check_compatible(model, process)
    need = process.required_attention
    have = getattr(model.config, "attention", None)
    if need is not None and have is not None and need != have:
        raise ConfigError(f"process {process.config.name!r} needs {need} attention but the model has {have}; set model.attention={need}")
    process.check_model(model.config)  # e.g. block diffusion: the same block size
    max_len = getattr(model.config, "max_position_embeddings", None)
    if max_len is not None and seq_len > max_len:
        raise ConfigError(f"data.seq_len={seq_len} exceeds the model's maximum {max_len}; lower data.seq_len")
