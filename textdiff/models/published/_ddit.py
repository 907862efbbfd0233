"""The DDiT network of SEDD, DUO and UDLM (and MDLM), converted into textdiff's DiT.

The publishers share one network (SEDD's ``model/transformer.py``, copied into MDLM / DUO / UDLM):

* ``vocab_embed.embedding`` [V, d] (a bare parameter), rotary positions (base 10000, GPT-NeoX
  halves), ``sigma_map``: sinusoidal features (256) of the *unscaled* noise level → Linear → SiLU →
  Linear, then SiLU: the conditioning vector c [B, cond_dim];
* blocks: LayerNorm without bias (ε = 1e-5, computed in float32) → adaLN modulate (shift, scale,
  gate for attention and MLP, in that order, from ``adaLN_modulation(c)``) → fused qkv without bias
  → softmax(QKᵀ/√Dh)V → ``attn_out`` (no bias) → gated residual; GELU(tanh) MLP with biases;
* ``output_layer``: LayerNorm → adaLN (shift, scale) → Linear *with* bias.

That is textdiff's DiT with ``time_scale=1`` (the embedding sees σ, not 1000·t), ``lm_head_bias``
and ``layer_norm_eps=1e-5``. Key map (publisher → textdiff), ``i`` the block index::

    vocab_embed.embedding                   -> embed.weight
    sigma_map.mlp.{0,2}.{weight,bias}       -> time_embed.mlp.{0,2}.{weight,bias}
    blocks.i.norm{1,2}.weight               -> blocks.i.norm{1,2}.weight
    blocks.i.attn_qkv.weight                -> blocks.i.attn.qkv.weight        [3d, d], rows (q|k|v, head, Dh)
    blocks.i.attn_out.weight                -> blocks.i.attn.proj.weight
    blocks.i.mlp.0.{weight,bias}            -> blocks.i.mlp.fc.{weight,bias}
    blocks.i.mlp.2.{weight,bias}            -> blocks.i.mlp.out.{weight,bias}
    blocks.i.adaLN_modulation.{weight,bias} -> blocks.i.adaLN.{weight,bias}
    output_layer.norm_final.weight          -> norm_f.weight
    output_layer.adaLN_modulation.*         -> final_adaLN.*
    output_layer.linear.{weight,bias}       -> lm_head.{weight,bias}
    rotary_emb.inv_freq                     -> (dropped: recomputed from rope_theta; checked)
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ...errors import ConfigError
from ..loading import check_state_dict, iter_tensors

_RENAMES = [
    (r"vocab_embed\.embedding", "embed.weight"),
    (r"sigma_map\.mlp\.(\d)\.(weight|bias)", r"time_embed.mlp.\1.\2"),
    (r"blocks\.(\d+)\.norm([12])\.weight", r"blocks.\1.norm\2.weight"),
    (r"blocks\.(\d+)\.attn_qkv\.weight", r"blocks.\1.attn.qkv.weight"),
    (r"blocks\.(\d+)\.attn_out\.weight", r"blocks.\1.attn.proj.weight"),
    (r"blocks\.(\d+)\.mlp\.0\.(weight|bias)", r"blocks.\1.mlp.fc.\2"),
    (r"blocks\.(\d+)\.mlp\.2\.(weight|bias)", r"blocks.\1.mlp.out.\2"),
    (r"blocks\.(\d+)\.adaLN_modulation\.(weight|bias)", r"blocks.\1.adaLN.\2"),
    (r"output_layer\.norm_final\.weight", "norm_f.weight"),
    (r"output_layer\.adaLN_modulation\.(weight|bias)", r"final_adaLN.\1"),
    (r"output_layer\.linear\.(weight|bias)", r"lm_head.\1"),
]
_RENAMES = [(re.compile(f"^{a}$"), b) for a, b in _RENAMES]


def textdiff_name(key: str) -> str | None:
    """textdiff's name for a publisher DDiT key (``prefix`` already removed); None if unknown."""
    for pattern, repl in _RENAMES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def ddit_config(*, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, cond_dim: int,
                max_len: int, mask_token_id=None):
    """The TextDiffConfig that computes the publishers' DDiT exactly (module docstring)."""
    from ..configuration_textdiff import TextDiffConfig

    if hidden_size % num_heads or (hidden_size // num_heads) % 2:
        raise ConfigError(f"hidden size {hidden_size} with {num_heads} heads gives no even head size; config.json is damaged")
    return TextDiffConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, mlp_ratio=4.0,
        dropout=0.0, max_position_embeddings=max_len, time_conditioning=True, cond_dim=cond_dim, rope_theta=10000.0,
        attention="bidirectional", mask_token_id=mask_token_id, tie_word_embeddings=False,
        time_scale=1.0, lm_head_bias=True, layer_norm_eps=1e-5,
    )


def load_ddit(folder: Path, config, *, prefix: str, allow_pickle: bool, source: str):
    """A TextDiffModel holding the publisher weights of ``folder`` (keys under ``prefix``)."""
    from ..modeling_textdiff import TextDiffModel

    with torch.device("meta"):
        model = TextDiffModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state, unknown = {}, []
    head_dim = config.hidden_size // config.num_heads
    for key, tensor in iter_tensors(folder, allow_pickle):
        if not key.startswith(prefix):
            unknown.append(key)
            continue
        key = key[len(prefix):]
        if key == "rotary_emb.inv_freq":  # a buffer: textdiff recomputes it; it must be the base-10000 one
            want = 10000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
            if tensor.shape != want.shape or not torch.allclose(tensor.float(), want, rtol=1e-5):
                raise ConfigError(f"{source}: rotary_emb.inv_freq is not the base-10000 table of head size {head_dim}; "
                                  "config.json does not match the weights")
            continue
        name = textdiff_name(key)
        if name is None:
            unknown.append(prefix + key)
        else:
            state[name] = tensor
    if unknown:
        raise ConfigError(f"{source} has {len(unknown)} tensor(s) this layout does not have ({', '.join(unknown[:3])}); "
                          "the folder holds another architecture")
    check_state_dict(expected, state, source)
    model = TextDiffModel(config)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return model


def need(section: dict, keys, where: str) -> dict:
    """The ``keys`` of a config section, a one-line error naming the first missing one."""
    missing = [k for k in keys if k not in section]
    if missing:
        raise ConfigError(f"{where} lacks {missing[0]!r}; the folder's config.json is incomplete")
    return {k: section[k] for k in keys}


def check_tokenizer(tokenizer, vocab_size: int, what: str) -> None:
    """One-line error unless every id the tokenizer can produce indexes the model's ``vocab_size``
    rows (a [MASK] that textdiff appended past the end is allowed: uniform-state models never see it)."""
    n = len(tokenizer)
    if tokenizer.mask_token_id is not None and tokenizer.mask_token_id == n - 1 and n - 1 == vocab_size:
        n -= 1
    if n > vocab_size:
        raise ConfigError(f"the tokenizer has {n} tokens but this {what} model {vocab_size}; pass the tokenizer it was trained with")
