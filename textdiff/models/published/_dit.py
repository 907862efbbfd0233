"""The DiT backbone of the MDLM and BD3-LM Hugging Face exports, converted into textdiff's DiT.

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
textdiff's layout ([3, H, Dh] rows), so no tensor is reshaped. Key map (``backbone.`` removed)::

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
from typing import Iterable, Optional

import torch

from ...errors import ConfigError
from ..loading import check_state_dict, iter_tensors

PREFIX = "backbone."
_KEY_MAP = [(re.compile(f"^{a}$"), b) for a, b in [
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
]]


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


def load_backbone(folder: Path, config, *, allow_pickle: bool, source: str, extra: Iterable[str] = (),
                  prefix: str = PREFIX):
    """(TextDiffModel with the export's weights, {name: tensor} of the ``extra`` top-level tensors).

    prefix: where the network's keys live (``backbone.`` in the Hugging Face exports; SEDD's hub
    mixin saves the network itself, prefix "")."""
    from ..modeling_textdiff import TextDiffModel

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in TextDiffModel(config).state_dict().items()}
    extra = set(extra)
    state, others, unknown = {}, {}, []
    head_dim = config.hidden_size // config.num_heads
    for key, tensor in iter_tensors(folder, allow_pickle):
        if key in extra:
            others[key] = tensor
            continue
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name == "rotary_emb.inv_freq":  # a buffer: textdiff recomputes it, so it must be the standard one
            want = 10000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
            if tuple(tensor.shape) != tuple(want.shape) or not torch.allclose(tensor.float(), want, rtol=1e-5):
                raise ConfigError(f"{source}: {prefix}rotary_emb.inv_freq is not the base-10000 table of head size "
                                  f"{head_dim}; config.json does not match the weights")
            continue
        mapped = None
        if name is not None:
            for pattern, repl in _KEY_MAP:
                if pattern.match(name):
                    mapped = pattern.sub(repl, name)
                    break
        if mapped is None:
            unknown.append(key)
        else:
            state[mapped] = tensor
    if unknown:
        raise ConfigError(f"{source} has {len(unknown)} tensor(s) this layout does not have ({', '.join(unknown[:3])}); "
                          "the folder holds another architecture")
    check_state_dict(expected, state, source)
    model = TextDiffModel(config)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return model, others


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
