"""The DiT backbone of the MDLM, BD3-LM, SEDD, DUO and UDLM checkpoints, converted into textdiff's DiT
(shared by those families: :class:`DiTFamily`).

Both exports (``modeling_mdlm.py`` of ``kuleshov-group/mdlm-owt``, ``modeling_bd3lm.py`` of
``kuleshov-group/bd3lm-owt-block_size*``) wrap one network as ``backbone``:

* ``vocab_embed.embedding`` [V, d] looked up by index; rotary positions (base 10000, the two halves
  of each head rotated together, applied to q and k);
* ``sigma_map`` (only with adaLN): sinusoidal features of σ *unscaled* (256 of them, max period
  10000) → Linear → SiLU → Linear, then SiLU: c [B, cond_dim];
* blocks: LayerNorm without bias (ε = 1e-5, float32) → adaLN modulate x·(1 + scale) + shift →
  fused ``attn_qkv`` [3d, d] (rows q | k | v, each head-major) → softmax(QKᵀ/√Dh)V → ``attn_out`` →
  residual with gate; LayerNorm → modulate → Linear(d, 4d) → GELU(tanh) → Linear(4d, d) → gated
  residual. Without adaLN (BD3-LM ``adaln=False``) there is no modulation and every gate is 1;
* ``output_layer``: LayerNorm → modulate (shift, scale) → ``linear`` with a bias.

That is textdiff's DiT with ``time_scale=1`` (σ enters unscaled), ``lm_head_bias=True``,
``layer_norm_eps=1e-5`` and ``time_conditioning`` = "has adaLN". The fused qkv already has
textdiff's layout ([3, H, Dh] rows), so no tensor is reshaped. Rename table (:func:`dit_renames`,
``backbone.`` removed; SEDD's hub mixin saves the network without the prefix)::

    vocab_embed.embedding                   -> embed.weight
    sigma_map.mlp.{0,2}.{weight,bias}       -> time_embed.mlp.{0,2}.{weight,bias}
    blocks.i.norm{1,2}.weight               -> blocks.i.norm{1,2}.weight
    blocks.i.attn_qkv.weight                -> blocks.i.attn.qkv.weight
    blocks.i.attn_out.weight                -> blocks.i.attn.proj.weight
    blocks.i.mlp.0.{weight,bias}            -> blocks.i.mlp.fc.{weight,bias}
    blocks.i.mlp.2.{weight,bias}            -> blocks.i.mlp.out.{weight,bias}
    blocks.i.adaLN_modulation.{weight,bias} -> blocks.i.adaLN.{weight,bias}
    output_layer.norm_final.weight          -> norm_f.weight
    output_layer.adaLN_modulation.*         -> final_adaLN.*
    output_layer.linear.{weight,bias}       -> lm_head.{weight,bias}
    rotary_emb.inv_freq                     -> (checked against the base-10000 table, then dropped)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Iterable, Optional

import torch

from ...errors import ConfigError
from ..weights import Aside, Expect, Rename
from .family import Family, LoadOptions, read_tokenizer

PREFIX = "backbone."
_RENAMES = [
    (r"vocab_embed\.embedding", "embed.weight"),
    (r"sigma_map\.mlp\.([02])\.(weight|bias)", r"time_embed.mlp.\1.\2"),
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


def dit_renames(network, prefix: str = PREFIX, aside: Iterable[str] = ()) -> list:
    """The rename table of a DiT export whose network lives under ``prefix``; ``aside``: top-level
    tensors kept out of the network (BD3-LM's mask-rate band). The rotary table is a buffer textdiff
    recomputes, so it must be the standard one."""
    head_dim = network.hidden_size // network.num_heads
    inv_freq = 10000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    p = re.escape(prefix)
    return ([Aside(re.escape(name)) for name in aside]
            + [Expect(p + r"rotary_emb\.inv_freq", value=inv_freq,
                      hint=f"is not the base-10000 table of head size {head_dim}; config.json does not match the weights")]
            + [Rename(p + pattern, target) for pattern, target in _RENAMES])


class DiTFamily(Family):
    """A DiT export: the network is textdiff's own (no device_map), read as float32 unless the caller
    names a dtype; the tokenizer is the folder's, the caller's or ``tokenizer_default`` (+ [MASK])."""

    prefix: ClassVar[str] = PREFIX
    default_dtype = torch.float32

    @classmethod
    def tokenizer(cls, folder: Path, config: dict, options: LoadOptions):
        """The caller's tokenizer (object, folder or hub id), else the folder's own files, else the family's
        default hub id (e.g. ``gpt2``; needs a network the first time). Leaves with mask / EOS / PAD tokens
        (GPT-2 gains [MASK] as id 50257, as the OWT models use)."""
        from ...tokenization import ensure_special_tokens

        tokenizer = read_tokenizer(folder, options, cls.tokenizer_default)
        ensure_special_tokens(tokenizer, source=None if options.tokenizer is None else f"tokenizer={options.tokenizer!r:.60}")
        return tokenizer

    @classmethod
    def renames(cls, config: dict, network) -> list:
        return dit_renames(network, cls.prefix)

    @classmethod
    def network(cls, config: dict, tokenizer, source: str):
        from ..modeling_textdiff import TextDiffModel

        return TextDiffModel, cls.dit(config, tokenizer, source)

    @classmethod
    def dit(cls, config: dict, tokenizer, source: str):
        """The :func:`dit_config` of config.json."""
        raise NotImplementedError

    @classmethod
    def notes(cls, folder: Path, config: dict, tokenizer, aside: dict) -> dict:
        return {}


def fields(config: dict, required: Iterable[str], source: str) -> dict:
    """The ``required`` fields of a publisher config.json (a one-line error naming a missing one)."""
    missing = [k for k in required if k not in config]
    if missing:
        raise ConfigError(f"{source}: config.json lacks {missing[0]!r}; the file is incomplete or of another model")
    return {k: config[k] for k in required}


def dit_config(*, vocab_size: int, hidden_dim: int, n_blocks: int, n_heads: int, cond_dim: int, model_length: int,
               dropout: float, adaln: bool, mask_token_id: Optional[int], attention: str = "bidirectional",
               block_size: Optional[int] = None, source: str = "the checkpoint"):
    """The TextDiffConfig that computes the exports' backbone exactly (module docstring)."""
    from ..configuration_textdiff import TextDiffConfig

    ints = {"vocab_size": vocab_size, "hidden_dim": hidden_dim, "n_blocks": n_blocks, "n_heads": n_heads,
            "cond_dim": cond_dim, "model_length": model_length}
    bad = [k for k, v in ints.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if bad:
        raise ConfigError(f"{source}: config.json has {bad[0]}={ints[bad[0]]!r}, not a positive integer; the file is damaged")
    if hidden_dim % n_heads or (hidden_dim // n_heads) % 2:
        raise ConfigError(f"{source}: hidden_dim={hidden_dim} with n_heads={n_heads} gives no even head size; config.json is damaged")
    return TextDiffConfig(
        vocab_size=vocab_size, hidden_size=hidden_dim, num_layers=n_blocks, num_heads=n_heads, mlp_ratio=4.0,
        dropout=float(dropout), max_position_embeddings=model_length, time_conditioning=bool(adaln), cond_dim=cond_dim,
        rope_theta=10000.0, attention=attention, block_size=block_size, mask_token_id=mask_token_id,
        tie_word_embeddings=False, time_scale=1.0, lm_head_bias=True, layer_norm_eps=1e-5,
    )


def check_vocab(tokenizer, vocab_size: int, source: str) -> int:
    """The mask id, after checking that every id the tokenizer makes indexes the model's rows and that
    its [MASK] is the last row, V − 1 (the exports append [MASK] to the vocabulary: GPT-2's 50257)."""
    if len(tokenizer) > vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but {source} has {vocab_size} embedding rows; "
                          "pass the tokenizer the model was trained with (GPT-2 + [MASK] for the OWT models)")
    if tokenizer.mask_token_id != vocab_size - 1:
        raise ConfigError(f"the tokenizer's mask id is {tokenizer.mask_token_id} but {source} was trained with [MASK] = "
                          f"{vocab_size - 1} (the last row); pass a tokenizer whose last token is [MASK]")
    return int(tokenizer.mask_token_id)


def check_rows(tokenizer, vocab_size: int, source: str) -> None:
    """One-line error unless every id the tokenizer makes indexes the model's ``vocab_size`` rows; a
    [MASK] that textdiff appended just past the end is allowed (uniform-state models never see it)."""
    n = len(tokenizer)
    if tokenizer.mask_token_id is not None and tokenizer.mask_token_id == n - 1 == vocab_size:
        n -= 1
    if n > vocab_size:
        raise ConfigError(f"the tokenizer has {n} tokens but {source} has {vocab_size} embedding rows; "
                          "pass the tokenizer the model was trained with")
