"""Architecture config of the textdiff denoiser, a ``PretrainedConfig`` so that ``save_pretrained``,
``from_pretrained`` and the Auto classes work on it."""
from __future__ import annotations

from typing import Optional

from transformers import PretrainedConfig

ATTENTION_KINDS = ("bidirectional", "causal", "block_causal")


class TextDiffConfig(PretrainedConfig):
    """A DiT-style transformer: rotary positions, pre-norm blocks, adaLN time conditioning (only when
    ``time_conditioning``), SDPA attention.

    ``attn_backend``: "sdpa" (PyTorch's fused kernels), "eager" (explicit softmax(QKᵀ)V, faster on
    CPUs for short rows, especially in bfloat16) or "auto" (eager on CPU, SDPA elsewhere).

    Options for the published DiT families (MDLM, BD3-LM, SEDD, DUO / UDLM); the defaults keep the
    network textdiff trains itself:

    * ``time_scale``: the sinusoidal time embedding sees ``time_scale · c`` where c is what the process
      feeds (``process.network_time(t)``): 1000 for textdiff's own t in [0, 1], 1 for the publishers,
      who embed σ or t unscaled;
    * ``lm_head_bias``: the output projection has a bias (the publishers' ``DDitFinalLayer``);
    * ``layer_norm_eps``: ε of every LayerNorm.

    ``attention`` picks the structural mask: ``bidirectional`` (masked / uniform / SEDD diffusion),
    ``causal`` (the AR baseline) or ``block_causal`` with ``block_size`` (block diffusion, BD3-LM).
    """

    model_type = "textdiff"

    def __init__(
        self,
        vocab_size: int = 4096,
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        max_position_embeddings: int = 1024,
        time_conditioning: bool = False,
        cond_dim: int = 128,
        rope_theta: float = 10000.0,
        attention: str = "bidirectional",
        block_size: Optional[int] = None,
        initializer_range: float = 0.02,
        mask_token_id: Optional[int] = None,
        tie_word_embeddings: bool = False,
        attn_backend: str = "auto",
        time_scale: float = 1000.0,
        lm_head_bias: bool = False,
        layer_norm_eps: float = 1e-5,
        **kwargs,
    ):
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention={attention!r}; use one of {ATTENTION_KINDS}")
        if attention == "block_causal" and not block_size:
            raise ValueError("attention='block_causal' needs block_size (the block length L')")
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.dropout = dropout
        self.max_position_embeddings = max_position_embeddings
        self.time_conditioning = time_conditioning
        self.cond_dim = cond_dim
        self.rope_theta = rope_theta
        self.attention = attention
        self.block_size = block_size
        self.initializer_range = initializer_range
        self.mask_token_id = mask_token_id
        if attn_backend not in ("auto", "sdpa", "eager"):
            raise ValueError(f"attn_backend={attn_backend!r}; use 'auto', 'sdpa' or 'eager'")
        self.attn_backend = attn_backend
        self.time_scale = float(time_scale)
        self.lm_head_bias = bool(lm_head_bias)
        self.layer_norm_eps = float(layer_norm_eps)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
