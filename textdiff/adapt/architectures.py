"""Which transformers causal LMs can be adapted, checked on the model itself (phase 2 refuses the rest).

Adaptation runs the AR model's own transformers class with a custom 4-D attention mask
(:mod:`textdiff.adapt.attention`) and, for block targets, position ids ``[0..L-1, 0..L-1]``. Found on
transformers 5.25 with tiny random models (``tests/test_adapt_architectures.py``):

* Llama, Qwen2, Qwen3, Gemma, Gemma 2 (eager only: it refuses SDPA), Gemma 3, Mistral, Phi-3,
  OLMo 2, GPT-NeoX and GPT-2 take an additive 4-D mask as it is (``masking_utils`` returns a 4-D mask
  untouched): a causal one reproduces their own causal logits exactly, a full one makes position 0
  see the last token; all take ``position_ids``.
* A BOOL 4-D mask is right under SDPA but silently wrong under eager attention, which adds the mask
  to the scores (True adds 1.0, masking nothing): always hand over the additive form.
* Sliding-window layers (Mistral, Gemma 2 / 3, Qwen2 with ``use_sliding_window``) lose their window
  under a custom mask: equal to the AR model only while the row is no longer than the window.
* flash-attention kernels take no 4-D mask, and FlexAttention wants a ``BlockMask`` (not built here;
  on CPU it crashed the process): adapt under ``sdpa`` or ``eager``.

:func:`config_problems` reads these from the config; :func:`mask_problem` runs the model once on a
few tokens to confirm it honours a custom mask (the catch-all for families not listed);
:func:`check_adaptable` raises the first problem as a one-line error.
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch

from ..errors import IncompatibleError
from .attention import additive_mask

_NO_4D_MASK = ("flash_attention_2", "flash_attention_3", "flex_attention")


def sliding_window(config) -> Optional[int]:
    """The attention window of the model's sliding-window layers, or None when it has none."""
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types and "sliding_attention" not in layer_types:
        return None
    return int(window)


def config_problems(config, seq_len: int) -> list[str]:
    """What in a transformers config stops adaptation at row length ``seq_len`` (one clause each)."""
    problems = []
    if getattr(config, "is_encoder_decoder", False):
        problems.append("it is an encoder-decoder model, not a causal LM")
    impl = getattr(config, "_attn_implementation", None)
    if impl in _NO_4D_MASK:
        problems.append(f"attn_implementation={impl!r} takes no 4-D attention mask; load it with "
                        "attn_implementation='sdpa' (or 'eager')")
    window = sliding_window(config)
    if window is not None and window < seq_len:
        problems.append(f"its sliding-window layers (sliding_window={window}) would lose the window under a custom "
                        f"mask at data.seq_len={seq_len}; use data.seq_len <= {window}")
    return problems


@torch.no_grad()
def mask_problem(model, length: int = 8, block_layout: bool = False) -> Optional[str]:
    """Run ``model`` (a transformers causal LM) on ``length`` tokens: None when it honours a custom
    additive 4-D mask (a causal one gives its own causal logits, a full one lets position 0 see the
    last token) and, with ``block_layout``, takes ``position_ids``; else what is missing."""
    if block_layout and "position_ids" not in inspect.signature(model.forward).parameters:
        return "its forward takes no position_ids (block targets feed [x_t ; x0] at positions 0..L-1 twice)"
    param = next(model.parameters())
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = (torch.arange(length, device=param.device) * 7 + 3) % vocab  # [L] a fixed, non-constant row
    ids = ids[None]
    other = ids.clone()
    other[0, -1] = (other[0, -1] + 1) % vocab
    causal = additive_mask(torch.ones(length, length, dtype=torch.bool, device=param.device).tril(), param.dtype)
    full = additive_mask(torch.ones(length, length, dtype=torch.bool, device=param.device), param.dtype)
    was_training = model.training
    model.eval()  # dropout off
    try:
        native = model(ids).logits.float()
        masked = model(ids, attention_mask=causal).logits.float()
        first = model(ids, attention_mask=full).logits[0, 0].float()
        first_other = model(other, attention_mask=full).logits[0, 0].float()
    except (TypeError, ValueError, RuntimeError) as e:
        return f"its forward rejects a 4-D attention mask ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    finally:
        model.train(was_training)
    scale = native.abs().max().clamp_min(1.0)
    tol = 1e-4 if param.dtype == torch.float32 else 3e-2
    if not torch.allclose(masked, native, atol=float(tol * scale), rtol=0.0):
        return "a causal 4-D mask does not reproduce its own causal logits (the mask is not used as given)"
    if torch.allclose(first, first_other, atol=1e-6 * float(scale), rtol=0.0):
        return "a full 4-D mask does not let position 0 see later tokens (it stays causal)"
    return None


def check_adaptable(model, seq_len: int, target: str = "masked") -> None:
    """Raise a one-line :class:`IncompatibleError` naming what stops adapting ``model``."""
    kind = getattr(model.config, "model_type", type(model).__name__)
    problems = config_problems(model.config, seq_len)
    if not problems:
        found = mask_problem(model, block_layout=target == "block")
        problems = [found] if found else []
    if problems:
        raise IncompatibleError(f"cannot adapt the {kind!r} model to diffusion: {problems[0]}")
